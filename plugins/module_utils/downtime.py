# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where maintenance mode goes in a run: the maintenance window decided from the plan.

Pure functions over the run record (``record.py``): the plan and its statement analysis
(``analysis.py``), and the rehearsal's observations (``rehearsal.py``). Written here because the
decision is this collection's own: no library knows what a file's rehearsal measured.

A file needs the application's writes stopped (maintenance mode) when

- writers would wait on it longer than ``max_write_stall`` seconds: the rehearsal saw it hold a lock
  that blocks writes (SHARE or stronger) on a table for longer; without a rehearsal, the analysis
  predicts such a lock on a table the plan does not create (how long it is held is unknown); or
- it changes rows the data check must compare (it writes, deletes, drops, renames, retypes or drops
  columns, or has a statement whose effect is unknown): the data check compares figures taken while
  writes are stopped, before and after the files that change data, and cannot tell the
  application's writes from the files' changes otherwise.

The window is the span of the plan from the first to the last file that needs it. The files before
it and after it run with the application serving.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.tmi.migration.plugins.module_utils import locks

MODES = ("auto", "always", "never")
# What a file does to a table that changes the rows of an existing table.
CHANGES_ROWS = ("write", "delete", "drop", "rename")


def _files(record):
    migration = record.get("migration") or {}
    plan = migration.get("plan") or []
    analysed = dict((f.get("version"), f) for f in (migration.get("analysis") or {}).get("files") or []
                    if f.get("direction") == "up")
    return plan, analysed


def _rehearsed(record):
    """{version: rehearsal entry} of the up files the rehearsal ran through, when it ran them all."""
    rehearsal = record.get("rehearsal") or {}
    if not rehearsal.get("rehearsed") or not rehearsal.get("up_ok"):
        return {}
    return dict((entry.get("version"), entry) for entry in rehearsal.get("up") or [] if entry.get("ok", True))


def write_stalls(statements):
    """{table: (mode, seconds)}: per table the longest a rehearsed file's statements held a lock that blocks
    writes, with the strongest such mode."""
    found = {}
    for statement in statements or []:
        held = statement.get("held") or {}
        for table, mode in (statement.get("taken") or {}).items():
            if mode in locks.BLOCKS_WRITES and table in held:
                seconds, strongest = found.get(table, (0, None))
                found[table] = (max(seconds, held[table]),
                                mode if locks.stronger(mode, strongest) else strongest)
    return dict((table, (mode, seconds)) for table, (seconds, mode) in found.items())


def _created(analysed):
    """The tables the plan creates anew: created by a statement, never dropped or renamed by one (a table dropped
    and created again, or a copy renamed over the original, holds the application's rows: not new)."""
    does = {}
    for migration in analysed.values():
        for statement in migration.get("statements") or []:
            for table, entry in (statement.get("tables") or {}).items():
                does.setdefault(table, set()).update(entry.get("does") or [])
                for renamed in (entry.get("renamed_to"), entry.get("renamed_from")):
                    if renamed:
                        does.setdefault(renamed, set()).add("rename")
    return set(table for table, done in does.items() if "create" in done and not done & {"drop", "rename"})


def data_reasons(migration, created=()):
    """Why a file changes rows the data check must compare (empty: it changes none)."""
    reasons = []
    for statement in migration.get("statements") or []:
        line = statement.get("line")
        if statement.get("unknown"):
            reasons.append("line %s has an effect the analysis cannot know (%s)" % (line, statement["unknown"]))
            continue
        for table, entry in sorted((statement.get("tables") or {}).items()):
            does = [d for d in entry.get("does") or [] if d in CHANGES_ROWS]
            if table in created and not set(does) & {"drop", "rename"}:
                continue
            columns = list(entry.get("dropped") or []) + list(entry.get("changed") or [])
            if does:
                reasons.append("line %s %ss %s" % (line, "/".join(does), table))
            elif columns:
                reasons.append("line %s drops or changes column%s %s of %s" % (
                    line, "s" if len(columns) > 1 else "", ", ".join(columns), table))
    return reasons


def predicted_stalls(migration, created=(), online_index_builds=False):
    """{table: mode}: the write-blocking locks the analysis predicts for a file not rehearsed."""
    kinds = [statement.get("kind") for statement in migration.get("statements") or []]
    if online_index_builds and kinds and all(kind == "IndexStmt" for kind in kinds):
        return {}  # pg_migrate builds them CONCURRENTLY: SHARE UPDATE EXCLUSIVE, which writers pass
    found = {}
    for statement in migration.get("statements") or []:
        for table, mode in (statement.get("locks") or {}).items():
            if table not in created and mode in locks.BLOCKS_WRITES and locks.stronger(mode, found.get(table)):
                found[table] = mode
    return found


def judge_file(migration, rehearsed, max_write_stall, created=(), online_index_builds=False):
    """One file's verdict: {version, title, needs, reasons, stall, measured}."""
    verdict = dict(version=migration.get("version"), title=migration.get("title", ""), needs=False, reasons=[],
                   stall=0.0, measured=rehearsed is not None)
    if rehearsed is not None:
        for table, (mode, seconds) in sorted(write_stalls(rehearsed.get("statements")).items()):
            verdict["stall"] = max(verdict["stall"], seconds)
            if seconds > max_write_stall:
                verdict["reasons"].append("holds %s on %s for %.3f s in the rehearsal (tmi_max_write_stall %s s)"
                                          % (mode, table, seconds, max_write_stall))
    else:
        for table, mode in sorted(predicted_stalls(migration, created, online_index_builds).items()):
            verdict["stall"] = None
            verdict["reasons"].append("takes %s on %s, which blocks writes, for a time only a rehearsal measures"
                                      % (mode, table))
    verdict["reasons"].extend("changes data: %s" % reason for reason in data_reasons(migration, created))
    verdict["needs"] = bool(verdict["reasons"])
    return verdict


def window(record, mode="auto", max_write_stall=1.0, app_enabled=True, online_index_builds=False):
    """The maintenance window of a run whose plan is in ``record``: a dict (see the maintenance_window filter).

    ``effective``: ``always`` (maintenance mode from before the files until the application is back, the
    data check compared at validation), ``window`` (maintenance mode around the files from ``first`` to
    ``last`` only, the data check compared before it ends) or ``none`` (no maintenance mode; no data
    comparison: the files that ran change no rows).
    """
    if mode not in MODES:
        raise ValueError("tmi_maintenance is %r; it must be one of %s" % (mode, ", ".join(MODES)))
    max_write_stall = float(max_write_stall)
    if max_write_stall < 0:
        raise ValueError("tmi_max_write_stall is %s; it must be 0 or more seconds" % max_write_stall)
    plan, analysed = _files(record)
    rehearsed = _rehearsed(record)
    created = _created(analysed)
    result = dict(mode=mode, max_write_stall=max_write_stall, effective="none", files=[], first=None, last=None,
                  before_target=None, migrate_target=None, after_target=None, reason="", lines=[])
    versions = [step.get("version") for step in plan]
    if not plan:
        result["reason"] = "nothing to migrate"
        return result
    going_up = all(step.get("direction") == "up" for step in plan)
    for step in plan:
        migration = analysed.get(step.get("version")) or dict(version=step.get("version"), title=step.get("title"))
        result["files"].append(judge_file(migration, rehearsed.get(step.get("version")), max_write_stall, created,
                                          online_index_builds) if going_up else
                               dict(version=step.get("version"), title=step.get("title", ""), needs=True,
                                    reasons=["the plan goes down"], stall=None, measured=False))
    needing = [f["version"] for f in result["files"] if f["needs"]]
    if mode == "always" or not going_up or (not app_enabled and mode != "never"):
        result.update(effective="always", first=versions[0], last=versions[-1], reason=(
            "tmi_maintenance=always" if mode == "always" else
            "the plan goes down" if not going_up else
            "the application is not managed here (tmi_app_enabled=false): its writes are taken as stopped for the "
            "whole migration, and the data check compares when it ends"))
    elif mode == "never" or not needing:
        result["reason"] = ("tmi_maintenance=never: no data is compared, even where a file changes rows while the "
                            "application writes" if mode == "never" else
                            "no file blocks writers longer than %s s or changes data" % max_write_stall)
    else:
        first, last = versions.index(needing[0]), versions.index(needing[-1])
        result.update(effective="window", first=versions[first], last=versions[last],
                      reason="the files from %06d to %06d need writes stopped" % (versions[first], versions[last]))
        if first > 0:
            result["before_target"] = versions[first - 1]
        if last < len(versions) - 1:
            result["migrate_target"] = versions[last]
            result["after_target"] = versions[-1]
    result["lines"] = lines(result)
    return result


def lines(result):
    """What the run prints of the decision: one line for it, then one per file."""
    head = {"always": "Maintenance mode from %s to the end of the run (%s)",
            "window": "Maintenance mode only around %s (%s)",
            "none": "No maintenance mode (%s)"}[result["effective"]]
    span = ("%06d-%06d" % (result["first"], result["last"]) if result["first"] != result["last"]
            else "%06d" % result["first"]) if result["first"] is not None else ""
    out = [head % ((span, result["reason"]) if result["effective"] != "none" else (result["reason"],))]
    for verdict in result["files"]:
        inside = (result["first"] is not None and result["effective"] != "none"
                  and result["first"] <= verdict["version"] <= result["last"])
        stall = "writers wait at most %.3f s" % verdict["stall"] if verdict["measured"] else "not rehearsed"
        out.append("%06d %s: %s; %s%s" % (verdict["version"], verdict["title"],
                                          "maintenance" if inside else "live", stall,
                                          ("; " + "; ".join(verdict["reasons"])) if verdict["reasons"] else ""))
    return out
