"""The collection's dependencies are stated once, in agreement, everywhere they are stated.

galaxy.yml (what ansible-galaxy resolves), meta/ee/requirements.yml (what the execution
environment installs), collections/requirements.yml (what AWX installs for a project) and
requirements.txt (what is tested: the ansible package's bundled collections, ansible-core) must
name the same collection ranges, Python pins and ansible-core; and the execution environment's
pg_dump must be able to dump every PostgreSQL major the test suite runs against.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import ansible_collections
import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())


def _load(path: str):
    return yaml.safe_load((REPO / path).read_text())


def _pins(path: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a pip requirements file."""
    pins = {}
    for line in (REPO / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            assert "==" in line, f"{path}: {line!r} is not pinned with =="
            name, version = line.split("==", 1)
            pins[name.lower()] = version
    return pins


def _collection_ranges(path: str) -> dict[str, str]:
    """name -> version range of the Galaxy collections (not git sources) of a requirements.yml."""
    return {entry["name"]: entry["version"] for entry in _load(path)["collections"] if entry.get("type") != "git"}


def _installed_collection_version(fqcn: str) -> str:
    namespace, name = fqcn.split(".")
    for root in ansible_collections.__path__:
        manifest = Path(root) / namespace / name / "MANIFEST.json"
        if manifest.is_file():
            return json.loads(manifest.read_text())["collection_info"]["version"]
    raise AssertionError(f"{fqcn} is not installed beside ansible (requirements.txt's ansible package)")


def test_every_list_of_collections_names_galaxy_ymls_ranges():
    dependencies = GALAXY["dependencies"]
    assert set(dependencies) == {"community.postgresql", "community.general"}
    assert _collection_ranges("meta/ee/requirements.yml") == dependencies
    assert _collection_ranges("collections/requirements.yml") == dependencies


def test_the_tested_collections_are_inside_galaxy_ymls_ranges():
    """The ansible package of requirements.txt is what the tests run with; its collections must fit the ranges."""
    assert metadata.version("ansible") == _pins("requirements.txt")["ansible"]
    for fqcn, wanted in GALAXY["dependencies"].items():
        version = _installed_collection_version(fqcn)
        assert meets_requirements(version, wanted), f"tested {fqcn} {version} is outside galaxy.yml's {wanted}"


def test_the_python_pins_of_the_execution_environment_are_requirements_txts():
    runtime = {name: version for name, version in _pins("requirements.txt").items()
               if name not in ("ansible", "ansible-core")}
    assert _pins("meta/ee/requirements.txt") == runtime


def test_requires_ansible_and_the_execution_environment_name_the_tested_ansible_core():
    core = _pins("requirements.txt")["ansible-core"]
    assert metadata.version("ansible-core") == core, "the venv runs another ansible-core than requirements.txt pins"
    requires = SpecifierSet(_load("meta/runtime.yml")["requires_ansible"])
    assert core in requires
    # Only 2.19 is tested: neither the release before nor the one after is allowed.
    assert "2.18.99" not in requires and "2.20.0" not in requires and "2.19.0" in requires
    ee = _load("execution-environment.yml")["dependencies"]
    assert ee["ansible_core"]["package_pip"] == f"ansible-core=={core}"
    assert ee["ansible_runner"]["package_pip"] == f"ansible-runner=={_pins('requirements-dev.txt')['ansible-runner']}"


def test_meta_execution_environment_points_at_the_collections_own_requirement_files():
    """ansible-builder reads it in an installed collection: the paths are relative to its root and shipped."""
    introspected = _load("meta/execution-environment.yml")["dependencies"]
    ee = _load("execution-environment.yml")["dependencies"]
    assert introspected == {"python": ee["python"], "system": ee["system"]}
    for path in introspected.values():
        assert not Path(path).is_absolute() and (REPO / path).is_file()
        assert not any(path == ignored or path.startswith(f"{ignored}/") for ignored in GALAXY["build_ignore"])


def test_collections_requirements_install_this_release_from_its_repository():
    sources = [entry for entry in _load("collections/requirements.yml")["collections"] if entry.get("type") == "git"]
    assert sources == [{"name": f"{GALAXY['repository']}.git", "type": "git", "version": GALAXY["version"]}]


def _tested_server_majors() -> set[int]:
    """Every PostgreSQL major a test command starts: make test's default and pairs, make test-matrix."""
    makefile = (REPO / "Makefile").read_text()
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    pairs = re.search(r"^MATRIX \?= (.+)$", makefile, re.M).group(1).split()
    pairs += re.search(r'^standard_pairs="([^"]+)"', test_sh, re.M).group(1).split()
    majors = {int(pair.split(":")[0]) for pair in pairs}
    majors.add(int(re.search(r'pg="\$\{TMI_PG_VERSION:-(\d+)\}"', test_sh).group(1)))
    return majors


def test_the_execution_environments_pg_dump_dumps_every_tested_server_major():
    servers = _tested_server_majors()
    assert {15, 17, 18} <= servers, servers
    bindep = (REPO / "meta" / "ee" / "bindep.txt").read_text()
    steps = "\n".join(step for steps in _load("execution-environment.yml")["additional_build_steps"].values()
                      for step in steps)
    named = {
        "bindep rpm": re.findall(r"^postgresql(\d+) \[platform:rpm\]$", bindep, re.M),
        "bindep dpkg": re.findall(r"^postgresql-client-(\d+) \[platform:dpkg\]$", bindep, re.M),
        "EE links onto PATH": re.findall(r"/usr/pgsql-(\d+)/bin", steps),
        "EE build-time check": re.findall(r"pg_(?:dump|restore) \\\(PostgreSQL\\\) (\d+)", steps),
    }
    assert all(named.values()), f"the execution environment does not name its PostgreSQL client major: {named}"
    majors = {int(major) for found in named.values() for major in found}
    assert len(majors) == 1, f"the execution environment names more than one PostgreSQL client major: {named}"
    client = majors.pop()
    assert client >= max(servers), f"pg_dump {client} cannot dump PostgreSQL {max(servers)}"
    # The distribution's older client must not come back: no module enabled, no unversioned package.
    assert "module enable postgresql" not in steps and not re.search(r"^postgresql(-client)? \[", bindep, re.M)


def test_the_postgresql_group_extends_community_postgresqls():
    group = _load("meta/runtime.yml")["action_groups"]["postgresql"]
    assert group[0] == {"metadata": {"extend_group": ["community.postgresql.all"]}}
    modules = {p.stem for p in (REPO / "plugins" / "modules").glob("pg_*.py")}
    assert set(group[1:]) == modules
    namespace_root = next(Path(root) for root in ansible_collections.__path__
                          if (Path(root) / "community" / "postgresql").is_dir())
    theirs = yaml.safe_load((namespace_root / "community" / "postgresql" / "meta" / "runtime.yml").read_text())
    assert "postgresql_query" in theirs["action_groups"]["all"]
