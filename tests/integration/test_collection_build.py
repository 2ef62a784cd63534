"""`ansible-galaxy collection build` gives a tarball that installs offline and holds only the collection."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_build_and_offline_install(tmp_path):
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    tarball = next(tmp_path.glob("tmi-migration-*.tar.gz"))
    names = tarfile.open(tarball).getnames()
    assert "roles/validate/meta/argument_specs.yml" in names
    assert "plugins/module_utils/postgres.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", ".venv", ".build", "runs/", ".ci"))]

    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--offline",
                              "-p", str(tmp_path / "collections"), str(tarball)],
                             capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stderr
    installed = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list", "tmi.migration",
                                "-p", str(tmp_path / "collections")], capture_output=True, text=True, check=False)
    assert "tmi.migration" in installed.stdout and "0.1.0" in installed.stdout


def test_execution_environment_build_context(tmp_path):
    """ansible-builder create makes the EE build context; its Python pins are the collection's."""
    context = tmp_path / "context"
    created = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(REPO / "execution-environment.yml"),
                              "-c", str(context)], cwd=REPO, capture_output=True, text=True, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    assert (context / "Dockerfile").exists() or (context / "Containerfile").exists()
    built = context / "_build"
    def pins(path):
        return {line.split("#")[0].strip() for line in path.read_text().splitlines()} - {""}

    python = pins(built / "requirements.txt")
    runtime = {pin for pin in pins(REPO / "requirements.txt") if not pin.startswith("ansible==")}
    assert runtime <= python, f"execution environment misses {runtime - python}"
    bindep = (built / "bindep.txt").read_text()
    assert "postgresql" in bindep and "redis" in bindep
    assert "community.postgresql" in (built / "requirements.yml").read_text()
