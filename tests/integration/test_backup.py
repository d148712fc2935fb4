"""Backup and restore of the embedded SQLite default: a populated store backed up, wiped,
restored and compared; damaged backups and occupied targets refused before anything is touched;
an S3 store listed and checked; the commands. (PostgreSQL + MongoDB: test_backup_postgres.)"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from schemas.settings import Settings
from storage.backup import (
    BackupError,
    ChecksumMismatch,
    TargetNotEmpty,
    create_backup,
    restore_backup,
)
from storage.blobs import blob_store_for
from tests.conftest import run
from tests.integration.conftest import (
    _check_populated,
    _images,
    _populate,
    _settings,
    _state,
)

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
