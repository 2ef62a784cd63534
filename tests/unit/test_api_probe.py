"""Pure functions of the api_probe module: percentiles and the time summary."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.modules.api_probe import failure_message, percentile, summarize


@pytest.mark.parametrize("values, fraction, expected", [
    ([5.0], 0.5, 5.0),
    ([3.0, 1.0, 2.0], 0.5, 2.0),
    ([4.0, 1.0, 3.0, 2.0], 0.5, 2.5),
    (list(range(1, 101)), 0.95, 95),
    (list(range(1, 21)), 0.95, 19),
    ([1.0, 2.0], 1.0, 2.0),
])
def test_percentile_nearest_rank(values, fraction, expected):
    assert percentile(values, fraction) == expected


def test_summarize():
    assert summarize([]) is None
    assert summarize([10.04, 2.0, 3.0]) == {"min": 2.0, "median": 3.0, "p95": 10.0, "max": 10.0}


def test_failure_message_names_the_endpoint_status_and_body():
    results = [{"ok": True}, {"ok": False, "method": "GET", "url": "http://app/health", "status": 503,
                              "statuses": [503, 200], "expected": [200], "body": {"status": "unhealthy"}}]
    assert failure_message(results) == ('GET http://app/health answered 503 (expected 200; 1 of 2 answers unexpected): '
                                        '{"status": "unhealthy"}')


def test_failure_message_says_what_no_answer_means():
    results = [{"ok": False, "method": "GET", "url": "http://app/health", "status": -1, "statuses": [-1],
                "expected": [200], "body": "no answer: timed out"}]
    message = failure_message(results, 10.0)
    assert message.startswith("GET http://app/health got no answer (expected 200; 1 of 1 answers unexpected)")
    assert "did not answer within 10.0 s: check that it runs and listens at this URL (app_config_url)" in message
