"""The run record (module_utils/record.py) as the playbooks write it: one shape for migrate.yml's automatic
rollback and rollback.yml, and results frozen when their phase ends."""

from __future__ import annotations

import json

from ansible_collections.tmi.migration.plugins.module_utils import record as schema


def keys(document: dict) -> set[str]:
    return set(document)


def test_rollback_yml_and_the_automatic_rollback_write_records_of_the_same_shape(environment):
    before = environment.state()
    # A Redis value the server refuses fails the redis phase after the backup: rolled back automatically.
    failed = environment.playbook("migrate.yml", "-e", json.dumps(
        {"tmi_run_id": "auto-rb", "redis_config_settings": {"maxmemory-policy": "not-a-policy"}}))
    assert failed.returncode != 0, failed.stdout[-3000:]
    assert environment.state() == before
    automatic = json.loads((environment.tmp_path / "runs" / "auto-rb" / "run.json").read_text())
    assert automatic["rollback"]["succeeded"] is True and automatic["rollback"]["mode"] == "planned"
    # The failure is named in the record, the report and the last message, rollback included.
    assert automatic["failed"] is True and automatic["failed_phase"] == "redis"
    report = (environment.tmp_path / "runs" / "auto-rb" / "run.md").read_text()
    assert "| redis | failed |" in report and "— FAILED" in report
    # The callback folds long messages: compare with the whitespace normalised.
    message = " ".join(failed.stdout[failed.stdout.rfind("Phase "):].split())
    assert message.startswith("Phase redis failed at ")
    # The HTML report beside them, named where run.md is; its timeline has the failed phase and the rollback.
    page = (environment.tmp_path / "runs" / "auto-rb" / "run.html").resolve()
    assert f"report {page.with_suffix('.md')}, HTML report {page}" in " ".join(failed.stdout.split())
    drawn = page.read_text()
    assert 'data-phase="redis" data-result="failed"' in drawn and 'data-phase="rollback"' in drawn
    assert "-- Rollback: " in message and " succeeded, the database is back at version 15" in message
    # The migration section is the forward migration's, not what the rollback's own reads of the state returned.
    assert str(automatic["migration"]["version_before"]) == "15"
    assert str(automatic["migration"]["version_after"]) == "17"

    migrated = environment.playbook("migrate.yml", "-e", "tmi_run_id=by-hand")
    assert migrated.returncode == 0, migrated.stdout[-3000:]
    rolled = environment.playbook("rollback.yml", "-e", "tmi_rollback_of=by-hand")
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    assert environment.state() == before
    by_hand = json.loads((environment.tmp_path / "runs" / "by-hand" / "rollback.json").read_text())
    assert 'data-phase="rollback" data-result="rolled back"' in (
        environment.tmp_path / "runs" / "by-hand" / "rollback.html").read_text()

    expected = set(schema.RUN) | set(schema.SECTIONS)
    assert keys(automatic) == keys(by_hand) == expected
    assert keys(automatic["rollback"]) == keys(by_hand["rollback"])
    assert set(schema.ROLLBACK) <= keys(by_hand["rollback"])
    assert by_hand["run_id"] == "by-hand" and by_hand["rollback"]["succeeded"] is True
    assert [phase["phase"] for phase in by_hand["phases"]] == ["lock", "rollback"]
    assert [phase["phase"] for phase in automatic["phases"]][-2:] == ["redis", "rollback"]
    assert [phase["result"] for phase in automatic["phases"]][-2:] == ["failed", "rolled back"]
    for document in (automatic, by_hand):
        assert all(phase["duration"] >= 0 for phase in document["phases"])
