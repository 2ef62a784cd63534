"""migrate.yml run through ansible-runner the way AWX runs a job template.

A private data directory with the extra vars in env/extravars (a survey's answers), the
credentials injected as environment variables (env/envvars, as AWX's credential types do),
no TTY and no prompts; afterwards the set_stats artifacts AWX shows come from the
playbook_on_stats event.
"""

from __future__ import annotations

import json

import ansible_runner
import yaml

from conftest import COLLECTIONS, REPO, tmi_install


def test_migrate_job_template_through_ansible_runner(pg_server, redis_server, tmi_db, tmp_path):
    with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=15, threat_models=5, seed=3) as (standin, env):
        private = tmp_path / "private"
        (private / "env").mkdir(parents=True)
        credentials = {key: value for key, value in env.items() if key.startswith("TMI_")}
        (private / "env" / "envvars").write_text(yaml.safe_dump(
            {**credentials, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PYTHONPATH": str(REPO / "tests")}))
        (private / "env" / "extravars").write_text(yaml.safe_dump({"tmi_target_version": 17, "tmi_serial": 1}))
        (private / "env" / "envvars").chmod(0o600)

        run = ansible_runner.run(private_data_dir=str(private), project_dir=str(REPO),
                                 playbook="playbooks/migrate.yml", inventory=str(REPO / "inventories" / "local"),
                                 quiet=True)
        assert run.status == "successful" and run.rc == 0, run.stdout.read()[-4000:]

        stats = next(event for event in run.events if event["event"] == "playbook_on_stats")
        artifacts = stats["event_data"]["artifact_data"]["tmi_migration"]["tmi_local"]
        assert artifacts["failed"] is False and artifacts["rollback"] == "none"
        assert (artifacts["version_before"], artifacts["version_after"]) == (15, 17)
        assert artifacts["backup_verified"] is True and artifacts["failed_checks"] == 0
        assert all(result in ("pass", "n/a") for result in artifacts["criteria"].values()), artifacts["criteria"]

        stdout = run.stdout.read()
        for secret in (env["TMI_PG_PASSWORD"], env["TMI_REDIS_PASSWORD"], standin.token):
            assert secret not in stdout
        record = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
        assert record["run_id"] == artifacts["run_id"]
