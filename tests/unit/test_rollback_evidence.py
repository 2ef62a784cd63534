"""Pure functions behind the rollback's decisions: which earlier rollback stands (run_record) and which
databases earlier swaps kept may go (pg_restore_backup)."""

from __future__ import annotations

import json

from ansible_collections.tmi.migration.plugins.module_utils.record import rolled_back
from ansible_collections.tmi.migration.plugins.module_utils.restore import kept_comment, kept_from, old_to_drop

RUN = {"run_id": "r1", "finished": "2026-11-24T01:30:00.000001+00:00", "rollback": {}}
ROLLBACK = {"started": "2026-11-24T02:00:00.5+00:00", "finished": "2026-11-24T02:01:00+00:00",
            "rollback": {"succeeded": True, "mode": "emergency", "requested_mode": "emergency", "version_after": "15"}}


def test_a_rollback_after_the_run_stands():
    found = rolled_back(RUN, "/runs/r1/run.json", ROLLBACK, "/runs/r1/rollback.json")
    assert found == {"by": "rollback.yml", "record": "/runs/r1/rollback.json", "mode": "emergency",
                     "requested_mode": "emergency", "started": ROLLBACK["started"], "finished": ROLLBACK["finished"],
                     "version_after": "15"}


def test_a_failed_latest_rollback_or_none_means_not_rolled_back():
    failed = {**ROLLBACK, "rollback": {**ROLLBACK["rollback"], "succeeded": False}}
    assert rolled_back(RUN, "/r/run.json", failed, "/r/rollback.json") == {}
    assert rolled_back(RUN, "/r/run.json", None, "/r/rollback.json") == {}


def test_a_run_migrated_again_after_its_rollback_is_not_rolled_back():
    again = {**RUN, "finished": "2026-11-24T03:00:00+00:00"}
    assert rolled_back(again, "/r/run.json", ROLLBACK, "/r/rollback.json") == {}


def test_the_automatic_rollback_in_the_run_record_counts_unless_a_later_attempt_failed():
    auto = {**RUN, "rollback": {"succeeded": True, "mode": "planned", "version_after": 15}}
    found = rolled_back(auto, "/r/run.json", None, "/r/rollback.json")
    assert found["by"] == "migrate.yml" and found["record"] == "/r/run.json" and found["version_after"] == "15"
    failed = {**ROLLBACK, "rollback": {"succeeded": False}}
    assert rolled_back(auto, "/r/run.json", failed, "/r/rollback.json") == {}


def comment(live, when):
    return kept_comment(live, "/backups/x", when)


def test_old_to_drop_keeps_the_newest_attributed_and_never_touches_others():
    live, pattern = "tmi", r"tmi_before_restore_[a-z0-9_]{1,24}"
    databases = [
        ("tmi", 1, None),
        ("tmi_before_restore_a", 10, comment("tmi", "2026-01-01T00:00:00Z")),
        ("tmi_before_restore_b", 11, comment("tmi", "2026-01-02T00:00:00Z")),
        ("tmi_before_restore_c", 5, comment("tmi", "2026-01-03T00:00:00Z")),  # older oid, newer swap
        ("tmi_before_restore_new", 12, comment("tmi", "2026-01-04T00:00:00Z")),
        ("tmi_before_restore_hand", 13, None),
        ("tmi_before_restore_other", 14, comment("tmi_other", "2026-01-05T00:00:00Z")),
        ("tmi_before_restore_" + "x" * 25, 15, comment("tmi", "2025-01-01T00:00:00Z")),
        ("tmix_before_restore_a", 16, comment("tmi", "2025-01-01T00:00:00Z")),
    ]
    drop, kept, unattributed = old_to_drop(databases, live, pattern, 2, "tmi_before_restore_new")
    assert drop == ["tmi_before_restore_b", "tmi_before_restore_a"]
    assert kept == ["tmi_before_restore_new", "tmi_before_restore_c"]
    assert unattributed == ["tmi_before_restore_hand", "tmi_before_restore_other"]
    assert old_to_drop(databases, live, pattern, 1, "tmi_before_restore_new")[0] == [
        "tmi_before_restore_c", "tmi_before_restore_b", "tmi_before_restore_a"]


def test_kept_from_reads_only_the_comment_a_swap_writes():
    assert kept_from(comment("tmi", "2026-01-01T00:00:00Z"))["was"] == "tmi"
    assert kept_from("kept by hand") is None
    assert kept_from(None) is None
    assert kept_from(json.dumps({"was": "tmi"})) is None
