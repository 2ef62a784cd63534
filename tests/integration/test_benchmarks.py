"""Every benchmark in benchmarks/ still runs with its one command and writes its JSON and plot.

At a tiny scale and one round, so that a change to the collection that breaks a benchmark
shows here. No timing is asserted: the figures in docs/benchmarks.md come from the
benchmarks run at their documented scales, never from tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

# name, extra arguments, keys its JSON must hold
BENCHMARKS = [
    ("validation", [], {"psql_seconds", "role_seconds", "ratio", "median_ratio"}),
    ("backup", [], {"runbook_seconds", "runbook_steps", "role_seconds", "bare_parallel_seconds", "ratio"}),
    ("restore", [], {"restore_seconds", "bare_pg_restore_seconds", "planned_rollback_seconds", "ratio"}),
    ("orchestration", [], {"parts", "phases", "migrate_seconds", "tasks", "slowest_tasks", "ratio", "targets"}),
    ("online_migration", ["--rate", "50"], {"ways", "threats", "target"}),
]
MISSED = 3  # benchlib's exit status for "ran, target missed"


@pytest.mark.parametrize(("name", "extra", "keys"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_benchmark_runs_and_writes_its_results(name, extra, keys, tmp_path):
    scale = 40
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--scale", str(scale),
                             "--repeat", "1", "--out", str(tmp_path), *extra], cwd=REPO, capture_output=True,
                            text=True, check=False, timeout=600)
    assert result.returncode in (0, MISSED), result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / f"{name}-{scale}.json").read_text())
    assert keys <= set(figures), sorted(keys - set(figures))
    assert figures["benchmark"] == name and figures["rows"] > 0 and figures["machine"]["cpus"] >= 1
    png = tmp_path / f"{name}-{scale}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results:" in result.stdout
    if name == "online_migration":
        collection = figures["ways"]["collection"]["whole_migration"]
        assert collection["transactions"] > 0, "the client load ran during the migration"
