"""Issue 21: what a run killed with SIGKILL leaves behind, and the next run removing it.

SIGKILL skips every ``finally``: a run killed while the backup's verification restore runs leaves
its scratch database ``<db>_verify_<run>`` and its pgpass file (the password) behind. Module
payloads must not hold the secrets on disk at all (pipelining, arguments over stdin); the next
run removes the scratch database and the pgpass directories of dead processes, and says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conftest import playbook_argv, run_module, start_module
from tmi_testenv import fixture

REPO = Path(__file__).resolve().parents[2]


def backup(db, dest):
    dest.mkdir(parents=True, exist_ok=True)
    result = run_module("pg_backup", {"dest": str(dest), "pg_bin_dir": str(db.server.client_bindir),
                                      **db.module_args()})
    assert not result.get("failed"), result
    return dest


def restore(db, backup_dir, target, check_mode=False, **extra):
    return run_module("pg_restore_backup", {"backup": str(backup_dir), "target_db": target, "drop_after": True,
                                            "pg_bin_dir": str(db.server.client_bindir), **db.module_args(),
                                            "login_db": "postgres", **extra}, check_mode=check_mode)


def databases(server, pattern):
    return sorted(row[0] for row in server_query(server, "SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                 (pattern,)))


def server_query(server, sql, args=None):
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def mark(server, name, database):
    """A database as the module marks a scratch restore of ``database``."""
    server.create_database(name)
    server_query(server, f'COMMENT ON DATABASE "{name}" IS %s',
                 (f"tmi.migration verification restore of database {database}",))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def warnings_of(result) -> str:
    return " ".join(str(result.get("warnings", "")).split())


def test_a_scratch_restore_drops_the_leftovers_of_earlier_runs_of_the_same_database_only(tmi_db, tmp_path):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 2, seed=3)
    dest = backup(tmi_db, tmp_path / "backup")
    server, prefix = tmi_db.server, tmi_db.name[:30]
    mark(server, f"{prefix}_verify_killedrun", tmi_db.name)  # an earlier run of this database, killed
    mark(server, f"{prefix}_verify_otherdb", tmi_db.name + "_x")  # another database's (same first 30 characters)
    server.create_database(f"{prefix}_verify_unmarked")  # not made by the module: never dropped
    target = f"{prefix}_verify_thisrun"

    checked = restore(tmi_db, dest, target, check_mode=True)
    assert checked["leftovers_removed"] == [f"{prefix}_verify_killedrun"]
    assert f"{prefix}_verify_killedrun" in databases(server, f"{prefix}_verify_%")

    kept = restore(tmi_db, dest, target, remove_leftovers=False)
    assert not kept.get("failed"), kept
    assert kept["leftovers_removed"] == [] and f"{prefix}_verify_killedrun" in databases(server, f"{prefix}_verify_%")

    result = restore(tmi_db, dest, target)
    assert not result.get("failed"), result
    assert result["verified"] is True and result["leftovers_removed"] == [f"{prefix}_verify_killedrun"]
    assert (f"Dropped database {prefix}_verify_killedrun, the scratch database of an earlier verification restore "
            f"of {tmi_db.name}") in warnings_of(result)
    assert databases(server, f"{prefix}_verify_%") == [f"{prefix}_verify_otherdb", f"{prefix}_verify_unmarked"]


def test_a_password_file_of_a_dead_process_is_removed_by_the_next_one(tmi_db, tmp_path, monkeypatch):
    tmi_db.migrate(15)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    dead, alive = dead_pid(), os.getpid()
    for pid in (dead, alive):
        leftover = tmpdir / f"tmi-pgpass-{pid}-abcd"
        leftover.mkdir(mode=0o700)
        (leftover / "pgpass").write_text(f"*:*:*:*:{tmi_db.server.password}\n")
    (tmpdir / "tmi-pgpass-not-a-pid").mkdir()

    dest = tmp_path / "backup"
    dest.mkdir()
    run = start_module("pg_backup", {"dest": str(dest), "pg_bin_dir": str(tmi_db.server.client_bindir),
                                     **tmi_db.module_args()})
    result = run.result()
    assert not result.get("failed"), result
    assert sorted(p.name for p in tmpdir.iterdir()) == [f"tmi-pgpass-{alive}-abcd", "tmi-pgpass-not-a-pid"]
    assert (f"Removed {tmpdir}/tmi-pgpass-{dead}-abcd, a password file left behind by an earlier run that was "
            "killed") in warnings_of(result)


def test_pipelining_sends_module_arguments_over_stdin_for_the_local_connection(tmp_path):
    """With the collection's ansible.cfg and inventories/local, no AnsiballZ payload file is written."""
    playbook = tmp_path / "probe.yml"
    playbook.write_text("- hosts: tmi_local\n  gather_facts: false\n  tasks:\n"
                        "    - name: Run a module\n      ansible.builtin.command: 'true'\n      changed_when: false\n")
    env = {**os.environ, "ANSIBLE_REMOTE_TMP": str(tmp_path / "remote")}
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-vvv", str(playbook)], cwd=REPO,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "PUT " not in result.stdout and "AnsiballZ_" not in result.stdout
    assert not (tmp_path / "remote").exists() or not any((tmp_path / "remote").rglob("*"))


def kill_tree(pid):
    """SIGKILL a process and every descendant - Ansible's workers call setsid(), so killpg() misses them.

    Everything is stopped first, so that nothing forks or cleans up between the listing and the kill.
    """
    root = psutil.Process(pid)
    tree = [root]
    while True:
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGSTOP)
        found = [root, *root.children(recursive=True)]
        if {p.pid for p in found} <= {p.pid for p in tree}:
            break
        tree = found
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)


def files_holding(directories, secrets) -> dict[str, list[str]]:
    found = {}
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                hits = [name for name, secret in secrets.items() if secret.encode() in content]
                if hits:
                    found[str(path)] = hits
    return found


def test_killed_during_the_verification_restore_leaves_no_secret_but_the_pgpass_the_next_run_removes(environment,
                                                                                                     pg_server):
    tmp = environment.tmp_path
    dirs = {"ANSIBLE_LOCAL_TEMP": tmp / "ansible-local", "ANSIBLE_REMOTE_TMP": tmp / "ansible-remote",
            "TMPDIR": tmp / "tmpdir"}
    for directory in dirs.values():
        directory.mkdir()
    env = {**environment.env, **{name: str(path) for name, path in dirs.items()}}
    secrets = {"PostgreSQL password": env["TMI_PG_PASSWORD"], "Redis password": env["TMI_REDIS_PASSWORD"],
               "application token": env["TMI_APP_TOKEN"]}
    # pg_restore that, once the restore is done, signals and waits: the module is inside the verification,
    # its pgpass file and scratch database exist, and the kill always lands there.
    bindir, marker = tmp / "pgbin", tmp / "restored"
    bindir.mkdir()
    real = Path(env["TMI_PG_BIN_DIR"])
    (bindir / "pg_dump").symlink_to(real / "pg_dump")
    wrapper = bindir / "pg_restore"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {real}/pg_restore "$@"\n'
                       f'{real}/pg_restore "$@" || exit $?\ntouch {marker}\nsleep 120\n')
    wrapper.chmod(0o755)
    before = environment.state()
    scratch_pattern = f"{environment.db.name[:30]}_verify_%"

    runner = subprocess.Popen(playbook_argv("migrate.yml", "-e", f"tmi_pg_bin_dir={bindir}"), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert runner.poll() is None, "migrate.yml ended before the verification restore"
            assert time.monotonic() < deadline, "the verification restore never ran"
            time.sleep(0.1)
        scratch = databases(pg_server, scratch_pattern)
        assert len(scratch) == 1, scratch
    finally:
        kill_tree(runner.pid)
        runner.wait()
    time.sleep(1)

    # After the kill: the scratch database is still there, and no file holds a secret but the pgpass file.
    assert databases(pg_server, scratch_pattern) == scratch
    leftovers = files_holding(dirs.values(), secrets)
    pgpass = [path for path in leftovers if Path(path).name == "pgpass"]
    assert leftovers == {path: ["PostgreSQL password"] for path in pgpass}, leftovers
    for path in pgpass:
        assert Path(path).parent.name.startswith("tmi-pgpass-") and (os.stat(path).st_mode & 0o777) == 0o600
    assert environment.state() == before  # killed before maintenance mode and the migration

    result = subprocess.run(playbook_argv("migrate.yml"), cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    output = " ".join(result.stdout.split()) + " ".join(result.stderr.split())
    assert f"Dropped database {scratch[0]}, the scratch database of an earlier verification restore" in output
    for path in pgpass:
        assert f"Removed {Path(path).parent}, a password file left behind by an earlier run" in output
        assert not Path(path).exists()
    assert databases(pg_server, scratch_pattern) == []
    assert files_holding(dirs.values(), secrets) == {}
    record = environment.records()[-1]
    assert record["failed"] is False and record["backup"]["verify_leftovers_removed"] == scratch
    environment.db.conn.close()
    environment.db.conn = pg_server.connect(environment.db.name)
    assert fixture.current_version(environment.db.conn) == (17, False)
