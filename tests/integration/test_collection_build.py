"""`ansible-galaxy collection build` gives a tarball that installs offline and holds only the collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from tmi_testenv import fixture

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_build_and_offline_install_then_run_from_the_installed_copy(tmp_path, tmi_db):
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    tarball = next(tmp_path.glob("tmi-migration-*.tar.gz"))
    names = tarfile.open(tarball).getnames()
    assert "roles/validate/meta/argument_specs.yml" in names
    assert "plugins/module_utils/postgres.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", ".venv", ".build", "runs/", ".ci"))]

    # Away from the checkout (its ansible.cfg points at the source tree) and with --force: a copy
    # elsewhere (ansible-lint puts one in ~/.ansible/collections) would make it install nothing.
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "PYTHONPATH"))}
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--offline", "--force",
                              "-p", str(tmp_path / "collections"), str(tarball)],
                             cwd=tmp_path, env=clean, capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stderr
    installed = tmp_path / "collections" / "ansible_collections" / "tmi" / "migration"
    assert (installed / "plugins" / "modules" / "pg_migrate.py").is_file(), install.stdout
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == "0.1.0"

    # An execution environment that installs the collection gets its Python libraries and system packages
    # (ansible-builder reads meta/execution-environment.yml of the installed copy).
    introspected = subprocess.run([str(BIN / "ansible-builder"), "introspect", str(tmp_path / "collections")],
                                  capture_output=True, text=True, check=False)
    assert introspected.returncode == 0, introspected.stderr
    wanted = yaml.safe_load(introspected.stdout)
    assert "psycopg2-binary==2.9.13  # from collection tmi.migration" in wanted["python"], wanted
    assert "postgresql18 [platform:rpm]  # from collection tmi.migration" in wanted["system"], wanted

    # A playbook run from the installed copy only: no checkout, no ansible.cfg of the repo.
    tmi_db.migrate(15)
    workdir = tmp_path / "operator"
    workdir.mkdir()
    (workdir / "status.yml").write_text(PLAYBOOK)
    env = {**clean, "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"),
           "TMI_PG": json.dumps(tmi_db.module_args()), "TMI_MIGRATIONS": str(fixture.MIGRATIONS_DIR)}
    run = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "status.yml", "-vvv",
                          "-e", f"ansible_python_interpreter={sys.executable}"],
                         cwd=workdir, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"Using module file {tmp_path / 'collections'}/ansible_collections/tmi/migration/plugins/modules/" \
           "pg_migrate.py" in run.stdout
    assert "schema version 15, plan: 16, 17" in run.stdout
    assert tmi_db.module_args()["login_password"] not in run.stdout


PLAYBOOK = """\
- name: Read the schema state with the installed collection
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Status
      tmi.migration.pg_migrate:
        path: "{{ lookup('env', 'TMI_MIGRATIONS') }}"
        operation: status
        target_version: latest
        login_host: "{{ (lookup('env', 'TMI_PG') | from_json).login_host }}"
        login_port: "{{ (lookup('env', 'TMI_PG') | from_json).login_port }}"
        login_user: "{{ (lookup('env', 'TMI_PG') | from_json).login_user }}"
        login_password: "{{ (lookup('env', 'TMI_PG') | from_json).login_password }}"
        login_db: "{{ (lookup('env', 'TMI_PG') | from_json).login_db }}"
      register: state
    - name: Show it
      ansible.builtin.debug:
        msg: "schema version {{ state.version_before }}, plan: {{ state.plan | map(attribute='version') | join(', ') }}"
"""


def test_ansible_doc_renders_every_module_and_role():
    modules = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".build" / "collections")}
    for kind, names in (("module", modules), ("role", roles)):
        done = subprocess.run([str(BIN / "ansible-doc"), "-t", kind, *[f"tmi.migration.{n}" for n in names]],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0 and "[WARNING]" not in done.stderr and "ERROR" not in done.stderr, done.stderr
        for name in names:
            assert f"tmi.migration.{name}" in done.stdout
    listed = subprocess.run([str(BIN / "ansible-doc"), "-l", "tmi.migration"], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False).stdout
    assert sorted(line.split()[0].rsplit(".", 1)[-1] for line in listed.splitlines() if line.strip()) == modules


def test_execution_environment_build_context(tmp_path):
    """ansible-builder create makes the EE build context offline (about 2 s): the collection's Python pins, the
    tested ansible-core, the collections' ranges, and PostgreSQL 18 client tools from PGDG proven at build time."""
    context = tmp_path / "context"
    created = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(REPO / "execution-environment.yml"),
                              "-c", str(context)], cwd=REPO, capture_output=True, text=True, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    containerfile = next(path for path in (context / "Containerfile", context / "Dockerfile")
                         if path.exists()).read_text()
    built = context / "_build"

    def pins(path):
        return {line.split("#")[0].strip() for line in path.read_text().splitlines()} - {""}

    python = pins(built / "requirements.txt")
    runtime = {pin for pin in pins(REPO / "requirements.txt") if not pin.startswith(("ansible==", "ansible-core=="))}
    assert runtime <= python, f"execution environment misses {runtime - python}"
    core = next(pin for pin in pins(REPO / "requirements.txt") if pin.startswith("ansible-core=="))
    assert f'ARG ANSIBLE_INSTALL_REFS="{core} ansible-runner==' in containerfile

    bindep = pins(built / "bindep.txt")
    assert {"postgresql18 [platform:rpm]", "redis [platform:rpm]"} <= bindep, bindep
    galaxy = yaml.safe_load((built / "requirements.yml").read_text())["collections"]
    assert {entry["name"]: entry["version"] for entry in galaxy} == \
        yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]

    # The final stage: the PGDG repository before the bindep packages are installed, then the build-time proof
    # that pg_dump is 18 and redis-cli 6 or newer.
    final = containerfile[containerfile.index("AS final"):]
    repo = final.index("download.postgresql.org/pub/repos/yum/reporpms/EL-9-")
    install = final.index("/output/scripts/install-from-bindep")
    proof = final.index("pg_dump --version | grep -Eq '^pg_dump \\(PostgreSQL\\) 18\\.'")
    assert repo < install < proof
    assert "redis-cli --version" in final[proof:]
