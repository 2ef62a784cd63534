"""Where maintenance mode goes (module_utils/downtime.py): the decision from the plan, its analysis
and the rehearsal's observations, as a table of cases."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis, downtime, record


def _record(files, rehearsed=None, up_ok=True):
    """A run record whose plan is ``files`` [(version, sql)] going up; ``rehearsed`` {version: statements}."""
    planned = [(version, f"f{version}", "up", sql) for version, sql in files]
    result = analysis.analyse_plan(planned, "public")
    run = {"migration": {"plan": [{"version": v, "title": t, "direction": d} for v, t, d, _sql in planned],
                         "analysis": result}}
    if rehearsed is not None:
        run["rehearsal"] = {"rehearsed": True, "up_ok": up_ok,
                            "up": [{"version": v, "ok": True, "statements": s} for v, s in rehearsed.items()]}
    return run


INDEX = "CREATE INDEX i ON t (a);"
CHECK = "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);"
UPDATE = "UPDATE t SET a = 1 WHERE a IS NULL;"
ADD_COLUMN = "ALTER TABLE t ADD COLUMN b int;"
RETYPE = "ALTER TABLE t ALTER COLUMN a TYPE bigint;"
NEW_TABLE = "CREATE TABLE n (a int); INSERT INTO n VALUES (1);"


def _held(table, mode, seconds):
    return [{"statement": "x", "taken": {table: mode}, "held": {table: seconds}}]


@pytest.mark.parametrize("files, rehearsed, mode, effective, first, last, before, migrate_to, after", [
    # rehearsed: an online index build (SHARE UPDATE EXCLUSIVE) never needs maintenance
    ([(16, INDEX)], {16: _held("public.t", "SHARE UPDATE EXCLUSIVE", 30.0)}, "auto", "none", None, None, None,
     None, None),
    # a short ACCESS EXCLUSIVE is under the bound
    ([(16, CHECK)], {16: _held("public.t", "ACCESS EXCLUSIVE", 0.2)}, "auto", "none", None, None, None, None, None),
    # a long one is not
    ([(16, INDEX), (17, CHECK)], {16: [], 17: _held("public.t", "ACCESS EXCLUSIVE", 7.6)}, "auto", "window", 17, 17,
     16, None, None),
    # a window in the middle: files before and after it run live
    ([(16, INDEX), (17, CHECK), (18, ADD_COLUMN)],
     {16: [], 17: _held("public.t", "SHARE", 3.0), 18: _held("public.t", "ACCESS EXCLUSIVE", 0.01)},
     "auto", "window", 17, 17, 16, 17, 18),
    # data changes need the window whatever the locks
    ([(16, UPDATE)], {16: _held("public.t", "ROW EXCLUSIVE", 0.01)}, "auto", "window", 16, 16, None, None, None),
    ([(16, RETYPE)], {16: _held("public.t", "ACCESS EXCLUSIVE", 0.01)}, "auto", "window", 16, 16, None, None, None),
    # a new table's rows are nobody's: no window
    ([(16, NEW_TABLE)], {16: []}, "auto", "none", None, None, None, None, None),
    # a copy swapped in for the original, or a table dropped and created again, holds the application's rows
    ([(16, "CREATE TABLE t_new (a int); INSERT INTO t_new SELECT a FROM t; DROP TABLE t; "
           "ALTER TABLE t_new RENAME TO t;")], {16: _held("public.t", "ACCESS EXCLUSIVE", 0.05)}, "auto", "window",
     16, 16, None, None, None),
    ([(16, "DROP TABLE t; CREATE TABLE t (a int);")], {16: _held("public.t", "ACCESS EXCLUSIVE", 0.05)}, "auto",
     "window", 16, 16, None, None, None),
    # an added column keeps every value
    ([(16, ADD_COLUMN)], {16: _held("public.t", "ACCESS EXCLUSIVE", 0.01)}, "auto", "none", None, None, None, None,
     None),
    # the window spans from the first to the last file that needs it
    ([(16, UPDATE), (17, INDEX), (18, UPDATE)], {16: [], 17: [], 18: []}, "auto", "window", 16, 18, None, None,
     None),
    # without a rehearsal the predicted SHARE of a plain CREATE INDEX needs the window...
    ([(16, INDEX)], None, "auto", "window", 16, 16, None, None, None),
    # always and never
    ([(16, INDEX)], {16: []}, "always", "always", 16, 16, None, None, None),
    ([(16, UPDATE)], {16: []}, "never", "none", None, None, None, None, None),
])
def test_the_window(files, rehearsed, mode, effective, first, last, before, migrate_to, after):
    decided = downtime.window(_record(files, rehearsed), mode, 1.0)
    assert (decided["effective"], decided["first"], decided["last"]) == (effective, first, last)
    assert (decided["before_target"], decided["migrate_target"], decided["after_target"]) == (before, migrate_to,
                                                                                              after)
    assert len(decided["lines"]) == len(files) + 1


def test_online_index_builds_need_no_window_even_unrehearsed():
    """...but pg_migrate builds an index-only file CONCURRENTLY when online_index_builds is on."""
    decided = downtime.window(_record([(16, INDEX)]), "auto", 1.0, online_index_builds=True)
    assert decided["effective"] == "none"


def test_a_failed_rehearsal_measures_nothing():
    decided = downtime.window(_record([(16, INDEX)], {16: []}, up_ok=False), "auto", 1.0)
    assert decided["effective"] == "window" and not decided["files"][0]["measured"]


def test_the_reasons_name_the_lock_the_table_and_the_time():
    decided = downtime.window(_record([(17, CHECK)], {17: _held("public.t", "ACCESS EXCLUSIVE", 7.6)}), "auto", 1.0)
    assert decided["files"][0]["reasons"] == [
        "holds ACCESS EXCLUSIVE on public.t for 7.600 s in the rehearsal (tmi_max_write_stall 1.0 s)"]
    assert decided["lines"][0] == "Maintenance mode only around 000017 (the files from 000017 to 000017 need writes " \
                                  "stopped)"
    assert "maintenance" in decided["lines"][1]


def test_unknown_statements_need_the_window():
    decided = downtime.window(_record([(16, "CALL my_procedure();")], {16: []}), "auto", 1.0)
    assert decided["effective"] == "window" and "cannot know" in decided["files"][0]["reasons"][0]


def test_an_unmanaged_application_keeps_the_runbooks_way():
    decided = downtime.window(_record([(16, INDEX)], {16: []}), "auto", 1.0, app_enabled=False)
    assert decided["effective"] == "always" and "tmi_app_enabled=false" in decided["reason"]


def test_a_plan_going_down_keeps_the_runbooks_way():
    run = {"migration": {"plan": [{"version": 17, "title": "x", "direction": "down"}], "analysis": {}}}
    assert downtime.window(run, "auto", 1.0)["effective"] == "always"


def test_nothing_to_migrate():
    assert downtime.window({"migration": {"plan": []}}, "auto")["effective"] == "none"


@pytest.mark.parametrize("mode, stall", [("sometimes", 1), ("auto", -1)])
def test_bad_inputs_are_refused(mode, stall):
    with pytest.raises(ValueError):
        downtime.window(_record([(16, INDEX)]), mode, stall)


def test_write_stalls_take_the_longest_hold_and_the_strongest_mode():
    statements = _held("public.t", "SHARE", 0.5) + _held("public.t", "ACCESS EXCLUSIVE", 0.3) + \
        _held("public.u", "ROW EXCLUSIVE", 9.0)
    assert downtime.write_stalls(statements) == {"public.t": ("ACCESS EXCLUSIVE", 0.5)}


def test_the_migration_section_adds_up_the_segments_of_the_planned_run():
    planned = {"plan": [{"version": 16}, {"version": 17}], "analysis": {"all": True}, "version_before": 15,
               "target_version": 17, "applied": []}
    run = dict(record.new("r", "h"), migration=planned)
    run = record.start_phase(run, "migrate_before")
    run = record.update(run, {"migrate_result": {"plan": [{"version": 16}], "analysis": {"part": True},
                                                 "version_before": 15, "target_version": 16, "version_after": 16,
                                                 "applied": [{"version": 16, "duration": 1.5}]}})
    run = record.start_phase(run, "migrate")
    run = record.update(run, {"migrate_result": {"plan": [{"version": 17}], "analysis": {"part": True},
                                                 "version_before": 16, "target_version": 17, "version_after": 17,
                                                 "applied": [{"version": 17, "duration": 2.0}]}})
    migration = run["migration"]
    assert [a["version"] for a in migration["applied"]] == [16, 17] and migration["duration"] == 3.5
    assert migration["analysis"] == {"all": True} and migration["version_before"] == 15
    assert migration["target_version"] == 17 and migration["version_after"] == 17


def test_a_migration_to_another_target_replaces_the_section():
    run = dict(record.new("r", "h"), migration={"plan": [{"version": 16}], "applied": []})
    run = record.start_phase(run, "migrate")
    run = record.update(run, {"migrate_result": {"plan": [{"version": 18}], "applied": [{"version": 18}]}})
    assert run["migration"]["plan"] == [{"version": 18}]


def test_a_segment_with_nothing_left_to_apply_keeps_what_the_run_applied():
    planned = {"plan": [{"version": 16}, {"version": 17}], "analysis": {"all": True}, "version_before": 15,
               "applied": [{"version": 16, "duration": 1.0}], "version_after": 16}
    run = dict(record.new("r", "h"), migration=planned)
    run = record.start_phase(run, "migrate")
    run = record.update(run, {"migrate_result": {"plan": [], "applied": [], "version_after": 17, "failed": False}})
    assert run["migration"]["applied"] == [{"version": 16, "duration": 1.0}]
    assert run["migration"]["version_after"] == 17 and run["migration"]["analysis"] == {"all": True}
