"""Verified backup and restore (issue 4): pg_backup, pg_restore_backup and the backup role, on real servers."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import psutil
import pytest

from conftest import REPO, ansible_env, reset_redis, run_module, run_playbook, start_module
from tmi_testenv import fixture
from tmi_testenv.fixture import schema_snapshot

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "backup_role.yml")
FIGURES_SQL_TABLES = ("threat_models", "threats", "documents", "sources", "metadata")


def backup(db, dest, **extra):
    dest.mkdir(parents=True, exist_ok=True)
    return run_module("pg_backup", {"dest": str(dest), "pg_bin_dir": str(db.server.client_bindir),
                                    **db.module_args(), **extra})


def restore(db, backup_dir, target, **extra):
    return run_module("pg_restore_backup", {"backup": str(backup_dir), "target_db": target,
                                            "pg_bin_dir": str(db.server.client_bindir),
                                            **db.module_args(), "login_db": "postgres", **extra})


def figures(server, dbname):
    """Row count and an ordered content hash per table, computed independently of the collection's snapshot code."""
    conn = server.connect(dbname)
    result = {}
    try:
        with conn.cursor() as cur:
            for table in FIGURES_SQL_TABLES:
                cur.execute(f"SELECT count(*), md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))) FROM {table} x")
                result[table] = cur.fetchone()
    finally:
        conn.close()
    return result


def database_exists(server, name):
    return bool(server.query_one(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"))


def run_role(db, redis_server, tmp_path, entry="main", *extra):
    result_file = tmp_path / f"result-{entry}.json"
    env = ansible_env(db.server, redis_server, db.name, tmp_path)
    result = run_playbook(PLAYBOOK, env, "-e", f"result_file={result_file}", "-e", f"entry={entry}", *extra)
    record = json.loads(result_file.read_text()) if result_file.exists() else None
    return result, record


def test_backup_of_100k_rows_verifies_and_is_private(big_db, tmp_path):
    result = backup(big_db, tmp_path / "b1", run_id="r1")
    assert not result.get("failed"), result
    manifest = json.loads((tmp_path / "b1" / "manifest.json").read_text())
    assert manifest["figures"]["public.threats"]["rows"] == 25_000
    assert sum(f["rows"] for f in manifest["figures"].values()) >= 100_000
    assert manifest["run_id"] == "r1" and manifest["dump_format"] == "directory"
    for path in (tmp_path / "b1").rglob("*"):
        assert oct(path.stat().st_mode & 0o777) == ("0o700" if path.is_dir() else "0o600"), path
    verified = restore(big_db, tmp_path / "b1", "scratch_r1", drop_after=True)
    assert verified["verified"] is True and verified["differences"] == []
    assert not database_exists(big_db.server, "scratch_r1")
    again = backup(big_db, tmp_path / "b1")
    assert again["changed"] is False, "an existing complete backup is not dumped again"


def test_figures_match_the_dump_while_the_application_writes(big_db, tmp_path):
    stop = threading.Event()
    writes, errors = [], []

    def write():
        conn = big_db.server.connect(big_db.name)
        with conn.cursor() as cur:
            while not stop.is_set():
                try:
                    cur.execute("UPDATE threats SET mitigated = NOT mitigated "
                                "WHERE id = (SELECT id FROM threats ORDER BY random() LIMIT 1)")
                    cur.execute("INSERT INTO metadata (entity_type, entity_id, key, value) "
                                "VALUES ('threat', gen_random_uuid(), 'live', 'x')")
                    writes.append(1)
                except Exception as error:  # noqa: BLE001 - reported by the assertions below
                    errors.append(error)
                    return
        conn.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    time.sleep(0.2)
    try:
        result = backup(big_db, tmp_path / "live")
        during = len(writes)
    finally:
        stop.set()
        writer.join(10)
    assert not result.get("failed"), result
    assert errors == [] and during > 20, (errors, during)
    live_rows = big_db.scalar("SELECT count(*) FROM metadata")
    assert live_rows > result["figures"]["public.metadata"]["rows"], "the data moved on past the snapshot"
    # Yet the dump equals the figures taken in its snapshot.
    assert restore(big_db, tmp_path / "live", "scratch_live", drop_after=True)["verified"] is True


def test_one_corrupted_byte_fails_verification_and_changes_nothing(big_db, tmp_path):
    backup(big_db, tmp_path / "b")
    data_file = max((tmp_path / "b" / "db.dump").glob("*.dat.gz"), key=lambda p: p.stat().st_size)
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data_file.write_bytes(bytes(raw))
    result = restore(big_db, tmp_path / "b", "scratch_bad", drop_after=True)
    assert result["failed"] and "does not match the sha256 recorded in its manifest" in result["msg"]
    assert data_file.name in result["msg"]
    assert not database_exists(big_db.server, "scratch_bad")


def test_a_row_changed_after_the_snapshot_fails_the_comparison(big_db, tmp_path):
    backup(big_db, tmp_path / "b")
    assert restore(big_db, tmp_path / "b", "scratch_kept")["verified"] is True
    conn = big_db.server.connect("scratch_kept")
    with conn.cursor() as cur:  # the simulated change between snapshot and comparison
        cur.execute("UPDATE documents SET url = url || '#changed' WHERE id = (SELECT id FROM documents LIMIT 1)")
    conn.close()
    result = restore(big_db, tmp_path / "b", "scratch_kept", verify_only=True)
    assert result["failed"] and result["verified"] is False
    assert "public.documents: content differs" in result["msg"]
    assert [d["table"] for d in result["differences"]] == ["public.documents"]
    big_db.server.connect().cursor().execute("DROP DATABASE scratch_kept")


def test_restore_after_destructive_changes_brings_everything_back_and_keeps_the_old_db(big_db, redis_server,
                                                                                       tmp_path):
    result, record = run_role(big_db, redis_server, tmp_path, "main", "-e", "run_id=run1")
    assert result.returncode == 0, result.stdout
    assert record["verified"] is True
    before = figures(big_db.server, big_db.name)
    big_db.query("DROP TABLE sources")
    big_db.query("DELETE FROM threats WHERE severity = 'High'")
    big_db.conn.close()

    result, restored = run_role(big_db, redis_server, tmp_path, "restore", "-e", "run_id=run2")
    assert result.returncode == 0, result.stdout
    assert restored["verified"] is True
    assert restored["old_database"] == f"{big_db.name}_before_restore_run2"
    assert figures(big_db.server, big_db.name) == before
    old = big_db.server.connect(restored["old_database"])
    with old.cursor() as cur:
        cur.execute("SELECT to_regclass('sources') IS NULL")
        assert cur.fetchone()[0] is True, "the damaged database is kept as it was"
    old.close()
    big_db.conn = big_db.server.connect(big_db.name)
    admin = big_db.server.connect()
    admin.cursor().execute(f'DROP DATABASE "{restored["old_database"]}"')
    admin.close()


def test_a_restore_failing_halfway_leaves_the_live_database_as_it_was(big_db, tmp_path):
    backup(big_db, tmp_path / "b")
    manifest_path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # Truncate the largest data file and make the manifest agree, so pg_restore itself fails midway.
    name, _unused = max(manifest["files"].items(), key=lambda item: item[1]["size"])
    path = tmp_path / "b" / "db.dump" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    manifest["files"][name] = {"size": path.stat().st_size,
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))
    live_schema, live_data = schema_snapshot(big_db.conn), figures(big_db.server, big_db.name)

    result = restore(big_db, tmp_path / "b", "tmi_new", replace=big_db.name, keep_old_as="tmi_old")
    assert result["failed"] and "pg_restore failed" in result["msg"]
    assert "no other database was touched" in result["msg"]
    assert not database_exists(big_db.server, "tmi_new") and not database_exists(big_db.server, "tmi_old")
    assert schema_snapshot(big_db.conn) == live_schema
    assert figures(big_db.server, big_db.name) == live_data


def test_no_password_on_any_command_line_while_dumping_and_restoring(big_db, tmp_path):
    password = big_db.server.password
    seen, programs = [], set()
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for proc in psutil.process_iter(["name", "cmdline"]):
                line = " ".join(proc.info["cmdline"] or [])
                if "pg_dump" in line or "pg_restore" in line:
                    programs.add("pg_dump" if "pg_dump" in line else "pg_restore")
                if password in line:
                    seen.append(line)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        (tmp_path / "b").mkdir()
        run = start_module("pg_backup", {"dest": str(tmp_path / "b"), "pg_bin_dir": str(big_db.server.client_bindir),
                                         "jobs": 2, **big_db.module_args()})
        assert not run.result().get("failed")
        assert restore(big_db, tmp_path / "b", "scratch_ps", drop_after=True)["verified"]
    finally:
        stop.set()
        sampler.join(10)
    assert programs == {"pg_dump", "pg_restore"}, "the sampler saw the client programs run"
    assert seen == []


def test_backup_role_records_redis_and_hides_secrets_at_vvv(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 20)
    reset_redis(redis_server)  # the session server is shared: start from its defaults
    redis_server.client().set("tmi:cache:threat_model:1", "cached")
    result, record = run_role(tmi_db, redis_server, tmp_path, "main", "-e", "run_id=vvv-run", "-vvv")
    assert result.returncode == 0, result.stdout
    output = result.stdout + result.stderr
    assert tmi_db.server.password not in output and redis_server.password not in output
    assert record["redis_settings"]["maxmemory-policy"] == "noeviction"
    assert "notify-keyspace-events" in record["redis_settings"]
    rdb = tmp_path / "backups" / tmi_db.name / "vvv-run" / "redis.rdb"
    assert record["redis_rdb"] == str(rdb) and rdb.read_bytes().startswith(b"REDIS")
    assert record["redis_rdb_sha256"] == hashlib.sha256(rdb.read_bytes()).hexdigest()
    assert b"tmi:cache:threat_model:1" in rdb.read_bytes()
    assert oct(rdb.stat().st_mode & 0o777) == "0o600"
    settings = json.loads((rdb.parent / "redis-settings.json").read_text())
    assert settings == record["redis_settings"]


def test_retention_keeps_the_newest_and_never_the_current_run(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    for run in ("a1", "a2", "a3"):
        result, _unused = run_role(tmi_db, redis_server, tmp_path, "main", "-e", f"run_id={run}", "-e", "backup_keep=2",
                                   "-e", "backup_verify=false")
        assert result.returncode == 0, result.stdout
        time.sleep(1.1)  # distinct manifest times
    kept = sorted(p.name for p in (tmp_path / "backups" / tmi_db.name).iterdir())
    assert kept == ["a2", "a3"]


@pytest.mark.parametrize("case, expected", [
    ("free_space", "Not enough free space for the backup"),
    ("missing_pg_dump", "pg_dump not found in /nonexistent/bin"),
    ("old_pg_dump", "cannot dump or restore it"),
    ("wrong_password", "password authentication failed"),
    ("not_a_directory", "does not exist or is not writable"),
])
def test_bad_inputs_fail_before_anything_is_written(tmi_db, tmp_path, case, expected):
    tmi_db.migrate(15)
    dest = tmp_path / "dest"
    dest.mkdir()
    args = {"dest": str(dest), "pg_bin_dir": str(tmi_db.server.client_bindir), **tmi_db.module_args()}
    if case == "free_space":
        args["min_free_space_factor"] = 1e9
    elif case == "missing_pg_dump":
        args["pg_bin_dir"] = "/nonexistent/bin"
    elif case == "old_pg_dump":
        fake = tmp_path / "oldbin"
        fake.mkdir()
        (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
        (fake / "pg_dump").chmod(0o755)
        args["pg_bin_dir"] = str(fake)
    elif case == "wrong_password":
        args["login_password"] = "wrong-password-x7"
    elif case == "not_a_directory":
        (tmp_path / "file").write_text("")
        args["dest"] = str(tmp_path / "file" / "sub")
    result = run_module("pg_backup", args)
    assert result["failed"] and expected in result["msg"], result["msg"]
    assert "wrong-password-x7" not in json.dumps(result)
    assert list(dest.iterdir()) == []


def test_role_reports_an_unusable_backup_dir(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    (tmp_path / "backups").write_text("a file where the backup directory should be")
    result, _unused = run_role(tmi_db, redis_server, tmp_path, "main", "-e", "run_id=x1")
    assert result.returncode != 0
    assert "Cannot create the backup directory" in result.stdout and "Nothing was written" in result.stdout


def task_outcomes(stdout: str, task: str) -> list[str]:
    """The outcome (ok, changed, skipping, failed) of each run of the backup role's task named ``task``."""
    return re.findall(r"TASK \[tmi\.migration\.backup : " + re.escape(task) + r"\] \*+\n(?:.*\n)*?(ok|changed|skipping"
                      r"|fatal):", stdout)


def test_the_checks_run_once_per_run_and_inputs_and_again_when_an_input_changes(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    env = ansible_env(tmi_db.server, redis_server, tmi_db.name, tmp_path)
    result = run_playbook(str(REPO / "tests" / "integration" / "playbooks" / "backup_checked_once.yml"), env,
                          "-e", "run_id=once1")
    assert result.returncode == 0, result.stdout[-3000:]
    privileges = "Read whether the database user may create, rename and drop the databases of a restore"
    assert task_outcomes(result.stdout, privileges) == ["ok", "skipping", "ok"], result.stdout[-3000:]
    directories = "Create the backup directories with private permissions"
    assert task_outcomes(result.stdout, directories) == ["changed", "skipping", "changed"], result.stdout[-3000:]
    # The input assertions run every time.
    assert task_outcomes(result.stdout, "Assert that the backup inputs are usable") == ["ok", "ok", "ok"]
    assert (tmp_path / "backups" / "other" / tmi_db.name / "once1" / "manifest.json").exists()


def test_a_connection_without_login_db_gets_the_inputs_message(tmi_db, redis_server, tmp_path):
    lookup = "{{ lookup('ansible.builtin.env', 'TMI_PG_NAME') }}"  # the password stays in the environment
    connection = {key: lookup.replace("NAME", name)
                  for key, name in (("login_host", "HOST"), ("login_port", "PORT"), ("login_user", "USER"),
                                    ("login_password", "PASSWORD"))}
    extra = tmp_path / "no_login_db.json"
    extra.write_text(json.dumps({"tmi_db_connection": connection}))
    result, _unused = run_role(tmi_db, redis_server, tmp_path, "main", "-e", "run_id=x2", "-e", f"@{extra}")
    assert result.returncode != 0
    assert "tmi_db_connection must name login_db" in " ".join(result.stdout.split()), result.stdout[-3000:]
    assert not (tmp_path / "backups").exists()


def test_restore_entry_point_without_a_backup_says_so(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    result, _unused = run_role(tmi_db, redis_server, tmp_path, "restore", "-e", "run_id=r9")
    assert result.returncode != 0 and "No complete backup" in result.stdout
    assert database_exists(tmi_db.server, tmi_db.name)
