"""migrate.yml's maintenance mode only where it buys something (tmi_maintenance=auto, the default):
around the files the rehearsal saw block writers longer than tmi_max_write_stall, or that change data,
and off right after them. The application writes throughout the run where it is allowed to, and every
one of its writes survives; maintenance mode is watched from its flag file every 20 ms.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg2


def said(result) -> str:
    return " ".join((result.stdout + result.stderr).split())


class Application:
    """An application that writes a threat every few milliseconds, as TMI does while it serves, but never while
    maintenance mode is on; and a watcher of maintenance mode. Both run until ``stop``."""

    def __init__(self, environment):
        self.environment = environment
        self.flag = environment.standin.state_dir / "maintenance"
        self.stopping = threading.Event()
        self.written = []
        self.maintenance = []  # [(since, until)] of the stretches maintenance mode was on
        self.errors = []
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._watch)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _write(self):
        conn = None
        model = self.environment.db.query("SELECT id FROM threat_models ORDER BY created_at LIMIT 1")[0][0]
        while not self.stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self.environment.db.server.connect(self.environment.db.name)
                    conn.autocommit = True
                if not self.flag.exists():
                    name = f"written live {len(self.written)}"
                    with conn.cursor() as cur:
                        cur.execute("SET lock_timeout = '30s'")
                        cur.execute("INSERT INTO threats (threat_model_id, name, severity) VALUES (%s, %s, 'Low')",
                                    (model, name))
                    self.written.append(name)
            except psycopg2.Error as error:  # the run's restart of nothing here; record and go on
                self.errors.append(str(error))
                conn = None
            self.stopping.wait(0.02)
        if conn is not None:
            conn.close()

    def _watch(self):
        since = None
        while not self.stopping.is_set():
            on = self.flag.exists()
            if on and since is None:
                since = time.time()
            elif not on and since is not None:
                self.maintenance.append((since, time.time()))
                since = None
            self.stopping.wait(0.02)
        if since is not None:
            self.maintenance.append((since, None))


def phases(record) -> list[str]:
    return [phase["phase"] for phase in record["phases"]]


def started(record, name) -> float:
    return next(phase["started"] for phase in record["phases"] if phase["phase"] == name)


def surviving(environment, names) -> int:
    return environment.db.query("SELECT count(*) FROM threats WHERE name = ANY(%s)", (list(names),))[0][0]


def written_after_backup(record: dict) -> int:
    """Rows of threats written between the backup's snapshot and the baseline."""
    return (record["baseline"]["figures"]["public.threats"]["rows"]
            - record["backup"]["figures"]["public.threats"]["rows"])


def scratch_copies(environment) -> list[str]:
    return [row[0] for row in environment.db.query(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (environment.db.name + "%_verify_%",))]


def test_auto_with_only_online_index_builds_never_switches_maintenance_on(environment):
    with Application(environment) as app:
        result = environment.playbook("migrate.yml", "-e", "tmi_target_version=16")
    assert result.returncode == 0, result.stdout[-4000:]
    record = environment.records()[-1]
    assert record["window"]["effective"] == "none"
    assert record["window"]["lines"][0].startswith("No maintenance mode (no file blocks writers longer than 1.0 s")
    assert "000016 add_performance_indexes: live; writers wait at most 0.000 s" in record["window"]["lines"][1]
    assert not {"maintenance", "baseline", "release"} & set(phases(record))
    assert app.maintenance == [] and record["maintenance"] != "enabled"
    assert environment.state()["version"] == (16, False)
    # The application wrote during the whole run, and nothing it wrote was judged or lost.
    assert len(app.written) > 20 and app.errors == []
    assert surviving(environment, app.written) == len(app.written)
    assert record["validation"]["data_check"] == [] and record["validation"]["failed_checks"] == []


def test_auto_switches_maintenance_on_only_around_the_file_that_needs_it(environment):
    """One plain migrate.yml with the application writing throughout, which proves three things:
    - maintenance mode goes on only around 000017 and off before validation, and the restart's gap is said;
    - writes made during the backup (after its snapshot) are kept, judged ok, and the run succeeds;
    - the rehearsal is shown before maintenance mode and recorded for the report, and ends as production does.
    """
    with Application(environment) as app:
        result = environment.playbook("migrate.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    record = environment.records()[-1]
    window = record["window"]
    assert (window["effective"], window["first"], window["last"], window["before_target"]) == ("window", 17, 17, 16)
    assert "changes data: line 4 drops or changes column key of public.metadata" in window["files"][1]["reasons"]
    assert phases(record)[:10] == ["preflight", "backup", "rehearsal", "window", "migrate_before", "maintenance",
                                   "baseline", "migrate", "release", "validate"]
    assert [entry["version"] for entry in record["migration"]["applied"]] == [16, 17]
    assert record["migration"]["version_before"] == 15 and record["migration"]["target_version"] == 17
    # Maintenance mode was on once, from the maintenance phase until the data was judged: off before validation.
    assert len(app.maintenance) == 1
    on, off = app.maintenance[0]
    assert started(record, "maintenance") <= on and off <= started(record, "validate")
    assert record["release"]["failed_checks"] == [] and record["release"]["data_check"]
    assert record["validation"]["data_check"] == record["release"]["data_check"]
    assert record["maintenance"] == "disabled"
    assert environment.state()["version"] == (17, False)
    assert len(app.written) > 20 and app.errors == []
    assert surviving(environment, app.written) == len(app.written)
    report = (environment.tmp_path / "runs" / record["run_id"] / "run.md").read_text()
    assert "## Maintenance mode (where it went, and why)" in report
    assert "- Maintenance mode only around 000017" in report
    # One application host: the restart's gap is what its users see, measured and said in the output and report
    # (several hosts restart one at a time: test_rolling_restart.py).
    restart = record["app"]["restart"]
    (host,) = restart["hosts"]
    assert host["name"] == "tmi_local" and restart["restarted"] == ["tmi_local"]
    assert 0 < host["seconds_unavailable"] == restart["gap_seconds"]
    assert f"Restart: 1 host, unavailable tmi_local {host['seconds_unavailable']} s" in said(result)
    assert f"- restart: 1 host, unavailable {host['seconds_unavailable']} s; no host answered for " \
           f"{restart['gap_seconds']} s at the longest" in report

    # Writes during the backup: the application wrote after the backup's snapshot, and the data check
    # judged the table it writes to unchanged across the window (writes were stopped there).
    assert written_after_backup(record) > 0, "no write happened after the backup: the test proves nothing"
    assert not record["validation"]["failed_checks"]
    threats = next(r for r in record["validation"]["data_check"] if r["table"] == "public.threats")
    assert threats["verdict"] == "ok" and threats["rows_before"] == threats["rows_after"]

    # The rehearsal is shown before maintenance mode and recorded for the report.
    output = result.stdout
    assert output.find("000017 enhance_metadata: ") < output.find("TASK [Switch the application to maintenance mode]")
    assert record["rehearsal"]["reversible"] is True
    assert "## Rehearsal" in report and "| 000017 enhance_metadata | 4 |" in report
    assert "public.metadata ACCESS EXCLUSIVE" in report
    # 000017 retypes metadata.key the same way on the copy and in production: the same figures. The tables the
    # application wrote to since the backup are not compared with the rehearsal.
    assert set(record["rehearsal"]["figures_after_up"]) == {"public.metadata"}
    assert [w for w in record["validation"]["warnings"] if w["check"] == "differs_from_rehearsal"] == []
    assert scratch_copies(environment) == []


def test_always_keeps_the_runbooks_way(environment):
    with Application(environment) as app:
        result = environment.playbook("migrate.yml", "-e", "tmi_maintenance=always")
    assert result.returncode == 0, result.stdout[-4000:]
    record = environment.records()[-1]
    assert record["window"]["effective"] == "always"
    assert not {"migrate_before", "release", "migrate_after"} & set(phases(record))
    # On from before the files until the application is back (the app phase switches it off).
    assert len(app.maintenance) == 1
    on, off = app.maintenance[0]
    assert on <= started(record, "baseline") and off >= started(record, "app")
    assert record["validation"]["data_check"] and record["validation"]["failed_checks"] == []
    assert surviving(environment, app.written) == len(app.written)


def test_never_leaves_the_application_serving_and_compares_no_data(environment):
    with Application(environment) as app:
        result = environment.playbook("migrate.yml", "-e", "tmi_maintenance=never")
    assert result.returncode == 0, result.stdout[-4000:]
    record = environment.records()[-1]
    assert record["window"]["effective"] == "none"
    assert record["window"]["reason"].startswith("tmi_maintenance=never: no data is compared")
    assert app.maintenance == [] and "baseline" not in phases(record)
    assert record["validation"]["data_check"] == []
    assert environment.state()["version"] == (17, False)
    assert surviving(environment, app.written) == len(app.written)


def test_a_change_no_statement_explains_is_caught_before_maintenance_mode_goes_off(environment):
    """A trigger the file creates empties another table: the data check at the end of the window fails
    the run while writes are still stopped. (Without the automatic rollback here: the run stops with
    maintenance mode on, and every write the application made before the window is still there.)"""
    path = environment.broken_migrations(17, """
CREATE FUNCTION purge_documents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN DELETE FROM documents; RETURN NULL; END $$;
CREATE TRIGGER purge_documents AFTER UPDATE ON diagrams FOR EACH STATEMENT EXECUTE FUNCTION purge_documents();
UPDATE diagrams SET name = name;""")
    with Application(environment) as app:
        result = environment.playbook("migrate.yml", "-e", json.dumps({"tmi_migrations_path": path,
                                                                      "tmi_auto_rollback": False}))
    assert result.returncode != 0
    message = said(result)
    assert "The data check at the end of the maintenance window failed" in message
    assert "[data_lost] public.documents" in message and "maintenance mode stays on" in message
    assert "MAINTENANCE MODE IS ON" in message
    record = environment.records()[-1]
    assert record["failed_phase"] == "release" and record["maintenance"] == "enabled"
    assert app.maintenance and app.maintenance[-1][1] is None  # on since the window began
    assert environment.standin.request("GET", "/admin/maintenance")[1]["maintenance"] is True
    assert surviving(environment, app.written) == len(app.written) and app.written


def test_a_bad_maintenance_mode_is_refused_before_anything_runs(environment):
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", "tmi_maintenance=sometimes", "-e", "tmi_max_write_stall=-1")
    assert result.returncode != 0
    message = said(result)
    assert "tmi_maintenance must be auto" in message and "(got 'sometimes')" in message
    assert "tmi_max_write_stall a number of seconds, 0 or more (got '-1')" in message
    assert "Nothing was changed." in message
    assert environment.state() == before
    assert environment.records() == []
