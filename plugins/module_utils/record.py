# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run record: its schema, the phases and their timings, the failure summary, the verdicts.

migrate.yml and rollback.yml keep one record per host (the fact ``tmi_run``) and change it only
through the filters of ``plugins/filter/run_record.py``, which call the functions here:

* ``new`` opens a record with every section present and empty;
* ``start_phase`` notes that a phase started (its duration runs until the next phase starts);
* ``update`` copies the current phase's role results into their sections, once the phase ends
  (a role that runs again later - the rollback runs the migrate and validate roles - cannot
  change what the record says the run did);
* ``failed`` notes the failed phase, task and error (a failed loop's items' own errors added);
* ``end`` closes the record: each phase's result and duration;
* ``summary`` derives what the report says: status, notice, success criteria, what a check-mode run
  would do, the key figures for AWX and the message a failed run ends with.

``find`` picks the record a rollback works from among those on disk (module ``run_record``).
Everything here is plain data in, plain data out; nothing touches Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import os
import time
from datetime import datetime, timezone

# The phases of migrate.yml in their order; rollback.yml has lock and rollback only.
PHASES = ("preflight", "backup", "rehearsal", "window", "migrate_before", "maintenance", "baseline", "migrate",
          "release", "migrate_after", "validate", "redis", "app", "rollback")
# The phases that apply migration files: one segment each of the planned run (module_utils/downtime.py says which).
MIGRATING = ("migrate_before", "migrate", "migrate_after")

# What each phase's roles return (the fact each entry point sets), and the record section it goes to.
PHASE_RESULTS = {
    "preflight": (("preflight", "validate_pre_result"), ("run_lock", "run_lock_result"),
                  ("migration", "migrate_result")),
    "lock": (("run_lock", "run_lock_result"),),
    "backup": (("backup", "backup_result"),),
    "rehearsal": (("rehearsal", "migrate_rehearsal_result"),),
    "window": (("window", "tmi_window"),),
    "migrate_before": (("migration", "migrate_result"),),
    "maintenance": (("maintenance", "app_config_maintenance_state"), ("maintenance_log", "app_config_maintenance_log")),
    "baseline": (("baseline", "validate_baseline_result"),),
    "migrate": (("migration", "migrate_result"),),
    "release": (("release", "validate_datacheck_result"), ("maintenance", "app_config_maintenance_state"),
                ("maintenance_log", "app_config_maintenance_log")),
    "migrate_after": (("migration", "migrate_result"),),
    "validate": (("validation", "validate_post_result"),),
    "redis": (("redis", "redis_config_result"),),
    "app": (("app", "app_config_result"), ("maintenance", "app_config_maintenance_state"),
            ("maintenance_log", "app_config_maintenance_log")),
    "rollback": (("rollback", "rollback_result"), ("maintenance", "app_config_maintenance_state"),
                 ("maintenance_log", "app_config_maintenance_log")),
}

# The sections of a record and what an empty one holds. Each is the result of the role that fills it,
# as that role documents it in its meta/argument_specs.yml; the rollback section has a fixed shape
# (ROLLBACK), whichever playbook ran the rollback and however it ended.
SECTIONS = {
    "preflight": {},
    "run_lock": {},
    "backup": {},
    "rehearsal": {},
    "window": {},
    "baseline": {},
    "migration": {},
    "release": {},
    "validation": {},
    "redis": {},
    "app": {},
    "maintenance": "unused",
    # Each switch of maintenance mode as it happened: {"state": "enabled" or "disabled", "at": seconds since the epoch}.
    "maintenance_log": [],
    "rollback": {},
}

# The top of a record.
RUN = {
    "run_id": "",
    "host": "",
    "check_mode": False,
    "started": "",
    "finished": "",
    "in_progress": False,
    "failed": False,
    "failed_phase": "",
    "failed_task": "",
    "error": "",
    "notice": "",
    "phases": [],
}

# What a rollback records, in migrate.yml's automatic rollback and in rollback.yml alike.
ROLLBACK = {
    "run_id": "",
    "mode": "",
    "requested_mode": "",
    "succeeded": False,
    "already_rolled_back": False,
    "error": "",
    "failed_task": "",
    "planned_error": "",
    "version_before": "",
    "dirty_before": "",
    "version_after": "",
    "restore": {},
    "removed_databases": [],
    "differences": [],
    "data_check": [],
    "discards": [],
    "allow_data_loss": False,
    "redis_settings": {},
    "app": {},
    "kept_restore": "",
    "application": "",
    "earlier": {},
    "interrupted_rewrite": {},
}

# Findings of the post-migration data check that mean the migration damaged data.
DATA_CHECKS = ("data_lost", "data_changed", "unknown_change")

MAINTENANCE_ON = ("MAINTENANCE MODE IS ON: the application refuses its users until it is switched off. Fix the cause "
                  "above and run playbooks/rollback.yml, or switch it off with the app_config role (entry point "
                  "maintenance).")
MAINTENANCE_IN_PROGRESS = ("If this run no longer runs (its runner was killed), maintenance mode is ON: run "
                           "playbooks/rollback.yml.")


def now_iso():
    return datetime.now(timezone.utc).isoformat()


def true(value):
    """A flag as Ansible hands it over (bool, or the strings a template makes of it)."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "yes", "1", "on")


def _mapping(value):
    return value if isinstance(value, dict) else {}


def new(run_id, host, check_mode=False, started=None):
    """A record with every section present and empty."""
    record = copy.deepcopy(RUN)
    record.update(copy.deepcopy(SECTIONS))
    record.update(run_id=run_id or "", host=host, check_mode=true(check_mode), started=started or now_iso())
    return record


def start_phase(record, phase, clock=None):
    """The record with ``phase`` started now (``clock``: seconds since the epoch, for tests)."""
    if phase not in PHASES and phase not in PHASE_RESULTS:
        raise ValueError("unknown phase %r (known: %s)" % (phase, ", ".join(PHASES)))
    record = dict(record)
    started = {"phase": phase, "started": time.time() if clock is None else clock}
    record["phases"] = [*(record.get("phases") or []), started]
    return record


def current_phase(record):
    phases = record.get("phases") or []
    return phases[-1]["phase"] if phases else ""


def result_names(phase):
    """The facts a phase's roles set, in PHASE_RESULTS order."""
    return [name for _section, name in PHASE_RESULTS.get(phase, ())]


def normalise_rollback(result):
    """A rollback result in the record's fixed shape (unknown keys are kept)."""
    shaped = copy.deepcopy(ROLLBACK)
    shaped.update(_mapping(result))
    shaped["succeeded"] = true(shaped["succeeded"])
    shaped["already_rolled_back"] = true(shaped["already_rolled_back"])
    shaped["allow_data_loss"] = true(shaped["allow_data_loss"])
    return shaped


def update(record, variables, phase=None):
    """The record with the results of ``phase`` (default: the current one) taken from ``variables``.

    ``variables`` maps fact names to values, or lists the values in ``result_names(phase)``'s order (what
    the playbooks' vars lookup of those names returns). A result the phase did not produce (its role
    was skipped by a tag or a condition) leaves its section as it was.
    """
    record = dict(record)  # sections are replaced whole, never changed in place: a shallow copy will do
    phase = phase or current_phase(record)
    if isinstance(variables, (list, tuple)):
        variables = dict(zip(result_names(phase), variables))
    for section, name in PHASE_RESULTS.get(phase, ()):
        value = variables.get(name)
        if value is None or value == {} or value == "":
            continue
        if section == "rollback":
            value = normalise_rollback(value)
            if not record.get("run_id"):
                record["run_id"] = value["run_id"]
        if section == "migration" and phase in MIGRATING:
            value = continued(_mapping(record.get(section)), _mapping(value))
        record[section] = value
    return record


def continued(planned, segment):
    """The migration section once ``segment`` (one call of the migrate role) ran part of the ``planned`` run.

    The plan, its analysis, the version the run started from and its target stay the whole run's; the files
    applied add up. A segment that is not part of the plan (another target) replaces the section, as before.
    """
    plan = planned.get("plan") or []
    versions = [step.get("version") for step in plan]
    ran = [step.get("version") for step in segment.get("plan") or []]
    if not plan or any(version not in versions for version in ran):
        return segment
    merged = dict(segment)
    if not ran:  # nothing left for this segment (another run moved the version): only the outcome is new
        merged = dict(planned)
        merged.update((key, segment[key]) for key in ("version_after", "dirty", "failed", "error") if key in segment)
        return merged
    for key in ("plan", "analysis", "version_before", "target_version", "missing_down", "edited_files"):
        if key in planned:
            merged[key] = planned[key]
    merged["applied"] = list(planned.get("applied") or []) + list(segment.get("applied") or [])
    merged["duration"] = round(sum(float(_mapping(item).get("duration") or 0) for item in merged["applied"]), 3)
    return merged


def failure_text(result):
    """A failed task's message; a failed loop's ("One or more items failed") gets its items' own errors."""
    result = _mapping(result)
    # A task's result says msg; a role's result fact (rollback_result) says error.
    text = str(result.get("msg") or result.get("error") or "")
    items = result.get("results")
    if isinstance(items, list):
        errors = []
        for item in items:
            item = _mapping(item)
            if true(item.get("failed", False)):
                error = item.get("stderr") or ""
                if error:
                    errors.append(str(error))
        if errors:
            text = "%s: %s" % (text, "; ".join(errors))
    return text


def failed(record, result, task=""):
    """The record with the failure of the current phase."""
    record = dict(record)
    record.update(failed=True, failed_phase=current_phase(record) or "start", failed_task=task or "",
                  error=failure_text(result))
    return record


def rollback_failed(record, result, mode="auto"):
    """The record of a rollback that failed; ``result`` is its failed task's result.

    The rollback role records its own failure; one that failed before it could (bad inputs) gets a
    record here.
    """
    record = dict(record)
    rollback = _mapping(record.get("rollback"))
    if not rollback:
        rollback = {"mode": mode, "requested_mode": mode, "succeeded": False, "error": failure_text(result) or "failed"}
    record["rollback"] = normalise_rollback(rollback)
    return record


def phase_results(record, clock=None):
    """Each phase's result and duration (seconds): a phase lasts until the next one started."""
    clock = time.time() if clock is None else clock
    phases = record.get("phases") or []
    failed_phase = record.get("failed_phase") if true(record.get("failed", False)) else ""
    rollback = _mapping(record.get("rollback"))
    report = []
    for index, phase in enumerate(phases):
        ends = phases[index + 1]["started"] if index + 1 < len(phases) else clock
        name = phase["phase"]
        if name == "rollback":
            result = "rolled back" if true(rollback.get("succeeded", False)) else "failed"
        elif name == failed_phase:
            result = "failed"
        else:
            result = "ok"
        report.append({"phase": name, "result": result, "started": phase["started"],
                       "duration": round(max(ends - phase["started"], 0.0), 2)})
    return report


def end(record, checkpoint=False, clock=None):
    """The record as it is written: finished now, each phase's result and duration, the notice.

    A checkpoint (``checkpoint=True``) is a record written while the run goes on: ``in_progress``
    tells a rollback that the run may have been killed in the middle.
    """
    written = dict(record)
    written["finished"] = now_iso()
    written["in_progress"] = bool(checkpoint)
    written["phases"] = phase_results(record, clock)
    written["notice"] = notice(written)
    return written


# The phases that change production; the ones before them (preflight, backup, rehearsal) only read it.
TOUCHING = ("migrate_before", "maintenance", "baseline", "migrate", "release", "migrate_after", "validate", "redis",
            "app")


def touched(record):
    """Whether the run got to a phase that changes production (so that a failure needs a rollback)."""
    return any(_mapping(item).get("phase") in TOUCHING for item in record.get("phases") or [])


def notice(record):
    """What an operator must know first: the application was left in maintenance mode."""
    if record.get("maintenance") != "enabled" or true(record.get("check_mode", False)):
        return ""
    if true(record.get("in_progress", False)):
        return MAINTENANCE_IN_PROGRESS
    return MAINTENANCE_ON


def status(record):
    if true(record.get("check_mode", False)) and not true(record.get("failed", False)):
        return "checked (check mode, nothing was changed)"
    if true(record.get("in_progress", False)):
        return "in progress"
    return "FAILED" if true(record.get("failed", False)) else "succeeded"


def _verdict(known, passed):
    if not known:
        return "n/a"
    return "pass" if passed else "fail"


def criteria(record):
    """The runbook's success criteria, judged from what the run recorded ("pass", "fail" or "n/a")."""
    migration = _mapping(record.get("migration"))
    validation = _mapping(record.get("validation"))
    app = _mapping(_mapping(record.get("app")).get("criteria"))
    redis = _mapping(record.get("redis"))

    def app_passed(name):
        return true(_mapping(app.get(name)).get("passed", False))

    return [
        {"criterion": "All database migrations applied successfully",
         "result": _verdict(bool(migration), not true(migration.get("failed", False))
                            and not true(migration.get("dirty", False))
                            and str(migration.get("version_after")) == str(migration.get("target_version")))},
        {"criterion": "No data loss or corruption detected",
         "result": _verdict(bool(validation), not validation.get("failed_checks"))},
        {"criterion": "New granular API endpoints are functional", "result": _verdict(bool(app), app_passed("errors"))},
        {"criterion": "Average API response time < 200ms",
         "result": _verdict(bool(app), app_passed("response_time"))},
        {"criterion": "Cache hit ratio > 70%", "result": _verdict(bool(app), app_passed("hit_ratio"))},
        {"criterion": "Redis settings applied and verified",
         "result": _verdict(bool(redis), true(redis.get("test_key_round_trip", False)))},
    ]


def would(record):
    """Check mode: what each phase would do, from the predictions the phases made."""
    backup = _mapping(record.get("backup"))
    migration = _mapping(record.get("migration"))
    redis = _mapping(record.get("redis"))
    app = _mapping(record.get("app"))
    lines = []
    if backup.get("path"):
        lines.append("back up to %s and verify the dump by restoring it into %s"
                     % (backup["path"], backup.get("verify_database", "")))
    else:
        lines.append("take no backup")
    if true(_mapping(record.get("rehearsal")).get("would_rehearse", False)):
        lines.append("rehearse the plan up and back down on that verified copy before touching production")
    plan = migration.get("plan") or []
    window = _mapping(record.get("window"))
    if plan and window.get("lines"):
        lines.append(window["lines"][0][0].lower() + window["lines"][0][1:])
    if plan:
        lines.append("migrate from version %s to %s (%s through %s)" % (
            migration.get("version_before"), migration.get("target_version"), plan[0].get("direction"),
            ", ".join(str(step.get("version")) for step in plan)))
    else:
        lines.append("migrate nothing")
    changed = redis.get("changed_settings") or []
    if changed:
        after, before = _mapping(redis.get("after")), _mapping(redis.get("before"))
        lines.append("set Redis %s (now %s)" % (
            ", ".join("%s=%s" % (name, json.dumps(after.get(name))) for name in changed),
            ", ".join(json.dumps(before.get(name)) for name in changed)))
    else:
        lines.append("leave the Redis settings as they are")
    if true(app.get("changed", False)):
        lines.append("write a changed config file %s and restart the application" % app.get("dest", ""))
    else:
        lines.append("leave the config file as it is")
    return lines


def stats(record):
    """The key figures published for AWX (set_stats)."""
    migration = _mapping(record.get("migration"))
    backup = _mapping(record.get("backup"))
    rollback = _mapping(record.get("rollback"))
    if rollback:
        rolled = "%s %s" % (rollback.get("mode", ""), "succeeded" if true(rollback.get("succeeded", False))
                            else "FAILED")
    else:
        rolled = "none"
    return {
        "run_id": record.get("run_id", ""),
        "failed": true(record.get("failed", False)),
        "failed_phase": record.get("failed_phase", ""),
        "version_before": migration.get("version_before", ""),
        "version_after": migration.get("version_after", ""),
        "backup": backup.get("path", ""),
        "backup_verified": true(backup.get("verified", False)),
        "failed_checks": len(_mapping(record.get("validation")).get("failed_checks") or []),
        "rollback": rolled,
        "rehearsal": rehearsal_verdict(record),
        "maintenance_window": (_mapping(record.get("window")).get("lines") or [""])[0],
        "criteria": dict((item["criterion"], item["result"]) for item in criteria(record)),
    }


def rehearsal_verdict(record):
    """The rehearsal in a few words: 'not run', the reason it was skipped, 'failed', or 'ok' and whether the
    planned rollback works, with the longest ACCESS EXCLUSIVE lock."""
    rehearsal = _mapping(record.get("rehearsal"))
    if not rehearsal:
        return "not run"
    if not true(rehearsal.get("rehearsed", False)):
        return "FAILED" if rehearsal.get("error") else "skipped (%s)" % rehearsal.get("skipped", "")
    if rehearsal.get("up_ok") is False or true(rehearsal.get("failed", False)):
        return "FAILED"
    longest = max([seconds for entry in rehearsal.get("up") or [] for seconds in
                   _mapping(_mapping(entry).get("exclusive")).values()] or [0])
    return "ok; rollback %s; longest ACCESS EXCLUSIVE %s s" % (
        "works" if true(rehearsal.get("reversible", False)) else "would NOT work", longest)


def rollback_outcome(record, auto_rollback=True):
    """What happened to the database after a failure, in one phrase."""
    backup = _mapping(record.get("backup"))
    rollback = _mapping(record.get("rollback"))
    if not true(backup.get("verified", False)):
        return "none (no verified backup was taken, so nothing had been changed)"
    if not touched(record) and not rollback:
        return "none needed (production was not changed: the run stopped in phase %s, before maintenance mode)" % (
            record.get("failed_phase") or current_phase(record))
    if not true(auto_rollback):
        return "switched off (tmi_auto_rollback=false)"
    if true(record.get("check_mode", False)):
        return "none in check mode"
    return rollback_result(rollback)


def rollback_result(rollback):
    """How a rollback ended, in one phrase."""
    if true(rollback.get("succeeded", False)):
        return "%s succeeded, the database is back at version %s" % (rollback.get("mode"),
                                                                     rollback.get("version_after"))
    return "%s FAILED: %s" % (rollback.get("mode", ""), rollback.get("error", ""))


def rollback_summary(record, auto_rollback=True):
    """The rollback in one phrase for the top of a report: the one that ran (rollback.yml's record has no backup of
    its own), or, for a failed run without one, why none ran ('' when the run neither failed nor rolled back)."""
    rollback = _mapping(record.get("rollback"))
    if rollback:
        return rollback_result(rollback)
    return rollback_outcome(record, auto_rollback) if true(record.get("failed", False)) else ""


def failure_message(record, auto_rollback=True):
    """The message a failed run ends with: the original error first, the rollback's outcome after it."""
    message = "Phase %s failed at '%s': %s -- Rollback: %s" % (
        record.get("failed_phase"), record.get("failed_task"), record.get("error"),
        rollback_outcome(record, auto_rollback))
    if record.get("maintenance") == "enabled" and not true(record.get("check_mode", False)):
        message += " -- MAINTENANCE MODE IS ON: run playbooks/rollback.yml once the cause is fixed."
    return message


def summary(record, auto_rollback=True):
    """What the report shows beside the record."""
    return {
        "status": status(record),
        "notice": notice(record),
        "criteria": criteria(record),
        "would": would(record),
        "stats": stats(record),
        "failure_message": failure_message(record, auto_rollback) if true(record.get("failed", False)) else "",
        "rollback": rollback_summary(record, auto_rollback),
    }


def rollback_choice(requested, state, record):
    """auto's choice: emergency when the schema is dirty, the data check (at the end of the maintenance window, or
    after the migration) found damaged data, or the down files failed in the rehearsal."""
    if requested != "auto":
        return requested
    state = _mapping(state)
    if true(state.get("dirty", True)):
        return "emergency"
    checks = (list(_mapping(_mapping(record).get("validation")).get("failed_checks") or []) +
              list(_mapping(_mapping(record).get("release")).get("failed_checks") or []))
    if any(_mapping(item).get("check") in DATA_CHECKS for item in checks):
        return "emergency"
    # The rehearsal ran the down files on the copy and they failed. (Down files that ran but left the schema or
    # the data otherwise - a data migration they do not undo - still let the planned rollback try: it keeps the
    # writes made since, is judged by what its files may do, and falls back to the backup when it fails.)
    rehearsal = _mapping(_mapping(record).get("rehearsal"))
    if true(rehearsal.get("rehearsed", False)) and true(rehearsal.get("up_ok", False)) and \
            rehearsal.get("down_ok") is not None and not true(rehearsal.get("down_ok")):
        return "emergency"
    return "planned"


# The criteria app_config measures at the end of a run (runbook step 7).
def app_criteria(smoke, hit_ratio, max_median_ms, min_hit_ratio, samples):
    """Each measured criterion's value, limit, verdict and a sentence saying why."""
    smoke = _mapping(smoke)
    failed_requests = smoke.get("failed_requests") or []
    failing = [item for item in smoke.get("results") or [] if not true(_mapping(item).get("ok", False))]
    median = smoke.get("median_ms")
    return {
        "errors": {
            "value": len(failed_requests), "limit": 0, "passed": not failed_requests,
            "detail": "; ".join("%s answered %s" % (item.get("name"), item.get("statuses")) for item in failing)
                      or "every request answered as expected"},
        "response_time": {
            "value": median, "limit": max_median_ms,
            "passed": median is not None and float(median) <= float(max_median_ms),
            "detail": "median response time %s ms over %s requests per endpoint (limit %s ms)"
                      % ("n/a" if median is None else median, samples, max_median_ms)},
        "hit_ratio": {
            "value": hit_ratio, "limit": min_hit_ratio,
            "passed": hit_ratio is not None and float(hit_ratio) >= float(min_hit_ratio),
            "detail": "cache hit ratio %s over the measured requests (minimum %s)" % (hit_ratio, min_hit_ratio)},
    }


def cache_figures(measured, info_before, info_after, warmed=None):
    """The cache hit ratio over the measured requests, from Redis INFO before and after them."""
    before, after = _mapping(info_before), _mapping(info_after)
    hits = int(after.get("keyspace_hits", 0) or 0) - int(before.get("keyspace_hits", 0) or 0)
    misses = int(after.get("keyspace_misses", 0) or 0) - int(before.get("keyspace_misses", 0) or 0)
    return {
        "measured": true(measured) and bool(after),
        "hits": hits,
        "misses": misses,
        "hit_ratio": round(float(hits) / (hits + misses), 4) if hits + misses > 0 else None,
        "keyspace_hits": after.get("keyspace_hits"),
        "keyspace_misses": after.get("keyspace_misses"),
        "used_memory_human": after.get("used_memory_human"),
        "warmed": warmed,
    }


# Finding the record a rollback works from.
def load(path):
    """The JSON document at ``path``, or None when it is missing or unreadable (with the reason)."""
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (IOError, OSError, ValueError) as error:
        return None, str(error)
    if not isinstance(document, dict):
        return None, "not a JSON object"
    return document, None


def moment(value):
    """An ISO 8601 time as the records write it, or None."""
    try:
        return datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None


def not_before(first, second):
    """Whether the time ``first`` is not before ``second`` (False when either is unknown)."""
    if first is None or second is None:
        return False
    try:
        return first >= second
    except TypeError:  # one with a time zone, one without: the records write UTC
        return first.replace(tzinfo=None) >= second.replace(tzinfo=None)


def matches(record, host):
    """A record of ``host`` that took a backup; a check-mode run only predicted one, so it never matches."""
    backup = record.get("backup")
    return (record.get("host") == host and not true(record.get("check_mode", False))
            and isinstance(backup, dict) and bool(backup.get("path")))


def candidates(run_dir):
    """The run records under run_dir, newest first (modification time, then name)."""
    found = []
    try:
        entries = os.listdir(run_dir)
    except OSError:
        return found
    for name in entries:
        path = os.path.join(run_dir, name, "run.json")
        try:
            found.append((os.stat(path).st_mtime, name, path))
        except OSError:
            continue
    return [path for _mtime, _name, path in sorted(found, reverse=True)]


def rolled_back(record, path, rollback, rollback_path):
    """The rollback of the run that succeeded last, or {}."""
    finished = moment(record.get("finished"))
    started = moment((rollback or {}).get("started"))
    if rollback and not_before(started, finished):
        # rollback.yml ran after the run record was last written: its outcome is the latest word.
        result = rollback.get("rollback") or {}
        if not isinstance(result, dict) or not true(result.get("succeeded", False)):
            return {}
        return dict(by="rollback.yml", record=rollback_path, mode=result.get("mode", ""),
                    requested_mode=result.get("requested_mode", ""), started=rollback.get("started", ""),
                    finished=rollback.get("finished", ""), version_after=str(result.get("version_after", "")))
    result = record.get("rollback") or {}
    if isinstance(result, dict) and true(result.get("succeeded", False)):
        return dict(by="migrate.yml", record=path, mode=result.get("mode", ""),
                    requested_mode=result.get("requested_mode", ""), started=record.get("started", ""),
                    finished=record.get("finished", ""), version_after=str(result.get("version_after", "")))
    return {}


def find(run_dir, host, run_id="", warn=None):
    """The record a rollback works from: run_id's, or host's newest with a backup.

    Returns found, record, path, read (records read) and rolled_back (the latest successful rollback).
    """
    warn = warn or (lambda message: None)
    paths = [os.path.join(run_dir, run_id, "run.json")] if run_id else candidates(run_dir)
    result = dict(found=False, record={}, read=0, rolled_back={})
    for path in paths:
        if not os.path.isfile(path):
            continue
        record, error = load(path)
        result["read"] += 1
        if record is None:
            warn("Run record %s is unreadable (%s); it was skipped." % (path, error))
            continue
        if not matches(record, host):
            continue
        rollback_path = os.path.join(os.path.dirname(path), "rollback.json")
        rollback = None
        if os.path.isfile(rollback_path):
            rollback, error = load(rollback_path)
            if rollback is None:
                warn("Rollback record %s is unreadable (%s); it was not taken into account." % (
                    rollback_path, error))
        result.update(found=True, record=record, path=path,
                      rolled_back=rolled_back(record, path, rollback, rollback_path))
        break
    return result
