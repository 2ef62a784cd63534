"""module_defaults: group/tmi.migration.postgresql reaches community.postgresql's modules as well as its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from tmi_testenv import fixture


def test_one_module_defaults_group_connects_community_postgresql_and_tmi_migration_modules(tmi_db):
    tmi_db.migrate(15)
    connection = tmi_db.module_args()
    env = {**os.environ, "TMI_TEST_PG": json.dumps(connection),
           "TMI_MIGRATIONS_PATH": str(fixture.MIGRATIONS_DIR), "ANSIBLE_FORCE_COLOR": "0"}
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}",
                          str(REPO / "tests" / "integration" / "playbooks" / "module_defaults_group.yml")],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    # Neither task names a connection option: the server, port, password and database came from the group alone
    # (without them community.postgresql would try port 5432 and the database postgres).
    said = " ".join(run.stdout.split())
    assert (f"community.postgresql reached {tmi_db.name} on port {connection['login_port']}; "
            "tmi.migration read version 15") in said, run.stdout[-2000:]
    assert connection["login_password"] not in run.stdout
