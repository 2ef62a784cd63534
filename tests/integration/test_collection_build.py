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
