"""migrate.yml run through ansible-runner the way AWX runs a job template.

A private data directory with the extra vars in env/extravars (the answers to awx/surveys/migrate.json, as AWX
sends them: strings for text and multiple-choice questions), the
credentials injected as environment variables (env/envvars, as AWX's credential types do),
no TTY and no prompts; afterwards the set_stats artifacts AWX shows come from the
playbook_on_stats event.

The one run also carries the proofs of a plain successful migrate.yml:

* at 200 threat models the planner's plan runs clean: no failed check, every warning a warning;
* at -vvv (verbosity 3) no secret (database and Redis passwords, the application's token) is in the
  output, the run record holds the pre-flight's server versions and is readable by its owner only;
* a database named with 62 bytes of multibyte characters migrates, and the verification copy's name
  is cut on a character boundary to fit PostgreSQL's 63 bytes;
* checks and steps the pre-flight already made are not made again by later phases (each is a module call):
  the backup and Redis pre-flight checks run once, and the run directory is created once for the checkpoints
  and the final record.
"""

from __future__ import annotations

import json
import os

import ansible_runner
import yaml

from conftest import COLLECTIONS, REPO, Database, tmi_install


def survey_answers(survey: str) -> dict:
    """What AWX sends for a survey answered with its defaults: an optional question left empty is not sent."""
    spec = json.loads((REPO / "awx" / "surveys" / f"{survey}.json").read_text())["spec"]
    return {question["variable"]: question["default"] for question in spec
            if question["required"] or question["default"] not in ("", None)}


def test_migrate_job_template_through_ansible_runner(pg_server, redis_server, tmp_path):
    name = "ü" * 28 + f"{os.getpid() % 1000000:06d}"
    assert len(name.encode()) == 62
    tmi_db = Database(pg_server, name)
    try:
        with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=15, threat_models=200,
                         seed=3) as (standin, env):
            private = tmp_path / "private"
            (private / "env").mkdir(parents=True)
            credentials = {key: value for key, value in env.items() if key.startswith("TMI_")}
            (private / "env" / "envvars").write_text(yaml.safe_dump(
                {**credentials, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PYTHONPATH": str(REPO / "tests")}))
            answers = {**survey_answers("migrate"), "tmi_target_version": "17"}
            (private / "env" / "extravars").write_text(yaml.safe_dump({**answers, "tmi_run_id": "multibyte-run"}))
            (private / "env" / "envvars").chmod(0o600)

            run = ansible_runner.run(private_data_dir=str(private), project_dir=str(REPO),
                                     playbook="playbooks/migrate.yml", inventory=str(REPO / "inventories" / "local"),
                                     verbosity=3, quiet=True)
            assert run.status == "successful" and run.rc == 0, run.stdout.read()[-4000:]
        assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(17, False)]
    finally:
        tmi_db.drop()

    stats = next(event for event in run.events if event["event"] == "playbook_on_stats")
    artifacts = stats["event_data"]["artifact_data"]["tmi_migration"]["tmi_local"]
    assert artifacts["failed"] is False and artifacts["rollback"] == "none"
    assert (artifacts["version_before"], artifacts["version_after"]) == (15, 17)
    assert artifacts["backup_verified"] is True and artifacts["failed_checks"] == 0
    assert all(result in ("pass", "n/a") for result in artifacts["criteria"].values()), artifacts["criteria"]

    ran = [event["event_data"]["task"] for event in run.events if event["event"] == "runner_on_ok"]
    checked_once = (
        "Read whether the database user may create, rename and drop the databases of a restore",
        "Read the settings the phase will set, in check mode (CONFIG GET is refused when CONFIG is not allowed)",
        "Create the backup directories with private permissions",
        "Create the run directory",
    )
    for once in checked_once:
        assert ran.count(once) == 1, (once, ran.count(once))  # a loop's items are runner_item_on_ok events
    assert ran.count("Write the run record's checkpoint") >= 2 and "Write the run record" in ran

    stdout = run.stdout.read()
    assert "ESTABLISH LOCAL CONNECTION FOR USER" in stdout, "the run is at -vvv"
    for secret in (env["TMI_PG_PASSWORD"], env["TMI_REDIS_PASSWORD"], standin.token):
        assert secret not in stdout
    assert pg_server.password not in stdout and redis_server.password not in stdout
    run_json = tmp_path / "runs" / "multibyte-run" / "run.json"
    record = json.loads(run_json.read_text())
    assert record["run_id"] == artifacts["run_id"]
    assert not record["validation"]["failed_checks"]
    assert all(w["severity"] == "warning" for w in record["validation"]["warnings"])
    assert record["preflight"]["postgresql_version"].startswith(pg_server.server_version.split(".")[0])
    assert record["preflight"]["redis_version"] == redis_server.server_version
    assert oct(run_json.stat().st_mode & 0o777) == "0o600"
    assert record["backup"]["verified"] is True
    scratch = record["backup"]["verify_database"]
    assert scratch == "ü" * 15 + "_verify_multibyte_run" and len(scratch.encode()) <= 63
