"""Live progress of the long-running modules, as an operator sees it without -v.

The database is made slow on purpose, cheaply: a table of 500,000 rows of 64 random-looking characters (generated in
half a second here; dumped at --compress=9, its dump takes two seconds on a quiet machine and several on a busy one)
and an index whose expression sleeps a millisecond for each of the 2,000 rows its predicate keeps, so that its online
build scans the table for at least two seconds whatever the machine. tests/integration/playbooks/progress.yml dumps
it (pg_backup) and applies the one migration file that builds the index (pg_migrate, online index builds), with a
progress line every quarter of a second (tmi_progress_interval=0.25, the shortest; the default is 5), so that even a
fast machine prints several lines of each step.

* ansible-playbook's stdout: the dump names the table with its rows done of the planner's estimate, rising; the
  online build names the file, the index and its table with blocks done of the table's blocks, rising. Meanwhile the
  progress files are 0600 and hold no password; none is left after the run.
* ansible-runner (AWX): the same lines are in the job's stdout, and are verbose events of their tasks (what AWX's
  job output shows).
* in the ansible-playbook run, a migration that fails after its progress lines were shown returns the same result,
  message and all, as the same migration run without progress (0: the module run as ansible.builtin.normal runs it).

The other steps' lines (restore, verification, rehearsal, scans) are put together by the same code from the same
views; tests/unit/test_progress_lines.py holds how each kind of session reads.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import ansible_runner
import pytest
import yaml

from conftest import COLLECTIONS, REPO, ansible_env, run_playbook

PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "progress.yml"

SLOW_KEY_SQL = """
CREATE UNLOGGED TABLE progress_big (id bigint, payload text);
INSERT INTO progress_big SELECT i, md5(i::text) || md5((i + 1)::text) FROM generate_series(1, 500000) AS i;
ANALYZE progress_big;
-- One millisecond per indexed row, evaluated while the build scans the table.
CREATE FUNCTION slow_key(i bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS
$$ BEGIN PERFORM pg_sleep(0.001); RETURN i; END $$;
CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations VALUES (1, false);
"""
LINE = re.compile(r"^\[tmi_local\] (?P<phase>\S+) (?P<seconds>\d+) s \| (?P<text>.+)$")
DUMPED = re.compile(r"dump: .*public\.progress_big (?P<done>[\d,]+) of ~(?P<total>[\d,]+) rows \(\d+%\)")
BUILT = re.compile(r"migration, 000002 slow_index up \(file 1 of 1\), online build 1 of 1: index "
                   r"public\.progress_slow_idx on public\.progress_big: building index: scanning table, "
                   r"(?P<done>[\d,]+) of (?P<total>[\d,]+) blocks \(\d+%\)")


@pytest.fixture(scope="module")
def slow_source(pg_server):
    """A database to copy (CREATE DATABASE ... TEMPLATE): the slow table and function, at version 1."""
    name = f"tmi_progress_{os.getpid()}"
    pg_server.create_database(name)
    conn = pg_server.connect(name)
    try:
        with conn.cursor() as cur:
            cur.execute(SLOW_KEY_SQL)
    finally:
        conn.close()
    yield name
    drop(pg_server, name)


def drop(pg_server, name):
    admin = pg_server.connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def slow_db(pg_server, slow_source):
    name = f"{slow_source}_{os.urandom(3).hex()}"
    admin = pg_server.connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{slow_source}"')
    finally:
        admin.close()
    yield name
    drop(pg_server, name)


def slow_migrations(directory: Path) -> Path:
    directory.mkdir()
    (directory / "000001_progress_big.up.sql").write_text("SELECT 1;\n")
    (directory / "000001_progress_big.down.sql").write_text("SELECT 1;\n")
    (directory / "000002_slow_index.up.sql").write_text(
        "CREATE INDEX progress_slow_idx ON progress_big (slow_key(id)) WHERE id % 250 = 0;\n")
    (directory / "000002_slow_index.down.sql").write_text("DROP INDEX progress_slow_idx;\n")
    return directory


def extra_vars(tmp_path: Path) -> dict:
    (tmp_path / "backup").mkdir()
    return {"dest": str(tmp_path / "backup"), "compress": 9,
            "migrations": str(slow_migrations(tmp_path / "migrations")), "target_version": 2,
            "tmi_progress_interval": 0.25}


def progress_lines(output: str) -> list[str]:
    return [match.group("text") for match in map(LINE.match, output.splitlines()) if match]


def increasing(lines: list[str], pattern: re.Pattern) -> list[tuple[int, int]]:
    """(done, total) of the lines matching pattern; asserts at least two, the done counts rising."""
    figures = [(int(m.group("done").replace(",", "")), int(m.group("total").replace(",", "")))
               for m in map(pattern.search, lines) if m]
    assert len(figures) >= 2, lines
    done = [each[0] for each in figures]
    assert done == sorted(done) and done[-1] > done[0], figures
    return figures


class ProgressFiles:
    """Watches a remote_tmp directory for the modules' progress files: their modes and contents."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.seen: dict[str, tuple[int, str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch)

    def watch(self):
        while not self.stop.wait(0.05):
            for path in self.directory.glob("tmi-progress-*.json"):
                try:
                    self.seen[path.name] = (stat.S_IMODE(path.stat().st_mode), path.read_text())
                except OSError:
                    continue  # removed meanwhile

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def failing_migration(directory: Path) -> Path:
    directory.mkdir()
    (directory / "000001_fails.up.sql").write_text("SELECT pg_sleep(1.5);\nSELECT 1 / 0;\n")
    (directory / "000001_fails.down.sql").write_text("SELECT 1;\n")
    return directory


def test_progress_lines_in_ansible_playbook_output_rise_and_a_failure_reads_as_without_them(
        pg_server, slow_db, tmp_path):
    remote_tmp = tmp_path / "remote"
    remote_tmp.mkdir(mode=0o700)
    env = {**ansible_env(pg_server, None, slow_db), "ANSIBLE_REMOTE_TMP": str(remote_tmp)}
    failing = [f"{slow_db}_fails_{which}" for which in ("lines", "none")]
    for name in failing:
        pg_server.create_database(name)
    variables = {**extra_vars(tmp_path), "failing_migrations": str(failing_migration(tmp_path / "failing")),
                 "failing_runs": [{"db": failing[0], "interval": 0.25}, {"db": failing[1], "interval": 0}],
                 "result_file": str(tmp_path / "failing.json")}
    try:
        with ProgressFiles(remote_tmp) as files:
            result = run_playbook(str(PLAYBOOK), env, "-e", json.dumps(variables))
    finally:
        for name in failing:
            drop(pg_server, name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = progress_lines(result.stdout)

    dumped = increasing(lines, DUMPED)
    assert all(total == 500000 for _done, total in dumped), dumped
    built = increasing(lines, BUILT)
    assert len({total for _done, total in built}) == 1, built
    assert pg_server.password not in result.stdout

    # The files the lines came from: 0600, names and figures only, and gone once the run ended.
    assert files.seen, "no progress file was seen while the modules ran"
    for name, (mode, content) in files.seen.items():
        assert mode == 0o600, (name, oct(mode))
        assert pg_server.password not in content
    assert not list(remote_tmp.glob("tmi-progress-*")), list(remote_tmp.iterdir())

    # The failing migration: lines while it ran, then the result it gives without them.
    assert any(line.startswith("migration, 000001 fails up (file 1 of 1)") for line in lines), lines
    with_lines, without = json.loads((tmp_path / "failing.json").read_text())
    assert with_lines["failed"] and "division by zero" in with_lines["msg"], with_lines
    # The same, but for what comes of the loop's item (the database and interval it was given, the advisory lock
    # id golang-migrate derives from the database's name).
    for key in ("invocation", "item", "ansible_loop_var", "_ansible_item_label", "_ansible_no_log", "lock_id"):
        with_lines.pop(key, None)
        without.pop(key, None)
    for result in (with_lines, without):  # when the failed file started, and how long it took, differ by nature
        for key in ("started", "duration"):
            result["failed_migration"].pop(key)
    assert with_lines == without


def test_progress_lines_reach_ansible_runner_as_events_of_their_tasks(pg_server, slow_db, tmp_path):
    private = tmp_path / "private"
    (private / "env").mkdir(parents=True)
    env = ansible_env(pg_server, None, slow_db)
    (private / "env" / "envvars").write_text(yaml.safe_dump(
        {**{key: value for key, value in env.items() if key.startswith("TMI_")},
         "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PYTHONPATH": str(REPO / "tests")}))
    (private / "env" / "envvars").chmod(0o600)
    (private / "env" / "extravars").write_text(yaml.safe_dump(extra_vars(tmp_path)))

    run = ansible_runner.run(private_data_dir=str(private), project_dir=str(REPO),
                             playbook=str(PLAYBOOK.relative_to(REPO)),
                             inventory=str(REPO / "inventories" / "local"), quiet=True)
    stdout = run.stdout.read()
    assert run.status == "successful" and run.rc == 0, stdout[-4000:]

    lines = progress_lines(stdout)
    increasing(lines, DUMPED)
    increasing(lines, BUILT)
    # AWX shows them in the job output as the verbose events of the tasks they belong to.
    events = [(event["event_data"].get("task"), event["stdout"]) for event in run.events
              if event["event"] == "verbose" and LINE.match(event.get("stdout", ""))]
    dump_events = [text for task, text in events if task == "Dump the database"]
    build_events = [text for task, text in events if task == "Apply the migrations"]
    increasing(dump_events, DUMPED)
    increasing(build_events, BUILT)
    assert pg_server.password not in stdout
