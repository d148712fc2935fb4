"""Backup and restore: a populated store backed up, wiped, restored and compared (PostgreSQL +
MongoDB + a blob folder, and the embedded SQLite default); damaged backups and occupied
targets refused before anything is touched."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from schemas.settings import Settings
from storage.backup import (
    BackupError,
    ChecksumMismatch,
    TargetNotEmpty,
    create_backup,
    restore_backup,
)
from storage.blobs import blob_store_for
from storage.migrate import head_revision
from testkit.images import SD_PARAMETERS, encode, noisy_photo, smooth_scene
from tests.conftest import _pg_admin, run
from tests.integration.test_blob_store import aws_env, s3_endpoint, s3_settings  # noqa: F401 - fixtures

TABLES = ("uploads", "detection_results", "method_results", "blob_refs", "detection_methods",
          "embedded_documents", "alembic_version")


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "photo.jpg").write_bytes(encode(noisy_photo(seed=11), fmt="JPEG"))
    (folder / "render.png").write_bytes(encode(smooth_scene(seed=12),
                                               text={"parameters": SD_PARAMETERS}))
    (folder / "other.png").write_bytes(encode(noisy_photo(seed=13)))
    return folder


def _read_all(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


async def _populate(settings: Settings, folder: Path) -> None:
    """The embedded pipeline, in this process, on the storage ``settings`` name."""
    from service import detection, ingest
    from storage import migrate
    from storage.context import open_storage
    from storage.seed import ensure_default_configuration

    async with open_storage(settings) as storage:
        await migrate.upgrade(storage.engine)
        await storage.documents.ensure_indexes()
        await ensure_default_configuration(storage.documents)
        for name, data in _read_all(folder):
            outcome = await ingest.ingest_bytes(storage, settings, data=data,
                                                original_file_name=name, user_id=None)
            assert outcome.needs_processing, outcome
            await detection.run_all_or_fail(storage, settings, outcome.upload_id)


def _settings(env_settings: dict) -> Settings:
    return Settings(**{k.removeprefix("SKYGATE_").lower(): v for k, v in env_settings.items()})


async def _state(settings: Settings) -> dict:
    """Everything a restore must bring back: rows, sequences, documents, indexes, blobs."""
    from pymongo import AsyncMongoClient

    from storage.db import create_engine

    state: dict = {"rows": {}}
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            for table in TABLES:
                rows = (await conn.execute(sa.select(sa.text("*")).select_from(
                    sa.table(table)))).all()
                state["rows"][table] = sorted((tuple(r) for r in rows), key=repr)
            state["statuses"] = sorted(
                (await conn.execute(sa.text("SELECT status FROM uploads"))).scalars())
            if conn.dialect.name == "postgresql":
                state["sequences"] = (await conn.execute(sa.text(
                    "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"))).all()
    finally:
        await engine.dispose()
    if settings.mongo_url:
        client = AsyncMongoClient(settings.mongo_url)
        try:
            db = client[settings.mongo_database]
            for name in ("detection_metadata", "system_configuration"):
                docs = [d async for d in db[name].find({})]
                state[name] = sorted(docs, key=lambda d: str(d["_id"]))
                indexes = [ix async for ix in await db[name].list_indexes()]
                state[f"{name}.indexes"] = sorted(
                    (tuple(ix["key"].items()), bool(ix.get("unique"))) for ix in indexes)
                # Validators and other options, as listCollections reports them (nx-27017
                # reports none; a real MongoDB, SKYGATE_TEST_MONGO_URL, its $jsonSchema).
                infos = [i async for i in await db.list_collections(filter={"name": name})]
                state[f"{name}.options"] = [i.get("options") for i in infos]
        finally:
            await client.close()
    blob_root = settings.blob_dir
    state["blobs"] = {
        p.relative_to(blob_root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in blob_root.rglob("*") if p.is_file() and not p.name.startswith(".")
        and ".staging" not in p.parts}
    return state


def _check_populated(state: dict) -> None:
    assert state["statuses"] == ["done", "done", "done"]
    assert len(state["rows"]["detection_results"]) == 3
    assert len(state["rows"]["method_results"]) == 15
    assert len(state["blobs"]) >= 12


# --- PostgreSQL + MongoDB + a blob folder --------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_postgres_mongo_round_trip(pg_url, mongo_url, tmp_path):
    name = pg_url.rsplit("/", 1)[1] + "_backup"
    db_url = pg_url.rsplit("/", 1)[0] + "/" + name
    run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        env = {"SKYGATE_DATABASE_URL": db_url,
               "SKYGATE_MONGO_URL": f"{mongo_url}/backup_{uuid.uuid4().hex[:8]}",
               "SKYGATE_DATA_DIR": str(tmp_path / "var")}
        settings = _settings(env)
        run(_populate(settings, _images(tmp_path / "in")))
        before = run(_state(settings))
        _check_populated(before)
        assert len(before["detection_metadata"]) == 3
        assert before["sequences"]

        backup = run(create_backup(settings, tmp_path / "backups"))
        files = {p.relative_to(backup).as_posix() for p in backup.rglob("*") if p.is_file()}
        assert {"manifest.json", "SHA256SUMS", "database/postgres.dump",
                "documents/collections.json", "documents/detection_metadata.jsonl",
                "documents/system_configuration.jsonl"} <= files
        assert sum(f.startswith("blobs/") for f in files) == len(before["blobs"])
        manifest = json.loads((backup / "manifest.json").read_text())
        assert manifest["schema_revision"] == head_revision()
        assert manifest["database"]["tables"]["uploads"] == 3
        assert manifest["documents"]["counts"]["detection_metadata"] == 3
        assert "secret" not in json.dumps(manifest)

        # Disaster: the database, the collections and the blobs are gone.
        run(_pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
        run(_pg_admin(f'CREATE DATABASE "{name}"'))
        _drop_mongo(settings)
        shutil.rmtree(settings.blob_dir)

        result = run(restore_backup(settings, backup))
        assert result["tables"]["uploads"] == 3 and result["blobs"]["restored"]
        assert run(_state(settings)) == before

        # Over a populated target: refused, then replaced with force.
        with pytest.raises(TargetNotEmpty, match=r"database: \d+ tables"):
            run(restore_backup(settings, backup))
        run(restore_backup(settings, backup, force=True))
        assert run(_state(settings)) == before

        # A --force restore whose SQL fails half-way leaves the target as it was: the drops
        # and the dump run in one transaction.
        from storage.backup import sql as backup_sql

        real_run = backup_sql._run

        def failing_run(args, env):
            out = real_run(args, env)
            files = [a[len("--file="):] for a in args if a.startswith("--file=")]
            if Path(args[0]).name == "pg_restore" and files:  # the dump as SQL: break its end
                script = Path(files[0])
                script.write_text(script.read_text() + "\nSELECT 1/0;\n")
            return out

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(backup_sql, "_run", failing_run)
            with pytest.raises(BackupError, match="division by zero"):
                run(restore_backup(settings, backup, force=True))
        assert run(_state(settings)) == before
    finally:
        run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _drop_mongo(settings: Settings) -> None:
    from pymongo import MongoClient

    with MongoClient(settings.mongo_url) as client:
        db = client[settings.mongo_database]
        for name in db.list_collection_names():
            db.drop_collection(name)
        assert db.list_collection_names() == []


# --- the embedded default: SQLite + documents in it + a blob folder -------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """A populated embedded data dir and one backup of it (shared: tests copy, never edit)."""
    root = tmp_path_factory.mktemp("embedded")
    env = {"SKYGATE_DATA_DIR": str(root / "var")}
    settings = _settings(env)
    run(_populate(settings, _images(root / "in")))
    backup = run(create_backup(settings, root / "backups"))
    return {"settings": settings, "backup": backup, "state": run(_state(settings))}


def _empty_target(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "restored")


def _copy(backup: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(backup, tmp_path / backup.name))


def test_embedded_round_trip(embedded, tmp_path):
    _check_populated(embedded["state"])
    backup = embedded["backup"]
    assert backup.name.startswith("skygate-backup-")
    assert (backup / "database" / "skygate.db").is_file()
    assert not (backup / "documents").exists()  # the documents are rows of the SQLite file
    assert not list(backup.parent.glob(".*partial"))
    sums = (backup / "SHA256SUMS").read_text().splitlines()
    files = sorted(p.relative_to(backup).as_posix() for p in backup.rglob("*") if p.is_file())
    assert sorted(line.split("  ", 1)[1] for line in sums) == [
        f for f in files if f != "SHA256SUMS"]

    # Wipe the original and restore into its place.
    data_dir = tmp_path / "var"
    shutil.copytree(embedded["settings"].data_dir, data_dir)
    settings = Settings(data_dir=data_dir)
    assert run(_state(settings)) == embedded["state"]
    for path in data_dir.glob("skygate.db*"):
        path.unlink()
    shutil.rmtree(settings.blob_dir)
    result = run(restore_backup(settings, backup))
    assert result["documents"] == {"detection_metadata": 3, "system_configuration": 2}
    assert run(_state(settings)) == embedded["state"]


def test_restore_refuses_a_non_empty_target_without_force(embedded, tmp_path):
    data_dir = tmp_path / "var"
    shutil.copytree(embedded["settings"].data_dir, data_dir)
    settings = Settings(data_dir=data_dir)
    with pytest.raises(TargetNotEmpty) as refused:
        run(restore_backup(settings, embedded["backup"]))
    assert any(f.startswith("database: ") for f in refused.value.found)
    assert any(f.startswith("blob store ") for f in refused.value.found)

    # Only blobs present is occupied too.
    only_blobs = _empty_target(tmp_path)
    shutil.copytree(embedded["settings"].blob_dir, only_blobs.blob_dir)
    with pytest.raises(TargetNotEmpty, match="blob store"):
        run(restore_backup(only_blobs, embedded["backup"]))
    assert not (only_blobs.data_dir / "skygate.db").exists() or not run(
        _tables(only_blobs))

    result = run(restore_backup(settings, embedded["backup"], force=True))
    assert result["replaced"]
    assert run(_state(settings)) == embedded["state"]


async def _tables(settings: Settings) -> list[str]:
    from storage.backup import sql

    return list((await sql.describe(settings))["tables"])


def _assert_nothing_restored(settings: Settings) -> None:
    assert not (settings.data_dir / "skygate.db").exists()
    assert not settings.blob_dir.exists() or not any(settings.blob_dir.rglob("*"))


@pytest.mark.parametrize("damage", ["truncate database", "flip a blob byte", "edit manifest",
                                    "drop a blob", "add a file"])
def test_damaged_backup_is_named_and_nothing_restored(embedded, tmp_path, damage):
    backup = _copy(embedded["backup"], tmp_path)
    blob = sorted((backup / "blobs").rglob("*.png"))[0]
    if damage == "truncate database":
        bad = backup / "database" / "skygate.db"
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif damage == "flip a blob byte":
        bad = blob
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0x01
        bad.write_bytes(bytes(data))
    elif damage == "edit manifest":
        bad = backup / "manifest.json"
        bad.write_text(bad.read_text().replace('"uploads": 3', '"uploads": 4'))
    elif damage == "drop a blob":
        bad = blob
        bad.unlink()
    else:
        bad = backup / "blobs" / "extra.bin"
        bad.write_bytes(b"not from the store")
    name = bad.relative_to(backup).as_posix()
    target = _empty_target(tmp_path)
    with pytest.raises(ChecksumMismatch) as failed:
        run(restore_backup(target, backup))
    assert list(failed.value.problems) == [name]
    assert name in str(failed.value) and "nothing restored" in str(failed.value)
    _assert_nothing_restored(target)


def test_restore_refuses_a_target_of_another_kind(embedded, tmp_path):
    backup = embedded["backup"]
    with_mongo = Settings(data_dir=tmp_path / "a", mongo_url="mongodb://127.0.0.1:9/x")
    with pytest.raises(BackupError, match="embedded in its SQL database"):
        run(restore_backup(with_mongo, backup))
    on_postgres = Settings(data_dir=tmp_path / "b", database_url="postgresql://u@127.0.0.1/x")
    with pytest.raises(BackupError, match="holds a sqlite database but the target is post"):
        run(restore_backup(on_postgres, backup))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_failed_backup_leaves_no_folder(tmp_path):
    settings = Settings(data_dir=tmp_path / "nothing-here")
    with pytest.raises(Exception, match="does not exist"):
        run(create_backup(settings, tmp_path / "backups"))
    assert list((tmp_path / "backups").iterdir()) == []


def test_manifest_settings_carry_no_secret():
    from storage.backup.manifest import settings_fingerprint

    settings = Settings(database_url="postgresql://sky:hunter2@db:5432/skygate",
                        mongo_url="mongodb://sky:mongopw@mongo:27017/skygate",
                        broker_url="redis://cache:6379/0?password=brokerpw",
                        flower_basic_auth="admin:flowerpw")
    printed = json.dumps(settings_fingerprint(settings))
    assert not any(s in printed for s in ("hunter2", "mongopw", "flowerpw", "brokerpw"))
    assert "sky:***@db:5432" in printed
    other = settings_fingerprint(settings.model_copy(update={"flower_basic_auth": "x:y"}))
    assert other["sha256"] == settings_fingerprint(settings)["sha256"]
    moved = settings_fingerprint(settings.model_copy(update={"max_deliveries": 9}))
    assert moved["sha256"] != other["sha256"]


def test_s3_blobs_are_listed_and_checked_on_restore(embedded, tmp_path, request):
    """An S3 store is not copied: its keys, sizes and SHA-256s are listed, and a restore
    says which listed objects the bucket no longer holds."""
    s3 = request.getfixturevalue("s3_settings")
    data_dir = Path(shutil.copytree(embedded["settings"].data_dir, tmp_path / "var"))
    settings = Settings(data_dir=data_dir, blob_url=s3.blob_url,
                        s3_endpoint_url=s3.s3_endpoint_url)
    store = blob_store_for(settings)
    local = blob_store_for(Settings(data_dir=data_dir))
    keys = sorted(k for k, _, _ in list(local.keys()) if not k.startswith("."))[:4]
    for key in keys:
        staged = store.stage()
        staged.write(local.get(key))
        store.commit(staged, key)
    shutil.rmtree(local.root)

    backup = run(create_backup(settings, tmp_path / "backups"))
    assert not (backup / "blobs").exists()
    listing = [json.loads(line) for line in (backup / "blobs.jsonl").read_text().splitlines()]
    assert [e["key"] for e in listing] == keys
    for entry in listing:
        data = store.get(entry["key"])
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)

    for path in data_dir.glob("skygate.db*"):
        path.unlink()
    assert run(restore_backup(settings, backup))["blobs"] == {"restored": 0, "missing": []}
    store.delete(keys[1])
    result = run(restore_backup(settings, backup, force=True))
    assert result["blobs"]["missing"] == [keys[1]]


# --- the commands ---------------------------------------------------------------------------


def test_cli_backup_check_and_restore(embedded, tmp_path):
    from click.testing import CliRunner

    from skygate.cli import main
    from skygate.cli.backup import backup, restore

    assert main.commands["backup"] is backup and main.commands["restore"] is restore
    runner = CliRunner()
    source = {"SKYGATE_DATA_DIR": str(embedded["settings"].data_dir)}
    written = runner.invoke(backup, [str(tmp_path / "backups")], env=source)
    assert written.exit_code == 0, written.output
    assert "backup written:" in written.output and "3 uploads" in written.output
    (folder,) = (tmp_path / "backups").iterdir()

    checked = runner.invoke(restore, [str(folder), "--check"])
    assert checked.exit_code == 0 and "every checksum matches" in checked.output

    target = {"SKYGATE_DATA_DIR": str(tmp_path / "restored")}
    restored = runner.invoke(restore, [str(folder)], env=target)
    assert restored.exit_code == 0, restored.output
    assert "restored" in restored.output and "note:" not in restored.stderr
    assert run(_state(Settings(data_dir=tmp_path / "restored"))) == embedded["state"]

    again = runner.invoke(restore, [str(folder)], env=target)
    assert again.exit_code == 1 and "not empty" in again.stderr and "--force" in again.stderr
    forced = runner.invoke(restore, [str(folder), "--force"], env=target)
    assert forced.exit_code == 0, forced.output

    (folder / "database" / "skygate.db").write_bytes(b"SQLite format 3\0")
    damaged = runner.invoke(restore, [str(folder), "--check"])
    assert damaged.exit_code == 1 and "database/skygate.db: sha256" in damaged.stderr
