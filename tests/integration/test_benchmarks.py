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
    ("figures", [], {"tables", "table_bytes", "whole_database", "ratio_md5_to_hash64"}),
    ("backup", [], {"runbook_seconds", "runbook_steps", "role_seconds", "bare_parallel_seconds", "ratio",
                    "role_tasks"}),
    ("restore", [], {"restore_seconds", "bare_pg_restore_seconds", "planned_rollback_seconds", "ratio",
                     "restore_tasks"}),
    ("orchestration", [], {"parts", "phases", "migrate_seconds", "tasks", "slowest_tasks", "ratio", "targets"}),
    ("online_migration", ["--rate", "50"], {"ways", "threats", "target"}),
    ("progress", ["--steps", "2", "--sleep", "1"], {"runs", "short_step_cost_ms", "long_step_cost_ms", "own_work_ms"}),
    # migrate.yml under both loads, at low rates, the collection's way only (the runbook's way differs by extra
    # variables alone): the longest of these
    ("application", ["--rate", "5", "--pgbench-rate", "10", "--ways", "collection"],
     {"ways", "threats", "target", "endpoints", "app_hosts"}),
]
TIMEOUTS = {"application": 1200}  # seconds; 600 for the others
MISSED = 3  # benchlib's exit status for "ran, target missed"


@pytest.mark.parametrize(("name", "extra", "keys"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_benchmark_runs_and_writes_its_results(name, extra, keys, tmp_path):
    scale = 40
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--scale", str(scale),
                             "--repeat", "1", "--out", str(tmp_path), *extra], cwd=REPO, capture_output=True,
                            text=True, check=False, timeout=TIMEOUTS.get(name, 600))
    assert result.returncode in (0, MISSED), result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / f"{name}-{scale}.json").read_text())
    assert keys <= set(figures), sorted(keys - set(figures))
    assert figures["benchmark"] == name and figures["rows"] > 0 and figures["machine"]["cpus"] >= 1
    png = tmp_path / f"{name}-{scale}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results:" in result.stdout
    for profiled in ("role_tasks", "restore_tasks", "slowest_tasks"):  # parsed from profile_tasks' recap
        if profiled in figures:
            assert figures[profiled] and all(t["task"] and t["seconds"] >= 0 for t in figures[profiled]), figures
    if name == "online_migration":
        collection = figures["ways"]["collection"]["whole_migration"]
        assert collection["transactions"] > 0, "the client load ran during the migration"
    if name == "application":
        check_application_figures(figures)


def check_application_figures(figures: dict) -> None:
    """Each way has the figures of the whole run and of every phase, and they add up."""
    assert set(figures["ways"]) == {"collection"} and figures["app_hosts"] == 2
    for way, data in figures["ways"].items():
        windows = data["windows"]
        phases = [p["phase"] for p in data["phases"]]
        assert {"preflight", "backup", "maintenance", "migrate", "validate", "app"} <= set(phases), (way, phases)
        assert set(windows) == {"whole run", *phases}
        whole = windows["whole run"]
        for window, f in windows.items():
            for endpoint in ("all", *figures["endpoints"]):
                h = f["http"][endpoint]
                outcomes = h["ok"] + h["failed_5xx"] + h["refused"] + h["reset"] + h["timeouts"] + h["other"]
                assert h["requests"] == outcomes, (way, window, endpoint, h)
                assert 0 <= h["longest_without_success_s"] <= f["seconds"] + 0.01, (way, window, endpoint, h)
            assert f["http"]["all"]["requests"] <= whole["http"]["all"]["requests"]
        assert whole["http"]["all"]["ok"] > 0 and whole["pgbench"]["transactions"] > 0, way
        assert sum(windows[p]["http"]["all"]["requests"] for p in phases) <= whole["http"]["all"]["requests"]
        for endpoint in figures["endpoints"]:
            assert whole["http"][endpoint]["ok"] > 0, (way, endpoint)
    # 000017 runs in a maintenance window of its own: the harness sees its 503 answers, and a stall at least as
    # long as the phase. The two hosts restart one at a time behind the load balancer: no request is refused or
    # reset, no write fails, while the application phase restarts them.
    windows = figures["ways"]["collection"]["windows"]
    migrate = windows["migrate"]["http"]["all"]
    assert migrate["requests"] > 0 and migrate["maintenance_503"] == migrate["requests"], migrate
    assert windows["whole run"]["http"]["all"]["longest_without_success_s"] >= windows["migrate"]["seconds"]
    app = windows["app"]["http"]
    assert app["all"]["requests"] > 0 and app["all"]["refused"] == app["all"]["reset"] == 0, app["all"]
    assert app["failed_writes"] == 0 and app["all"]["ok"] == app["all"]["requests"], app["all"]
