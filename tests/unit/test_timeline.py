"""The HTML report's pictures (module_utils/timeline.py): what happened when, read from a run record, and the SVG
drawn from it - one bar per phase, the maintenance band, the files, the locks - with the record's text escaped."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import record, timeline

REPO = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def _run(**sections):
    """A closed record: preflight 100-110, migrate 110-130, app 130-160, plus ``sections``."""
    run = record.new("r1", "db1")
    for phase, clock in (("preflight", 100.0), ("migrate", 110.0), ("app", 130.0)):
        run = record.start_phase(run, phase, clock=clock)
    run.update(sections)
    run["phases"] = record.phase_results(run, clock=160.0)
    return run


def _rects(svg: str, css: str) -> list[ET.Element]:
    """The rects of one class: the SVG must be well-formed XML to be parsed at all."""
    return [element for element in ET.fromstring(svg).iter(SVG + "rect") if element.get("class") == css]


STATEMENTS = [
    {"line": 4, "duration": 0.5, "taken": {"public.metadata": "ACCESS EXCLUSIVE"}, "held": {"public.metadata": 0.6}},
    {"line": 6, "duration": 0.2, "taken": {}, "held": {}},
    {"line": 9, "duration": 0.1, "taken": {"public.threats": "SHARE UPDATE EXCLUSIVE"},
     "held": {"public.threats": 0.1}},
]


def test_the_maintenance_spans_come_from_the_switches_and_one_left_on_lasts_to_the_end():
    run = _run(maintenance_log=[{"state": "enabled", "at": 112.0}, {"state": "enabled", "at": 113.0},
                                {"state": "disabled", "at": 125.0}, {"state": "enabled", "at": 140.0}])
    spans = timeline.events(run)["maintenance"]
    # A second "on" inside a span (the rollback switching it on again) does not start another.
    assert spans == [{"start": 112.0, "end": 125.0, "still_on": False},
                     {"start": 140.0, "end": 160.0, "still_on": True}]


def test_files_are_placed_where_they_ran_with_the_locks_the_rehearsal_saw():
    migration = {"applied": [{"version": 16, "title": "a", "direction": "up", "started": 111.0, "duration": 1.0},
                             {"version": 17, "title": "b", "direction": "up", "started": 118.0, "duration": 2.0}]}
    rehearsal = {"up": [{"version": 17, "duration": 0.8, "ok": True, "statements": STATEMENTS}]}
    found = timeline.events(_run(migration=migration, rehearsal=rehearsal,
                                 maintenance_log=[{"state": "enabled", "at": 115.0},
                                                  {"state": "disabled", "at": 125.0}]))
    first, second = found["files"]
    assert (first["start"], first["maintenance"], first["rehearsal"]) == (111.0, False, {})
    assert (second["start"], second["maintenance"], second["blocks_writers"]) == (118.0, True, True)
    # Offsets: the statements ran one after the other; a lock is held past its statement (to the COMMIT).
    assert [(lock["table"], lock["mode"], lock["offset"], lock["held"], lock["line"])
            for lock in second["rehearsal"]["locks"]] == [
        ("public.metadata", "ACCESS EXCLUSIVE", 0.0, 0.6, 4),
        ("public.threats", "SHARE UPDATE EXCLUSIVE", pytest.approx(0.7), 0.1, 9)]


def test_the_failed_file_is_drawn_after_the_applied_ones():
    migration = {"applied": [{"version": 16, "title": "a", "started": 111.0, "duration": 1.0}],
                 "failed_migration": {"version": 17, "title": "b", "direction": "up", "started": 113.0,
                                      "duration": 0.4, "lock_waits": []}}
    files = timeline.events(_run(migration=migration))["files"]
    assert [(item["version"], item["failed"]) for item in files] == [(16, False), (17, True)]
    svg = timeline.run_chart(_run(migration=migration))
    assert [rect.get("data-version") for rect in _rects(svg, "file")] == ["16", "17"]
    assert "000017 FAILED" in svg


def test_a_file_the_rehearsal_stopped_shows_the_locks_that_stopped_it():
    rehearsal = {"up": [{"version": 17, "title": "b", "duration": 9.0, "ok": True, "statements": STATEMENTS}]}
    run = _run(rehearsal=rehearsal, failed=True, failed_phase="rehearsal")
    (item,) = timeline.events(run)["files"]
    assert (item["production"], item["start"], item["blocks_writers"]) == (False, None, True)
    assert _rects(timeline.run_chart(run), "file") == []  # it never ran in production
    files = timeline.files_chart(run)
    assert _rects(files, "file-run") == [] and "not run in production" in files
    assert [lock.get("data-mode") for lock in _rects(files, "lock")] == ["ACCESS EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"]


def test_whom_a_lock_mode_blocks():
    assert timeline.blocks("ACCESS EXCLUSIVE") == "reads and writes"
    assert timeline.blocks("SHARE") == timeline.blocks("SHARE ROW EXCLUSIVE") == "writes"
    assert timeline.blocks("SHARE UPDATE EXCLUSIVE") == timeline.blocks("ROW EXCLUSIVE") == ""


def test_the_run_chart_has_one_bar_per_phase_and_the_band():
    run = _run(failed=True, failed_phase="migrate",
               maintenance_log=[{"state": "enabled", "at": 112.0}, {"state": "disabled", "at": 150.0}])
    run["phases"] = record.phase_results(run, clock=160.0)
    svg = timeline.run_chart(run)
    bars = _rects(svg, "phase")
    assert [(box.get("data-phase"), box.get("data-result")) for box in bars] == [
        ("preflight", "ok"), ("migrate", "failed"), ("app", "ok")]
    # Left to right in time order, each as wide as its phase is long: 10 s, 20 s, 30 s.
    xs = [float(box.get("x")) for box in bars]
    widths = [float(box.get("width")) for box in bars]
    assert xs == sorted(xs) and widths[1] == pytest.approx(2 * widths[0], abs=0.2)
    band = _rects(svg, "maintenance")
    assert len(band) == 1 and band[0].get("data-start") == timeline.clock_time(112.0)
    assert f"maintenance mode ON {timeline.clock_time(112.0)}" in svg


def test_no_band_without_maintenance_and_no_files_chart_without_files():
    run = _run()
    assert _rects(timeline.run_chart(run), "maintenance") == []
    assert timeline.charts(run)["files"] == ""
    assert timeline.charts(record.new("r1", "db1")) == {"run": "", "files": ""}


def test_the_recorded_runs_are_drawn_whole():
    """The records the browser test renders: every phase, the window's band, both files, each lock."""
    window = json.loads((REPO / "tests" / "fixtures" / "records" / "window.json").read_text())
    charts = timeline.charts(window)
    assert len(_rects(charts["run"], "phase")) == len(window["phases"])
    assert len(_rects(charts["run"], "maintenance")) == 1
    assert len(_rects(charts["files"], "file-run")) == len(window["migration"]["applied"]) == 2
    locks = _rects(charts["files"], "lock")
    taken = sum(len(statement["taken"]) for entry in window["rehearsal"]["up"] for statement in entry["statements"])
    assert len(locks) == taken
    assert {lock.get("data-table") for lock in locks if lock.get("data-blocks") == "reads and writes"} == {
        "public.metadata"}


HOSTILE = '</text><script>alert("x")</script><rect onload="alert(1)"/>&amp;'


def test_text_from_the_record_cannot_become_markup():
    migration = {"applied": [{"version": 17, "title": HOSTILE, "direction": HOSTILE, "mode": HOSTILE,
                              "started": 111.0, "duration": 1.0, "lock_wait_summary": HOSTILE}]}
    rehearsal = {"up": [{"version": 17, "direction": "up", "duration": 1.0, "statements": [
        {"line": HOSTILE, "duration": 0.5, "taken": {HOSTILE: HOSTILE}, "held": {HOSTILE: 0.5}}]}]}
    run = _run(migration=migration, rehearsal=rehearsal, rollback={"mode": HOSTILE, "succeeded": True})
    run["phases"][1]["phase"] = HOSTILE
    for svg in timeline.charts(run).values():
        tree = ET.fromstring(svg)  # still well-formed: nothing closed an element early
        assert not [element for element in tree.iter() if element.tag.endswith("script")]
        assert not [name for element in tree.iter() for name in element.attrib if name.startswith("on")]
        assert "<script" not in svg and "&lt;script&gt;" in svg
        # The text reads as it was written.
        assert any(HOSTILE in "".join(element.itertext()) for element in tree.iter(SVG + "title"))
