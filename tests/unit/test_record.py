"""The run record's code (module_utils/record.py): schema, phases, failure summary, verdicts, finding a record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from ansible_collections.tmi.migration.plugins.module_utils import record

REPO = Path(__file__).resolve().parents[2]


def test_a_new_record_has_every_section_empty():
    run = record.new("r1", "db1", check_mode="False", started="2026-11-24T01:00:00+00:00")
    assert set(run) == set(record.RUN) | set(record.SECTIONS)
    assert run["run_id"] == "r1" and run["host"] == "db1" and run["check_mode"] is False
    assert run["maintenance"] == "unused" and run["backup"] == {} and run["phases"] == []


def test_phases_are_timed_until_the_next_one_starts():
    run = record.new("r1", "db1")
    run = record.start_phase(run, "preflight", clock=100.0)
    run = record.start_phase(run, "backup", clock=103.5)
    report = record.phase_results(run, clock=110.0)
    expected = [("preflight", "ok", 3.5), ("backup", "ok", 6.5)]
    assert [(p["phase"], p["result"], p["duration"]) for p in report] == expected


def test_an_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase 'bakup'"):
        record.start_phase(record.new("r1", "db1"), "bakup")


def test_a_phase_result_is_copied_once_and_later_overwrites_do_not_reach_the_record():
    run = record.start_phase(record.new("r1", "db1"), "migrate", clock=1.0)
    facts = {"migrate_result": {"version_before": 15, "version_after": 17}}
    run = record.update(run, facts)
    facts["migrate_result"] = {"version_before": 17, "version_after": 15}  # the rollback reads the state again
    facts["migrate_result"]["version_after"] = 15
    assert run["migration"] == {"version_before": 15, "version_after": 17}


def test_a_result_the_phase_did_not_produce_leaves_its_section_alone():
    run = record.start_phase(record.new("r1", "db1"), "preflight", clock=1.0)
    run = record.update(run, {"migrate_result": {"plan": [1]}})
    run = record.start_phase(run, "migrate", clock=2.0)
    run = record.update(run, {})  # --tags left the migration out
    assert run["migration"] == {"plan": [1]} and run["preflight"] == {}


def test_a_failed_loop_names_its_items_errors():
    result = {"msg": "One or more items failed", "results": [
        {"failed": False, "stderr": "ignored"}, {"failed": True, "stderr": "disk full"},
        {"failed": "True", "stderr": ""},
        {"failed": True, "stderr": "permission denied"}]}
    assert record.failure_text(result) == "One or more items failed: disk full; permission denied"
    assert record.failure_text({"msg": "plain"}) == "plain"


def test_a_failure_is_recorded_in_the_phase_that_ran():
    run = record.start_phase(record.new("r1", "db1"), "preflight", clock=1.0)
    run = record.start_phase(run, "migrate", clock=2.0)
    run = record.failed(run, {"msg": "boom"}, "Apply the migrations")
    assert (run["failed"], run["failed_phase"], run["failed_task"], run["error"]) == (
        True, "migrate", "Apply the migrations", "boom")
    assert [p["result"] for p in record.phase_results(run, clock=3.0)] == ["ok", "failed"]


def test_failure_message_names_the_error_then_the_rollback():
    run = record.failed(record.start_phase(record.new("r1", "db1"), "migrate", clock=1.0), {"msg": "boom"}, "Apply")
    assert record.failure_message(run).endswith(
        "Rollback: none (no verified backup was taken, so nothing had been changed)")
    run["backup"] = {"verified": True}
    assert "switched off (tmi_auto_rollback=false)" in record.failure_message(run, auto_rollback=False)
    run["rollback"] = record.normalise_rollback({"mode": "planned", "succeeded": True, "version_after": "15"})
    run["maintenance"] = "enabled"
    message = record.failure_message(run)
    assert message.startswith("Phase migrate failed at 'Apply': boom -- Rollback: planned succeeded")
    assert "back at version 15" in message and message.endswith("run playbooks/rollback.yml once the cause is fixed.")


def test_the_reports_rollback_line_names_the_rollback_or_why_none_ran():
    run = record.new("r1", "db1")
    assert record.summary(run)["rollback"] == ""
    run = record.failed(record.start_phase(run, "backup", clock=1.0), {"msg": "boom"}, "Dump")
    assert record.summary(run)["rollback"] == "none (no verified backup was taken, so nothing had been changed)"
    # rollback.yml's record: no backup of its own, the rollback it ran.
    rolled = record.new("r1", "db1")
    rolled["rollback"] = record.normalise_rollback({"mode": "emergency", "succeeded": True, "version_after": 15})
    assert record.summary(rolled)["rollback"] == "emergency succeeded, the database is back at version 15"
    rolled["rollback"] = record.normalise_rollback({"mode": "planned", "error": "down file failed"})
    assert record.summary(rolled)["rollback"] == "planned FAILED: down file failed"


def test_maintenance_switches_are_kept_from_each_phase_that_makes_them():
    log = [{"state": "enabled", "at": 5.0}]
    run = record.update(record.start_phase(record.new("r1", "db1"), "maintenance", clock=1.0),
                        {"app_config_maintenance_state": "enabled", "app_config_maintenance_log": log})
    assert run["maintenance"] == "enabled" and run["maintenance_log"] == log
    later = [*log, {"state": "disabled", "at": 9.0}]
    run = record.update(record.start_phase(run, "release", clock=8.0),
                        {"app_config_maintenance_state": "disabled", "app_config_maintenance_log": later})
    assert run["maintenance_log"] == later


def test_a_rollback_that_failed_before_recording_itself_gets_a_record_of_the_same_shape():
    run = record.start_phase(record.new("r1", "db1"), "rollback", clock=1.0)
    run = record.rollback_failed(run, {"msg": "rollback inputs are invalid"}, "auto")
    assert set(run["rollback"]) == set(record.ROLLBACK)
    assert run["rollback"]["succeeded"] is False and run["rollback"]["error"] == "rollback inputs are invalid"
    recorded = record.update(record.start_phase(record.new("", "db1"), "rollback", clock=1.0),
                             {"rollback_result": {"run_id": "r1", "mode": "emergency", "succeeded": "True"}})
    assert set(recorded["rollback"]) == set(run["rollback"]) and recorded["run_id"] == "r1"
    assert recorded["rollback"]["succeeded"] is True


def test_status_and_notice():
    run = record.new("r1", "db1")
    assert record.status(run) == "succeeded" and record.notice(run) == ""
    run["maintenance"] = "enabled"
    assert record.notice(record.end(run, checkpoint=True)).startswith("If this run no longer runs")
    ended = record.end(dict(run, failed=True))
    assert record.status(ended) == "FAILED" and ended["notice"].startswith("MAINTENANCE MODE IS ON")
    assert record.status(record.new("r1", "db1", check_mode=True)) == "checked (check mode, nothing was changed)"


def test_success_criteria_verdicts():
    run = record.new("r1", "db1")
    assert {item["result"] for item in record.criteria(run)} == {"n/a"}
    run["migration"] = {"version_after": 17, "target_version": "17", "dirty": False}
    run["validation"] = {"failed_checks": [{"check": "data_lost"}]}
    run["app"] = {"criteria": record.app_criteria({"failed_requests": [], "median_ms": 250.0, "results": []},
                                                  0.75, 200, 0.7, 10)}
    run["redis"] = {"test_key_round_trip": "True"}
    verdicts = {item["criterion"]: item["result"] for item in record.criteria(run)}
    assert verdicts == {
        "All database migrations applied successfully": "pass",
        "No data loss or corruption detected": "fail",
        "New granular API endpoints are functional": "pass",
        "Average API response time < 200ms": "fail",
        "Cache hit ratio > 70%": "pass",
        "Redis settings applied and verified": "pass",
    }
    assert record.stats(run)["criteria"] == verdicts and record.stats(run)["failed_checks"] == 1


def test_app_criteria_explain_a_failed_request_and_no_measurement():
    smoke = {"failed_requests": ["threats"], "median_ms": None,
             "results": [{"name": "threats", "ok": False, "statuses": [500, 500]}, {"name": "docs", "ok": True}]}
    figures = record.app_criteria(smoke, None, 200, 0.7, 5)
    assert figures["errors"] == {"value": 1, "limit": 0, "passed": False, "detail": "threats answered [500, 500]"}
    assert figures["response_time"]["passed"] is False and "n/a ms" in figures["response_time"]["detail"]
    assert figures["hit_ratio"]["passed"] is False


def test_cache_figures_measure_the_window_only():
    figures = record.cache_figures(True, {"keyspace_hits": 10, "keyspace_misses": 5},
                                   {"keyspace_hits": 40, "keyspace_misses": 15, "used_memory_human": "1M"})
    assert (figures["hits"], figures["misses"], figures["hit_ratio"], figures["measured"]) == (30, 10, 0.75, True)
    assert record.cache_figures(False, {}, {})["hit_ratio"] is None


def test_auto_rollback_choice():
    clean, dirty = {"dirty": False}, {"dirty": True}
    damaged = {"validation": {"failed_checks": [{"check": "data_changed"}]}}
    assert record.rollback_choice("auto", clean, {}) == "planned"
    assert record.rollback_choice("auto", dirty, {}) == "emergency"
    assert record.rollback_choice("auto", {}, {}) == "emergency"  # the state could not be read
    assert record.rollback_choice("auto", clean, damaged) == "emergency"
    assert record.rollback_choice("planned", dirty, damaged) == "planned"
    failing_down = {"rehearsal": {"rehearsed": True, "up_ok": True, "down_ok": False, "reversible": False}}
    assert record.rollback_choice("auto", clean, failing_down) == "emergency"
    data_not_back = {"rehearsal": {"rehearsed": True, "up_ok": True, "down_ok": True, "data_restored": False}}
    assert record.rollback_choice("auto", clean, data_not_back) == "planned"
    schema_only = {"rehearsal": {"rehearsed": True, "up_ok": True, "down_ok": True, "data_restored": True,
                                 "schema_restored": False, "reversible": False}}
    assert record.rollback_choice("auto", clean, schema_only) == "planned"
    reversible = {"rehearsal": {"rehearsed": True, "up_ok": True, "down_ok": True, "data_restored": True,
                                "reversible": True}}
    assert record.rollback_choice("auto", clean, reversible) == "planned"


def test_a_failure_before_maintenance_mode_needs_no_rollback():
    run = record.new("r1", "db1")
    for phase in ("preflight", "backup", "rehearsal"):
        run = record.start_phase(run, phase)
    run["backup"] = {"verified": True, "path": "/b"}
    assert not record.touched(run)
    run = record.failed(run, {"msg": "The migration failed in the rehearsal"}, "Stop before production")
    assert record.rollback_outcome(run).startswith("none needed (production was not changed: the run stopped in "
                                                   "phase rehearsal")
    assert record.touched(record.start_phase(run, "maintenance"))


def test_the_rehearsal_verdict_for_awx():
    run = record.new("r1", "db1")
    assert record.stats(run)["rehearsal"] == "not run"
    run["rehearsal"] = {"rehearsed": False, "skipped": "nothing to migrate"}
    assert record.stats(run)["rehearsal"] == "skipped (nothing to migrate)"
    run["rehearsal"] = {"rehearsed": True, "up_ok": True, "reversible": False,
                        "up": [{"exclusive": {"public.metadata": 1.9}}, {"exclusive": {}}]}
    assert record.stats(run)["rehearsal"] == "ok; rollback would NOT work; longest ACCESS EXCLUSIVE 1.9 s"
    run["rehearsal"] = {"rehearsed": True, "up_ok": False, "error": "x"}
    assert record.stats(run)["rehearsal"] == "FAILED"


def test_check_mode_predictions():
    run = record.new("r1", "db1", check_mode=True)
    plan = [{"version": 16, "direction": "up"}, {"version": 17, "direction": "up"}]
    run["migration"] = {"version_before": 15, "target_version": 17, "plan": plan}
    run["redis"] = {"changed_settings": ["maxmemory-policy"], "after": {"maxmemory-policy": "allkeys-lru"},
                    "before": {"maxmemory-policy": "noeviction"}}
    assert record.would(run) == [
        "take no backup", "migrate from version 15 to 17 (up through 16, 17)",
        'set Redis maxmemory-policy="allkeys-lru" (now "noeviction")', "leave the config file as it is"]
    run["rehearsal"] = {"rehearsed": False, "would_rehearse": True}
    assert "rehearse the plan up and back down on that verified copy before touching production" in record.would(run)


def _write(path, document):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(document, handle)


def test_find_reads_newest_first_until_a_record_with_a_backup(tmp_path):
    _write(str(tmp_path / "old" / "run.json"), {"host": "db1", "backup": {"path": "/b/old"}, "finished": "x"})
    os.utime(tmp_path / "old" / "run.json", (1, 1))
    _write(str(tmp_path / "nothing" / "run.json"), {"host": "db1", "backup": {}})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{")
    warnings = []
    found = record.find(str(tmp_path), "db1", warn=warnings.append)
    assert found["found"] and found["record"]["backup"]["path"] == "/b/old" and found["read"] == 3
    assert len(warnings) == 1 and "unreadable" in warnings[0]
    assert not record.find(str(tmp_path), "db2")["found"]


def test_find_skips_a_check_mode_run_which_only_predicted_its_backup(tmp_path):
    _write(str(tmp_path / "real" / "run.json"), {"host": "db1", "backup": {"path": "/b/real"}})
    os.utime(tmp_path / "real" / "run.json", (1, 1))
    _write(str(tmp_path / "checked" / "run.json"), {"host": "db1", "check_mode": True, "backup": {"path": "/b/x"}})
    assert record.find(str(tmp_path), "db1")["record"]["backup"]["path"] == "/b/real"


def test_the_rollback_roles_record_spec_lists_every_key_of_the_record():
    """The automatic rollback validates the record it is given: a key the schema adds must be in the spec."""
    specs = yaml.safe_load((REPO / "roles" / "rollback" / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]["rollback_record"]["options"]
    assert set(options) == set(record.RUN) | set(record.SECTIONS)


def test_rolled_back_prefers_a_later_rollback_yml(tmp_path):
    run = {"host": "db1", "backup": {"path": "/b"}, "finished": "2026-11-24T01:00:00+00:00",
           "rollback": {"succeeded": False, "mode": "planned"}}
    _write(str(tmp_path / "r1" / "run.json"), run)
    _write(str(tmp_path / "r1" / "rollback.json"), {"started": "2026-11-24T02:00:00+00:00", "finished": "f",
                                                    "rollback": {"succeeded": True, "mode": "emergency",
                                                                 "version_after": 15}})
    earlier = record.find(str(tmp_path), "db1", run_id="r1")["rolled_back"]
    assert earlier["by"] == "rollback.yml" and earlier["mode"] == "emergency" and earlier["version_after"] == "15"
