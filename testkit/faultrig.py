"""A private cluster to break: its own redis-server, PostgreSQL cluster (initdb/pg_ctl as the
postgres user) and, optionally, RabbitMQ node, each on a free port, plus real
``celery -A workers worker`` processes. Used by tests/integration/test_fault_recovery.py and
scripts/bench_faults.py."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# Deferred imports: the database and Mongo clients load only for the servers that need them.

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout}s")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Redis:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile",
             str(self.dir / "redis.log")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port), 20, "redis-server listening")

    def kill(self) -> None:
        """SIGKILL: everything in it (queues, unacked messages, chord counters) is gone."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    stop = kill


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def _as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)


class Postgres:
    """A throw-away PostgreSQL cluster owned by the postgres user, on a free port."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="skygate-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/skygate"

    def init(self) -> None:
        done = _as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust",
                             "-U", "postgres", "-E", "UTF8", "--no-sync"], timeout=120)
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        self.start()
        done = _as_postgres(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                             "-c", "CREATE DATABASE skygate"], timeout=60)
        if done.returncode:
            raise RuntimeError(f"createdb failed: {done.stderr}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off -c max_connections=100")
        done = _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-l",
                             str(self.dir / "pg.log"), "-o", opts, "-w", "-t", "60", "start"],
                            timeout=90)
        if done.returncode:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}{done.stdout}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                      "stop"], timeout=90)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Rabbit:
    """A private RabbitMQ node (own node name, ports, data and log folders)."""

    def __init__(self, workdir: Path | None = None):
        # The node runs as the rabbitmq user (the wrapper su's to it): its folder is its own.
        self.dir = Path(tempfile.mkdtemp(prefix="skygate-rmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"skyfault{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen | None = None
        (self.dir / "enabled_plugins").write_text("[].\n")
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.dir / "log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
                    "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
                    "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
                    "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
                    "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid")}
        (self.dir / "rabbitmq.conf").write_text(
            f"loopback_users = none\nlisteners.tcp.default = 127.0.0.1:{self.port}\n")
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=False)

    def start(self) -> None:
        exe = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
        with open(self.dir / "out.log", "a") as out:
            self.proc = subprocess.Popen([exe], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 90,
                       "rabbitmq listening", interval=0.5)
        except TimeoutError:
            raise RuntimeError("rabbitmq did not listen: "
                               + (self.dir / "out.log").read_text()[-1500:]) from None
        if self.proc.poll() is not None:
            raise RuntimeError("rabbitmq exited: " + (self.dir / "out.log").read_text()[-1500:])

    def _node_pids(self) -> list[int]:
        """This node's processes (su starts it in a session of its own): by its node name."""
        pids = []
        for environ in glob.glob("/proc/[0-9]*/environ"):
            try:
                if f"RABBITMQ_NODENAME={self.node}".encode() in Path(environ).read_bytes():
                    pids.append(int(environ.split("/")[2]))
            except OSError:
                continue
        return [p for p in pids if p != os.getpid()]

    def kill(self) -> None:
        """SIGKILL the node (beam and its children): what a crash or an OOM kill does."""
        for pid in self._node_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        wait_until(lambda: not port_open(self.port), 20, "rabbitmq port closed")

    def stop(self) -> None:
        self.kill()

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(env: dict) -> None:
    up = subprocess.run([sys.executable, "-m", "skygate.cli", "db", "upgrade"], env=env,
                        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    if up.returncode:
        raise RuntimeError(f"db upgrade failed: {up.stderr[-2000:]}")


class Worker:
    def __init__(self, env: dict, log_path: Path, concurrency: int = 2,
                 extra_args: tuple[str, ...] = ()):
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self, *, wait_ready: bool = True) -> None:
        self._log = open(self.log_path, "a")  # noqa: SIM115
        self._mark = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info",
             "-c", str(self.concurrency), "-Q", "ingest,detect,model,aggregate,webhooks",
             "-n", f"fault-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle",
             *self.extra_args],
            env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        if wait_ready:
            wait_until(lambda: "ready." in self.log_path.read_text()[self._mark:] or
                       self.proc.poll() is not None, 120, "worker ready")
            if self.proc.poll() is not None:
                raise RuntimeError("worker exited:\n" + self.log_path.read_text()[-3000:])

    def children(self) -> list[int]:
        out = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.split("/")[2]))
        return out

    def kill9(self) -> None:
        """SIGKILL the main process, then its pool processes (as a container's death does)."""
        kids = self.children()
        self.proc.kill()
        self.proc.wait(10)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


def make_images(folder: Path, count: int, seed: int) -> list[Path]:
    from testkit.images import encode, noisy_photo, smooth_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        make = noisy_photo if i % 2 else smooth_scene
        array = make(rows=192, cols=256, seed=seed * 10_000 + i)
        path = folder / f"img_{seed}_{i:04d}.{'jpg' if i % 3 else 'png'}"
        path.write_bytes(encode(array, fmt="JPEG" if i % 3 else "PNG"))
        paths.append(path)
    return paths


def start_submit(env: dict, folder: Path, out: Path, timeout: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "skygate.cli", "submit", str(folder), "--wait", "--out",
         str(out), "--timeout", str(timeout)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def sql(db_url: str, query: str, *, connect_timeout: float = 5, **params):
    """Run one SQL statement on a PostgreSQL database (a ``postgresql://`` URL); its rows when
    it returns any. A short connect timeout by default: the rig's databases go down on purpose."""
    import sqlalchemy as sa

    from storage.db import create_engine

    async def go():
        engine = create_engine(db_url.replace("postgresql://", "postgresql+asyncpg://"),
                               connect_args={"timeout": connect_timeout})
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(query), params)
                return result.all() if result.returns_rows else None
        finally:
            await engine.dispose()

    return asyncio.run(go())


def done_count(db_url: str) -> int:
    try:
        return sql(db_url, "SELECT count(*) FROM uploads WHERE status='done'")[0][0]
    except Exception:  # noqa: BLE001 - the database is down
        return -1


def audit(db_url: str, mongo_url: str) -> dict:
    """Counts that prove nothing is stuck, lost or duplicated."""
    from pymongo import MongoClient

    status = dict(sql(db_url, "SELECT status, count(*) FROM uploads GROUP BY status"))
    dup_results = sql(db_url, "SELECT count(*) FROM (SELECT upload_id FROM detection_results "
                              "GROUP BY upload_id HAVING count(*) > 1) d")[0][0]
    dup_methods = sql(db_url, "SELECT count(*) FROM (SELECT result_id, method_id FROM "
                              "method_results GROUP BY result_id, method_id "
                              "HAVING count(*) > 1) d")[0][0]
    incomplete = sql(db_url, "SELECT count(*) FROM (SELECT r.result_id FROM detection_results r "
                             "LEFT JOIN method_results m USING (result_id) GROUP BY r.result_id "
                             "HAVING count(m.method_result_id) <> 5) d")[0][0]
    results = sql(db_url, "SELECT count(*) FROM detection_results")[0][0]
    recoveries = sql(db_url, "SELECT coalesce(sum(recoveries), 0), "
                             "coalesce(max(delivery_count), 0) FROM uploads")[0]
    client = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        db = client.get_default_database()
        groups = list(db["detection_metadata"].aggregate(
            [{"$group": {"_id": "$upload_id", "n": {"$sum": 1}}}]))
    finally:
        client.close()
    return {"status": status, "results": results, "dup_results": dup_results,
            "dup_method_rows": dup_methods, "results_without_5_methods": incomplete,
            "documents": sum(g["n"] for g in groups),
            "dup_documents": sum(1 for g in groups if g["n"] > 1),
            "recoveries": int(recoveries[0]), "max_delivery_count": int(recoveries[1])}


def read_records(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
