"""Pure functions of the api_watch module: stretches without an answer and the longest time no target answered."""

from __future__ import annotations

import os

from ansible_collections.tmi.migration.plugins.modules.api_watch import down_stretches, longest_gap, should_stop

REFUSED = {"path": "/health", "status": -1, "body": "no answer: refused"}


def polls(*states, start=0.0, step=0.1):
    """Observations every ``step`` seconds: True answered, False did not."""
    return [(start + index * step, up, None if up else REFUSED) for index, up in enumerate(states)]


def test_down_stretches_run_from_the_first_failed_poll_to_the_first_answered_one():
    observed = polls(True, False, False, True, True, False, True)
    assert [(round(a, 3), round(b, 3), is_open) for a, b, _answer, is_open in down_stretches(observed, 1.0)] == [
        (0.1, 0.3, False), (0.5, 0.6, False)]
    assert down_stretches(observed, 1.0)[0][2] == REFUSED


def test_a_stretch_still_open_at_the_end_ends_there():
    assert down_stretches(polls(True, False, False), 5.0)[-1][1:] == (5.0, REFUSED, True)
    assert down_stretches(polls(True, True), 5.0) == []


def test_rolling_hosts_leave_no_gap_a_single_host_leaves_its_own():
    first = polls(True, False, False, True, True, True, True)
    second = polls(True, True, True, True, False, False, True)
    assert longest_gap([first, second], 1.0) == (0.0, None, None)
    seconds, began, ended = longest_gap([first], 1.0)
    assert (round(seconds, 3), round(began, 3), round(ended, 3)) == (0.2, 0.1, 0.3)


def test_overlapping_outages_count_only_while_no_host_answers():
    first = polls(True, False, False, False, True, start=0.0)
    second = polls(True, True, False, False, True, start=0.05)
    seconds, began, ended = longest_gap([first, second], 1.0)
    # first is down from 0.1; second from 0.25 until first answers at 0.4.
    assert (round(seconds, 3), round(began, 3), round(ended, 3)) == (0.15, 0.25, 0.4)
    assert round(longest_gap([polls(True, False)], 3.0)[0], 3) == 2.9


def test_the_watch_stops_on_the_stop_file_its_missing_directory_or_the_deadline(tmp_path):
    stop_file = str(tmp_path / "stop")
    assert should_stop(stop_file, float("inf")) is None
    assert should_stop(stop_file, 0.0) == "duration"
    open(stop_file, "w").close()
    assert should_stop(stop_file, float("inf")) == "stop_file"
    os.unlink(stop_file)
    os.rmdir(tmp_path)
    assert should_stop(stop_file, float("inf")) == "stop_file"
    assert should_stop(None, float("inf")) is None
