"""The HTML report (run.html) in a real headless Chromium, written by the report role from recorded runs.

The records under tests/fixtures/records are run.json files of real migrate.yml runs (make demo's run with a
maintenance window, and a run whose 000017 failed in production and was rolled back by restoring the backup),
with their paths made neutral. The report role writes their reports exactly as at the end of a run, in one
ansible-playbook run with no server; the browser loads each page and the tests read what it drew, what it
logged to the console and what it would have fetched. That migrate.yml and rollback.yml write run.html at
all is asserted by the tests that run them (test_run_record, test_fault_injection).

Chromium comes from Debian's package ``chromium``; without it these tests are skipped, except in CI
(``CI`` set), where .ci/run installs it and a missing browser fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tmi_testenv.browser import Browser, find_chromium

RECORDS = REPO / "tests" / "fixtures" / "records"
PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "report_role.yml"
HOSTILE_TITLE = '<script>console.error("injected")</script><img src=x onerror="console.error(1)">'
HOSTILE_ERROR = '"><svg onload="console.error(2)"></svg></text><script>console.error(3)</script> | **x**'


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Chromium is not installed: CI must test the HTML report in a browser (.ci/run installs the "
                        "Debian package chromium as root)")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium): the HTML report is not tested in "
                    "a browser")
    with Browser(binary) as browser:
        yield browser


def hostile(record: dict) -> dict:
    """The window run's record with markup where a migration file's name, a table, an error and the run id go."""
    record = json.loads(json.dumps(record))
    record["run_id"] = '"><script>console.error("id")</script>'
    record["failed"], record["failed_phase"], record["error"] = True, "migrate", HOSTILE_ERROR
    record["migration"]["applied"][1]["title"] = HOSTILE_TITLE
    record["migration"]["plan"][1]["title"] = HOSTILE_TITLE
    statement = record["rehearsal"]["up"][1]["statements"][0]
    statement["taken"] = {HOSTILE_TITLE: "ACCESS EXCLUSIVE"}
    statement["held"] = {HOSTILE_TITLE: 0.5}
    record["window"]["lines"].append(HOSTILE_ERROR)
    return record


def write_reports(root: Path) -> dict[str, Path]:
    """run.html (and run.md) of each recorded run, by name, written by the report role in one ansible-playbook run."""
    sources = {"window": RECORDS / "window.json", "emergency-rollback": RECORDS / "emergency-rollback.json"}
    injected = root / "hostile.json"
    injected.write_text(json.dumps(hostile(json.loads(sources["window"].read_text()))))
    sources["hostile"] = injected
    records = {name: {"path": str(path), "dir": str(root / name)} for name, path in sources.items()}
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", ",".join(records) + ",",
                             str(PLAYBOOK), "-e", json.dumps({"records": records})],
                            cwd=REPO, env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"}, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {name: root / name for name in sources}


def facts(page) -> dict:
    """What the browser drew: the bars of each kind, their sizes, scripts and event handlers."""
    return page.evaluate("""(() => {
        const boxes = (selector) => [...document.querySelectorAll(selector)].map((e) => {
            const box = e.getBBox(); return {width: box.width, height: box.height, ...e.dataset}; });
        return {
            phases: boxes("svg.run rect.phase"),
            bands: boxes("svg.run rect.maintenance"),
            files: boxes("svg.run rect.file"),
            locks: boxes("svg.files rect.lock"),
            sections: [...document.querySelectorAll("section > h2")].map((h) => h.textContent),
            tables: document.querySelectorAll("table").length,
            scripts: document.querySelectorAll("script").length,
            handlers: [...document.querySelectorAll("*")].flatMap((e) =>
                [...e.attributes].filter((a) => a.name.startsWith("on")).map((a) => a.name)),
            fetched: performance.getEntriesByType("resource").map((entry) => entry.name),
            header: document.querySelector("header").className,
            verdict: (document.querySelector("header .verdict") || {}).textContent || "",
            text: document.body.innerText,
        };
    })()""")


def markdown_tables(report: str) -> int:
    return sum(1 for line in report.splitlines() if line.startswith("| --- |") or line.startswith("|---|"))


def test_the_html_reports_of_recorded_runs_in_a_browser(chromium, tmp_path):
    """One test for the three pages: the reports are written by one ansible-playbook run, which pytest-xdist must
    not repeat on every worker that would take one of them."""
    reports = write_reports(tmp_path)
    window_run(chromium, reports["window"])
    failed_run(chromium, reports["emergency-rollback"])
    hostile_run(chromium, reports["hostile"])


def window_run(chromium, directory: Path) -> None:
    """A run with a maintenance window: its timeline drawn, run.md's tables, a screenshot kept."""
    record = json.loads((RECORDS / "window.json").read_text())
    page = chromium.open(directory / "run.html")
    drawn = facts(page)
    assert page.errors() == [] and page.messages == []
    assert drawn["fetched"] == [] and drawn["scripts"] == 0
    # One bar per phase, in the record's order, each drawn with a width; the band where maintenance mode was on.
    assert [box["phase"] for box in drawn["phases"]] == [phase["phase"] for phase in record["phases"]]
    assert all(box["width"] >= 2 and box["height"] > 0 for box in drawn["phases"] + drawn["files"])
    switched = [entry["at"] for entry in record["maintenance_log"]]
    assert len(drawn["bands"]) == 1 and drawn["bands"][0]["width"] > 20
    band = drawn["bands"][0]
    assert [band["start"], band["end"]] == [page.evaluate(f"new Date({at * 1000}).toISOString().slice(11, 19)")
                                            for at in switched]
    assert [box["version"] for box in drawn["files"]] == ["16", "17"]
    # 000017 held ACCESS EXCLUSIVE on metadata in the rehearsal: the lock that kept readers and writers waiting.
    assert {(lock["table"], lock["mode"]) for lock in drawn["locks"] if lock["blocks"] == "reads and writes"} == {
        ("public.metadata", "ACCESS EXCLUSIVE")}
    # run.md's sections and every one of its tables.
    report = (directory / "run.md").read_text()
    assert drawn["sections"] == ["Timeline"] + [line[3:] for line in report.splitlines() if line.startswith("## ")]
    assert drawn["tables"] == markdown_tables(report) > 5
    assert drawn["header"] == "state-ok" and drawn["verdict"] == ""
    shot = page.screenshot(directory / "run.png", 1240)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def failed_run(chromium, directory: Path) -> None:
    """A run that failed in production and was rolled back: the failure, the rollback, the band."""
    page = chromium.open(directory / "run.html")
    drawn = facts(page)
    assert page.errors() == []
    assert [(box["phase"], box["result"]) for box in drawn["phases"]][-2:] == [
        ("migrate", "failed"), ("rollback", "rolled back")]
    # Maintenance mode went on before the failing migrate phase and stayed on through the rollback.
    assert len(drawn["bands"]) == 1
    assert [box["version"] for box in drawn["files"]] == ["16", "17"] and "000017 FAILED" in drawn["text"]
    assert drawn["header"] == "state-failed"
    assert drawn["verdict"] == "Rollback: emergency succeeded, the database is back at version 15"
    page.screenshot(directory / "run.png", 1240)


def hostile_run(chromium, directory: Path) -> None:
    """Markup in the record (a file's name, a table, an error, the run id) is shown as text, never run."""
    page = chromium.open(directory / "run.html")
    drawn = facts(page)
    # No script ran (each would log an error) and none was blocked (a CSP refusal is logged as an error too).
    assert page.errors() == [] and drawn["scripts"] == 0 and drawn["handlers"] == [] and drawn["fetched"] == []
    assert HOSTILE_TITLE in drawn["text"] and '"><svg onload="console.error(2)"></svg>' in drawn["text"]
    assert page.evaluate("document.title").endswith('"><script>console.error("id")</script>')
    # The drawing survived: the file whose name is markup still has its bar and its lock lane.
    assert [box["version"] for box in drawn["files"]] == ["16", "17"]
    assert HOSTILE_TITLE in {lock["table"] for lock in drawn["locks"]}


def test_the_console_check_catches_an_error(chromium, tmp_path):
    """The checks above would see a console error, an uncaught exception and a refused load."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8">'
                    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                    "script-src 'unsafe-inline'\"></head><body><img src=\"https://example.invalid/x.png\">"
                    '<script>console.error("deliberate"); undefinedFunction();</script></body></html>')
    errors = chromium.open(page).errors()
    assert sorted(error["source"] for error in errors) == ["console", "exception", "security"], errors
    texts = {error["text"].split("\n")[0] for error in errors}
    assert {"deliberate", "ReferenceError: undefinedFunction is not defined"} <= texts
