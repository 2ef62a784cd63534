# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data check of a migration: each table judged by what the applied files may do to it.

Pure functions over two snapshots (``snapshot.take``'s shape: per table ``rows``, ``checksum``
and, for tables figured over some columns only, ``columns``) and the per-table changes of
``analysis.analyse_plan``. Written here because the rules are this collection's own:

* a table no statement touches must equal the baseline (the state when the migration
  started, with the application's writes stopped); any difference is an error;
* a table the files write may change content and gain rows, but rows that disappear where no
  statement (or cascade) deletes are lost data;
* a table whose columns the files change keeps every row and, in the columns it kept, every
  value (a new column with a default is not a change of every row);
* new tables are reported with their row counts, dropped ones with what they held;
* a table the rehearsal migrated on the backup's verified copy, where production had no write between the backup
  and the baseline, should end with as many rows as there; where it does not, the files' statements are not
  deterministic (now(), random()) or something else wrote: a warning (content is not compared: now() and
  triggers that stamp modified_at make it differ by nature);
* a change no statement explains, where a statement the analysis cannot read (a DO block, a
  function call) ran, is still an error: it is never silently allowed. An operator may declare
  it (``allow_changes``), which turns it into a warning.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.tmi.migration.plugins.module_utils.snapshot import incomparable, same_content, whole_rows

ERROR = "error"
WARNING = "warning"
# Checks that are reported but never fail a run unless an operator promotes them (validate_fail_on).
WARNING_CHECKS = frozenset(["duplicate_index", "plan", "declared_change", "unused_index", "differs_from_rehearsal"])


def severity(check):
    return WARNING if check in WARNING_CHECKS else ERROR


def finding(check, message, **details):
    details.update(check=check, message=message, severity=severity(check))
    return details


def normalise_allowed(allow):
    """``allow_changes`` items (a table name, or {table, changes}) as {table: set of kinds or {'any'}}."""
    allowed = {}
    for item in allow or ():
        if isinstance(item, dict):
            kinds = item.get("changes") or ["any"]
            allowed.setdefault(item["table"], set()).update(kinds if isinstance(kinds, list) else [kinds])
        else:
            allowed.setdefault(str(item), set()).add("any")
    return dict((("public." + t) if "." not in t else t, kinds) for t, kinds in allowed.items())


def _by(change):
    """Who does what to a table, for messages: '000018 line 3: updates rows'."""
    parts = []
    for item in change.get("by", []):
        where = ("%06d line %s" % (item["version"], item["line"])) if item.get("version") is not None else "cascade"
        parts.append("%s: %s" % (where, item["what"]))
    return "; ".join(parts)


def rehearsed_results(baseline, rehearsed, rehearsed_from):
    """{table: figures} the migration should end with: the rehearsal's figures after the up files
    (``rehearsed``), for the tables whose baseline equals what the rehearsal started from
    (``rehearsed_from``, the backup's figures) - production had no write to them since the backup."""
    expected = {}
    for table, figures in (rehearsed or {}).items():
        start, before = (rehearsed_from or {}).get(table), (baseline or {}).get(table)
        if start is not None and before is not None and whole_rows(start) == whole_rows(before):
            expected[table] = figures
    return expected


def judge(baseline, after, changes, unknown=(), allow=None, ignore=(), expected=None):
    """Per table a verdict row, and the findings (each with a severity).

    ``expected``: {table: figures} the rehearsal says the table ends with (``rehearsed_results``).
    Returns (rows, findings). ``rows``: [{table, rows_before, rows_after, content, does, by,
    verdict, message}], one per table of either snapshot.
    """
    allowed = normalise_allowed(allow)
    unexplained_hint = ""
    if unknown:
        unexplained_hint = (" Statements the analysis cannot read ran (%s): if one of them made this change, declare "
                            "the table as an allowed change (tmi_allow_changes)." % "; ".join(
                                "%06d line %s: %s" % (u["version"], u["line"], u["reason"]) for u in unknown[:3]))
    rows, findings = [], []
    for table in sorted(set(baseline) | set(after) | set(changes)):
        if table in ignore:
            continue
        before, now = baseline.get(table), after.get(table)
        change = changes.get(table)
        if before is None and change and change.get("renamed_from") in baseline:
            before = baseline[change["renamed_from"]]  # the rows move with the name
        row = dict(table=table, rows_before=before["rows"] if before else None,
                   rows_after=now["rows"] if now else None, does=sorted(change["does"]) if change else [],
                   by=_by(change) if change else "", verdict="ok", message="")
        problem = _table_problem(table, before, now, change) or _rehearsal_problem(table, now, (expected or {}))
        if now is None:
            row["content"] = "dropped" if before is not None or (change and change.get("state") == "gone") \
                else "absent"
        elif before is None:
            row["content"] = "new"
        else:
            row["content"] = {True: "unchanged", False: "changed", None: "not comparable"}[same_content(before, now)]
            if before.get("columns") is not None:
                row["compared_columns"] = before["columns"]
        if problem:
            check, message = problem
            kinds = allowed.get(table, set())
            if "any" in kinds or (check in ("data_lost", "data_changed") and kinds & _kinds_of(check, before, now)):
                check, message = "declared_change", message + " (declared as an allowed change)"
            elif change is None and unknown:
                check, message = "unknown_change", message + "." + unexplained_hint
            found = finding(check, message, table=table, expected=before, actual=now)
            findings.append(found)
            row.update(verdict=found["severity"], message=message)
        rows.append(row)
    return rows, findings


def _rehearsal_problem(table, now, expected):
    # Row counts only: content written by now(), a trigger's modified_at or a random key differs by nature.
    want = expected.get(table)
    if want is None or now is None or now["rows"] == want["rows"]:
        return None
    return ("differs_from_rehearsal", "%s ends with %d rows instead of the %d the rehearsal on the backup's "
            "verified copy ended with from the same data: a statement of its files depends on the moment or the "
            "database (now(), random(), an unordered LIMIT), or something else wrote to it"
            % (table, now["rows"], want["rows"]))


def _kinds_of(check, before, now):
    """The kinds of change an operator's declaration must name to cover a difference: rows, a table or
    columns lost need ``delete``; rows added or changed need ``write``."""
    if before is None or now is None:
        return {"delete"} if now is None else {"write"}
    lost_columns = [c for c in before.get("columns") or [] if c not in (now.get("columns") or before["columns"])]
    if lost_columns or now["rows"] < before["rows"]:
        return {"delete"}
    return {"write"}


def _table_problem(table, before, now, change):
    """(check, message) when the table's figures break what its files may do, else None."""
    does = set(change["does"]) if change else set()
    state = change.get("state") if change else None
    if state == "gone":
        return None  # dropped or renamed away by the files; what it held is in the row's figures
    if state == "created" and now is None:
        return ("missing_table", "%s is created by %s but does not exist after the migration" % (table, _by(change)))
    if state == "created" and change.get("renamed_from") and before is not None:
        does.discard("create")  # renamed: judged like the table it was, by what the files do to it
    elif state == "created" and (before is None or not change.get("if_not_exists")):
        return None  # new (or dropped and created again): reported, nothing to compare with
    if before is None and now is None:
        return None
    if before is None:
        return ("data_changed", "%s appeared (%d rows) but no statement creates it" % (table, now["rows"]))
    if now is None:
        return ("data_lost", "%s no longer exists (it had %d rows) and no statement drops it" % (table, before["rows"]))
    missing = [c for c in before.get("columns") or [] if c not in (now.get("columns") or before["columns"])]
    if missing:
        return ("data_lost", "%s lost the columns %s, which no statement drops" % (table, ", ".join(missing)))
    deletes, writes = "delete" in does, "write" in does
    if now["rows"] < before["rows"] and not deletes:
        return ("data_lost", "%s: %d rows expected, %d found: %d rows disappeared and no statement%s deletes from it"
                % (table, before["rows"], now["rows"], before["rows"] - now["rows"],
                   " of the files (%s)" % _by(change) if change else ""))
    if deletes and not writes and now["rows"] > before["rows"]:
        return ("data_changed", "%s: %d rows expected at most, %d found: its files only delete from it (%s)"
                % (table, before["rows"], now["rows"], _by(change)))
    if writes or deletes:
        return None
    if now["rows"] != before["rows"]:
        return ("data_changed", "%s: %d rows expected, %d found, and no statement writes to it"
                % (table, before["rows"], now["rows"]))
    if same_content(before, now) is None:
        return ("incomparable_figures", incomparable(table, before, now))
    if now["checksum"] != before["checksum"]:
        what = ("the columns it kept (%s)" % ", ".join(before["columns"])) if before.get("columns") is not None \
            else "its rows"
        return ("data_changed", "%s: the content of %s changed, and no statement writes to it" % (table, what))
    return None


def discards(backup, live, changes=None, baseline=None, after=None, ignore=()):
    """What swapping a backup in over the live database would throw away, per table.

    ``live`` is the live database's figures now, or None when nobody but the migration wrote since
    the baseline was taken (the run's own maintenance window): then the baseline stands for it. A table the run's
    files did not touch must equal the backup. A table they touched must have had, when the
    migration started (``baseline``), what the backup holds; and, when ``live`` was read after
    the run, what the post-migration check found (``after``) - a table it has no figures of
    cannot be vouched for. A table the backup does not have and the run did not create would
    be dropped. Figures over some columns only are compared on their whole rows.
    """
    changes, baseline, after = changes or {}, baseline or {}, after or {}
    in_window = live is None
    live = baseline if in_window else live
    found = []

    def differ(table, then, now, when):
        if now is None:
            return  # gone from the database compared: the restore brings it back
        if then is None:
            found.append(dict(table=table, backup_rows=None, live_rows=now["rows"],
                              message="%s holds %d rows %s and the backup has no such table: the swap would drop it"
                                      % (table, now["rows"], when)))
        elif same_content(then, now) is None:
            found.append(dict(table=table, backup_rows=then["rows"], live_rows=now["rows"],
                              message=incomparable(table, then, now) + ": the swap cannot be shown to discard nothing"))
        elif whole_rows(then) != whole_rows(now):
            extra = now["rows"] - then["rows"]
            found.append(dict(table=table, backup_rows=then["rows"], live_rows=now["rows"],
                              message="%s: %d rows in the backup, %d %s: %s" % (
                                  table, then["rows"], now["rows"], when,
                                  ("%d rows written since would be lost" % extra) if extra > 0 else
                                  "rows written, changed or deleted since would be undone")))

    for table in sorted(set(backup) | set(live) | set(baseline) | set(after)):
        if table in ignore:
            continue
        change = changes.get(table)
        if change is None:
            differ(table, backup.get(table), live.get(table), "when the migration started" if in_window else "now")
            continue
        if table in baseline:
            differ(table, backup.get(table), baseline[table], "when the migration started")
        if in_window:
            continue  # what differs from the baseline now is the run's own doing
        if table in after:
            differ(table, after[table], live.get(table), "now against the %d rows after the migration"
                   % after[table]["rows"])
        elif table in live and (table in backup or change.get("state") == "created"):
            found.append(dict(table=table, backup_rows=(backup.get(table) or {}).get("rows"),
                              live_rows=live[table]["rows"],
                              message="%s: the run changed it and recorded no figures after the migration, so rows "
                                      "written since cannot be told from the migration's changes" % table))
    return found
