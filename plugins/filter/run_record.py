# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over the run record (module_utils/record.py holds the code and the schema).

Each filter wraps the function of the same purpose there (maintenance_window: module_utils/downtime.py; the HTML
report's run_charts: module_utils/timeline.py, report_sections: module_utils/report_html.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.tmi.migration.plugins.module_utils import downtime, record, report_html, timeline


def run_new(run_id, host, check_mode=False):
    return record.new(run_id, host, check_mode)


def run_phase(run, phase):
    try:
        return record.start_phase(run, phase)
    except ValueError as error:
        raise AnsibleFilterError("run_phase: %s" % error) from None


def run_update(run, variables, phase=None):
    return record.update(run, variables, phase)


def run_result_names(run, phase=None):
    return record.result_names(phase or record.current_phase(run))


def run_failed(run, result, task=""):
    return record.failed(run, result, task)


def run_touched(run):
    return record.touched(run)


def run_rollback_failed(run, result, mode="auto"):
    return record.rollback_failed(run, result, mode)


def run_end(run, checkpoint=False):
    return record.end(run, checkpoint)


def run_summary(run, auto_rollback=True):
    return record.summary(run, auto_rollback)


def failure_text(result):
    return record.failure_text(result)


def rollback_choice(requested, state, run):
    return record.rollback_choice(requested, state, run)


def app_criteria(smoke, hit_ratio, max_median_ms, min_hit_ratio, samples):
    return record.app_criteria(smoke, hit_ratio, max_median_ms, min_hit_ratio, samples)


def cache_figures(measured, info_before, info_after, warmed=None):
    return record.cache_figures(measured, info_before, info_after, warmed)


def maintenance_window(run, mode="auto", max_write_stall=1.0, app_enabled=True, online_index_builds=False):
    """Where maintenance mode goes in the run (module_utils/downtime.py)."""
    try:
        return downtime.window(run, mode, max_write_stall, app_enabled, online_index_builds)
    except (TypeError, ValueError) as error:
        raise AnsibleFilterError("maintenance_window: %s" % error) from None


def run_charts(run):
    """The HTML report's pictures of the run: {run, files}, inline SVG with the record's text escaped."""
    return timeline.charts(run)


def report_sections(markdown):
    """The Markdown report as HTML sections [{level, title, html}], its text escaped."""
    return report_html.sections(markdown)


class FilterModule(object):
    def filters(self):
        return {
            "run_new": run_new,
            "run_phase": run_phase,
            "run_update": run_update,
            "run_result_names": run_result_names,
            "run_failed": run_failed,
            "run_touched": run_touched,
            "run_rollback_failed": run_rollback_failed,
            "run_end": run_end,
            "run_summary": run_summary,
            "failure_text": failure_text,
            "rollback_choice": rollback_choice,
            "app_criteria": app_criteria,
            "cache_figures": cache_figures,
            "maintenance_window": maintenance_window,
            "run_charts": run_charts,
            "report_sections": report_sections,
        }
