"""rollback.yml hardened (issue 21): a run rolled back already, a failure after the application was stopped,
retention of what rollbacks and config renders keep, and an unknown rollback mode (run records behind many
nightly no-op runs: test_data_safety.py).

Every refusal is checked for its message and for the environment being exactly as before: schema version
and dirty flag, every table's figures, Redis settings, the config file, maintenance mode, and the stand-in
still answering.
"""

from __future__ import annotations

import json
import os
import shlex
import time

import pytest

from tmi_testenv import fixture

KEPT_BY = "tmi.migration.pg_restore_backup"


def message_of(result) -> str:
    """The playbook's output with the callback's line folding undone."""
    return " ".join((result.stdout + result.stderr).split())


def app_is_up(environment) -> bool:
    if environment.standin.pid() is None:
        return False
    try:
        return environment.standin.request("GET", "/health", token=None)[0] == 200
    except OSError:
        return False


def databases(environment) -> set[str]:
    """The databases of the session server named after this test's live database."""
    conn = environment.db.server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = %s OR starts_with(datname, %s)",
                        (environment.db.name, environment.db.name + "_"))
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def execute(environment, sql: str, params=None) -> None:
    conn = environment.db.server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
    finally:
        conn.close()


@pytest.fixture
def cleanup(environment):
    """Drops what the rollbacks kept beside the live database (the fixture drops the live one only)."""
    yield
    for name in databases(environment) - {environment.db.name}:
        execute(environment, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_dir(environment, run_id: str):
    return environment.tmp_path / "runs" / run_id


def migrate(environment, *extra: str) -> dict:
    result = environment.playbook("migrate.yml", *extra)
    assert result.returncode == 0, result.stdout[-4000:]
    return environment.records()[-1]


def kept_comment(live: str, when: str) -> str:
    return json.dumps({"kept_by": KEPT_BY, "was": live, "replaced_at": when, "backup": "/nowhere"}, sort_keys=True)


def test_a_repeated_emergency_rollback_says_so_and_changes_nothing(environment, cleanup):
    """One migrated run rolled back in emergency mode, again and again, which proves:
    - retention: the run keeps the newest config copies, and its emergency rollback the newest kept databases
      of this live database only, leaving those it cannot attribute;
    - without the config copy the run made, the emergency rollback refuses before it starts;
    - a repeated emergency rollback says the run was rolled back already and changes nothing, and a run
      migrated again under the same run id is rolled back as usual;
    - a database that moved on (migrated by hand) is rolled back again, but the database an earlier emergency
      rollback kept is never overwritten: that rollback refuses and changes nothing.
    """
    db = environment.db.name
    config = environment.standin.config
    # Copies earlier renders kept (they hold passwords), oldest first, and a file that is not one of them.
    copies = [config.parent / f"{config.name}.{1000 + day}.2026-01-{day:02d}@01:00:00~" for day in range(1, 6)]
    for day, copy in enumerate(copies, start=1):
        copy.write_text(config.read_text())
        os.utime(copy, (time.time() - 86400 * (10 - day),) * 2)
    unrelated = config.parent / f"{config.name}.bak"
    unrelated.write_text("keep me\n")

    # Databases earlier emergency rollbacks of this database kept, and some that are not theirs to drop.
    mine = [f"{db}_before_restore_old{day}" for day in (1, 2, 3)]
    for day, name in enumerate(mine, start=1):
        environment.db.server.create_database(name)
        execute(environment, f'COMMENT ON DATABASE "{name}" IS %s', (kept_comment(db, f"2026-01-0{day}T00:00:00Z"),))
    unattributed = f"{db}_before_restore_byhand"  # no comment: nobody can say whose it is
    someone_elses = f"{db}_before_restore_other"  # kept from another live database with the same name prefix
    too_long = f"{db}_before_restore_{'x' * 25}"  # not a name the backup role derives
    for name in (unattributed, someone_elses, too_long):
        environment.db.server.create_database(name)
    for name, live in ((someone_elses, db + "x"), (too_long, db)):
        execute(environment, f'COMMENT ON DATABASE "{name}" IS %s', (kept_comment(live, "2026-02-01T00:00:00Z"),))

    before = environment.state()
    run = migrate(environment)
    made = run["app"]["previous"][0]["backup_file"]
    assert made and os.path.exists(made)
    left = sorted(p.name for p in config.parent.glob(f"{config.name}.*~"))
    assert left == sorted([os.path.basename(made), copies[4].name, copies[3].name])
    assert sorted(item["path"] for item in run["app"]["removed_backups"]) == sorted(str(c) for c in copies[:3])
    assert unrelated.exists()

    # The copy the run made is what the rollback puts back: without it the rollback refuses before it starts.
    os.rename(made, made + ".away")
    migrated = environment.state()
    refused = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=emergency")
    assert refused.returncode != 0
    message = message_of(refused)
    assert f"cannot put the previous config file back: {made} (kept by the run on tmi_local) is gone" in message
    assert "Nothing was changed." in message
    assert environment.state() == migrated and app_is_up(environment)
    assert environment.records("rollback") == []
    os.rename(made + ".away", made)

    first = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=emergency")
    assert first.returncode == 0, first.stdout[-4000:]
    assert environment.state() == before
    record = run_dir(environment, run["run_id"]) / "rollback.json"
    written = record.read_bytes()
    assert json.loads(written)["rollback"]["mode"] == "emergency"
    # Retention: of the kept databases of this live database, the newest stay beside the one this rollback kept.
    rollback = environment.records("rollback")[-1]["rollback"]
    old = rollback["restore"]["old_database"]
    assert sorted(rollback["removed_databases"]) == sorted(mine[:2])
    assert databases(environment) == {db, old, mine[2], unattributed, someone_elses, too_long}
    assert unattributed in rollback["restore"]["unattributed_old"]
    report = (run_dir(environment, run["run_id"]) / "rollback.md").read_text()
    assert f"kept databases: {', '.join(rollback['removed_databases'])}" in report
    kept = databases(environment)

    again = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=emergency")
    assert again.returncode == 0, again.stdout[-4000:]
    message = message_of(again)
    assert f"Run {run['run_id']} was rolled back already: the emergency rollback by rollback.yml finished" in message
    assert f"recorded in {record}" in message
    assert "The database is at version 15 (clean), as that rollback left it. Nothing was done" in message
    assert environment.state() == before
    assert app_is_up(environment)
    assert record.read_bytes() == written, "the record of the rollback that happened was overwritten"
    assert databases(environment) == kept

    # Migrated again under the same run id: run.json is newer than the rollback, which no longer stands.
    rerun = migrate(environment, "-e", f"tmi_run_id={run['run_id']}")
    assert rerun["run_id"] == run["run_id"] and environment.state()["version"] == (17, False)
    third = environment.playbook("rollback.yml")
    assert third.returncode == 0, third.stdout[-4000:]
    assert f"Run {run['run_id']} was rolled back already" not in message_of(third)
    assert json.loads(record.read_text())["rollback"]["mode"] == "planned"
    assert environment.state() == before
    assert app_is_up(environment)
    kept = databases(environment)
    assert old in kept

    # Migrated by hand since: the record says rolled back, the database says otherwise. It is rolled back
    # again, but the name the live database would be kept under is the first emergency rollback's.
    conn = environment.db.server.connect(environment.db.name)
    fixture.apply_like_golang_migrate(conn, 17)
    conn.close()
    moved = environment.state()
    assert moved["version"] == (17, False)
    again = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=emergency")
    assert again.returncode != 0
    message = message_of(again)
    assert "it is now at version 17 (clean), so it is rolled back again" in message
    assert f"would keep the live database {environment.db.name} as {old}, but a database of that name exists" in message
    assert f"({record})" in message and "ALTER DATABASE" in message
    assert "The emergency rollback changed nothing" in message
    assert environment.state() == moved
    assert app_is_up(environment)
    assert databases(environment) == kept


def fake_pg_bin_dir(environment) -> str:
    """A pg_restore that answers --version like the real one and fails every restore."""
    real = os.environ.get("TMI_PG_BIN_DIR") or environment.env["TMI_PG_BIN_DIR"]
    fake = environment.tmp_path / "fake-bin"
    fake.mkdir()
    script = fake / "pg_restore"
    script.write_text("#!/bin/sh\n"
                      f'[ "$1" = --version ] && exec {shlex.quote(real)}/pg_restore --version\n'
                      'echo "pg_restore: error: could not write to file: No space left on device (injected)" >&2\n'
                      "exit 1\n")
    script.chmod(0o755)
    return str(fake)


def test_a_failure_after_the_application_was_stopped_starts_it_again_or_says_it_is_down(environment, cleanup):
    run = migrate(environment)
    before = environment.state()
    bin_dir = fake_pg_bin_dir(environment)
    kept = databases(environment)

    failed = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=emergency", "-e",
                                  f"rollback_pg_bin_dir={bin_dir}")
    assert failed.returncode != 0
    message = message_of(failed)
    assert "No space left on device (injected)" in message
    assert "The application, which this rollback had stopped, was started again" in message
    assert app_is_up(environment)
    record = environment.records("rollback")[-1]
    assert record["run_id"] == run["run_id"]
    assert record["rollback"]["succeeded"] is False and record["rollback"]["application"] == "started again"
    # The database, Redis and the config file are untouched; maintenance mode stays on, as the message says.
    after = environment.state()
    assert after["maintenance"] is True and "maintenance mode was left as it is" in message
    assert {**after, "maintenance": False} == before
    assert databases(environment) == kept

    # The application cannot be started again either: the message and the record say it is down.
    commands = {action: f"{environment.env['TMI_APP_CTL']} {action}" for action in ("stop", "restart")}
    down = environment.playbook("rollback.yml", "-e", json.dumps({
        "tmi_rollback_mode": "emergency", "rollback_pg_bin_dir": bin_dir,
        "app_config_service_commands": {**commands, "start": "/bin/false"}}))
    assert down.returncode != 0
    message = message_of(down)
    assert "THE APPLICATION IS DOWN: this rollback stopped it and could not start it again" in message
    assert environment.records("rollback")[-1]["rollback"]["application"] == "DOWN"
    assert "THE APPLICATION IS DOWN" in environment.records("rollback")[-1]["error"]
    assert "**THE APPLICATION IS DOWN**" in (run_dir(environment, run["run_id"]) / "rollback.md").read_text()
    assert environment.standin.pid() is None
    environment.standin.start()
    assert {**environment.state(), "maintenance": False} == before


def test_an_unknown_rollback_mode_is_refused_before_anything_changes(environment):
    before = environment.state()
    result = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=bogus", "-e",
                                  "tmi_rollback_of=20261124T010000Z-1")
    assert result.returncode != 0
    message = message_of(result)
    assert "tmi_rollback_mode must be auto, planned or emergency (got 'bogus')" in message
    assert "Nothing was changed." in message
    assert environment.state() == before and app_is_up(environment)
    assert environment.records("rollback") == []
