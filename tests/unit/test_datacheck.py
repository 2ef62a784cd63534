"""Pure functions of module_utils/datacheck.py: per-table verdicts of a migration and what a swap would discard."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import datacheck

T = "public.t"
UNKNOWN = [dict(version=18, line=7, reason="a DO block, whose effect cannot be read statically")]


def fig(rows, checksum="c", columns=None, row_checksum=None):
    entry = {"rows": rows, "checksum": checksum}
    if columns is not None:
        entry.update(columns=list(columns), row_checksum=row_checksum)
    return entry


def change(*does, **extra):
    by = extra.pop("by", [dict(version=18, line=3, what="updates rows")])
    return dict(does=list(does), added=[], dropped=[], changed=[], by=by, **extra)


CASCADED = change("delete", by=[dict(version=None, line=None, cascade_from="public.p",
                                     what="rows deleted through ON DELETE CASCADE (t_p_fkey from public.p)")])

# (before, after, change, check or None, content)
CASES = {
    "untouched equal": (fig(5), fig(5), None, None, "unchanged"),
    "untouched gains rows": (fig(5), fig(6, "d"), None, "data_changed", "changed"),
    "untouched loses rows": (fig(5), fig(4, "d"), None, "data_lost", "changed"),
    "untouched content changes": (fig(5), fig(5, "d"), None, "data_changed", "changed"),
    "untouched disappears": (fig(5), None, None, "data_lost", "dropped"),
    "appears uncreated": (None, fig(2), None, "data_changed", "new"),
    "write gains rows": (fig(5), fig(9, "d"), change("write"), None, "changed"),
    "write changes content": (fig(5), fig(5, "d"), change("write"), None, "changed"),
    "write loses rows": (fig(5), fig(4, "d"), change("write"), "data_lost", "changed"),
    "delete loses rows": (fig(5), fig(1, "d"), change("delete"), None, "changed"),
    "truncated": (fig(5), fig(0, "0"), change("delete"), None, "changed"),
    "cascade delete": (fig(5), fig(2, "d"), CASCADED, None, "changed"),
    "cascade set null loses rows": (fig(5), fig(2, "d"), change("write", by=CASCADED["by"]), "data_lost", "changed"),
    "none loses rows": (fig(5), fig(4, "d"), change("none"), "data_lost", "changed"),
    "none changes content": (fig(5), fig(5, "d"), change("none"), "data_changed", "changed"),
    "created": (None, fig(3), change("create", state="created"), None, "new"),
    "created missing": (None, None, change("create", state="created"), "missing_table", "absent"),
    "recreated": (fig(5), fig(0, "0"), change("drop", "create", state="created"), None, "changed"),
    "if not exists on existing": (fig(5), fig(6, "d"), change("create", state="created", if_not_exists=True),
                                  "data_changed", "changed"),
    "dropped": (fig(5), None, change("drop", state="gone"), None, "dropped"),
    "renamed away": (fig(5), None, change("rename", state="gone"), None, "dropped"),
    "created then dropped": (None, None, change("create", "drop", state="gone"), None, "dropped"),
    "alter equal": (fig(5, "k", ["id", "a"]), fig(5, "k", ["id", "a"]), change("alter"), None, "unchanged"),
    "alter content": (fig(5, "k", ["id", "a"]), fig(5, "x", ["id", "a"]), change("alter"), "data_changed",
                      "changed"),
    "alter loses rows": (fig(5, "k", ["id"]), fig(4, "x", ["id"]), change("alter"), "data_lost", "changed"),
    "alter gains rows": (fig(5, "k", ["id"]), fig(6, "x", ["id"]), change("alter"), "data_changed", "changed"),
    "alter loses a column": (fig(5, "k", ["id", "a"]), fig(5, "x", ["id"]), change("alter"), "data_lost",
                             "changed"),
    "alter and write": (fig(5, "k", ["id"]), fig(5, "x", ["id"]), change("alter", "write"), None, "changed"),
}


@pytest.mark.parametrize("before, after, change_, check, content", CASES.values(), ids=list(CASES))
def test_judge(before, after, change_, check, content):
    rows, findings = datacheck.judge({T: before} if before else {}, {T: after} if after else {},
                                     {T: change_} if change_ else {})
    assert [row["table"] for row in rows] == [T]
    row = rows[0]
    assert row["content"] == content
    assert row["rows_before"] == (before["rows"] if before else None)
    assert row["rows_after"] == (after["rows"] if after else None)
    assert row["does"] == sorted(change_["does"] if change_ else [])
    if check is None:
        assert findings == [] and row["verdict"] == "ok" and row["message"] == ""
    else:
        assert [(f["check"], f["severity"], f["table"]) for f in findings] == [(check, "error", T)]
        assert findings[0]["expected"] == before and findings[0]["actual"] == after
        assert row["verdict"] == "error" and row["message"] == findings[0]["message"]
        assert T in row["message"]


def test_lost_rows_of_a_written_table_name_the_files():
    _rows, findings = datacheck.judge({T: fig(5)}, {T: fig(3)}, {T: change("write")})
    message = findings[0]["message"]
    assert "2 rows disappeared" in message and "000018 line 3: updates rows" in message


def test_a_projected_comparison_names_the_columns():
    rows, findings = datacheck.judge({T: fig(5, "k", ["id", "a"])}, {T: fig(5, "x", ["id", "a"])}, {T: change("alter")})
    assert rows[0]["compared_columns"] == ["id", "a"]
    assert "the columns it kept (id, a)" in findings[0]["message"]
    _rows, findings = datacheck.judge({T: fig(5, "k", ["id", "a"])}, {T: fig(5, "k", ["id"])}, {T: change("alter")})
    assert "lost the columns a" in findings[0]["message"]


def test_an_unknown_statement_makes_an_unexplained_change_unknown_change():
    rows, findings = datacheck.judge({T: fig(5), "public.u": fig(1)}, {T: fig(6, "d"), "public.u": fig(1)}, {},
                                     unknown=UNKNOWN)
    assert [(f["check"], f["severity"]) for f in findings] == [("unknown_change", "error")]
    assert "000018 line 7: a DO block" in findings[0]["message"]
    assert [row["verdict"] for row in rows] == ["error", "ok"]


def test_an_unknown_statement_does_not_excuse_a_table_the_files_touch():
    _rows, findings = datacheck.judge({T: fig(5)}, {T: fig(4)}, {T: change("write")}, unknown=UNKNOWN)
    assert [f["check"] for f in findings] == ["data_lost"]


@pytest.mark.parametrize("allow", [["public.t"], ["t"], [dict(table="public.t", changes=["write"])],
                                   [dict(table="t", changes="write")], [dict(table="public.t")]])
def test_a_declared_change_is_a_warning(allow):
    rows, findings = datacheck.judge({T: fig(5)}, {T: fig(6, "d")}, {}, unknown=UNKNOWN, allow=allow)
    assert [(f["check"], f["severity"]) for f in findings] == [("declared_change", "warning")]
    assert "declared as an allowed change" in findings[0]["message"]
    assert rows[0]["verdict"] == "warning"


def test_a_declared_delete_covers_lost_rows_only():
    allow = [dict(table=T, changes=["delete"])]
    _rows, gained = datacheck.judge({T: fig(5)}, {T: fig(6, "d")}, {}, unknown=UNKNOWN, allow=allow)
    assert [f["check"] for f in gained] == ["unknown_change"]
    _rows, lost = datacheck.judge({T: fig(5)}, {T: fig(4, "d")}, {}, allow=allow)
    assert [f["check"] for f in lost] == ["declared_change"]


def test_a_declared_change_is_found_without_unknown_statements_too():
    _rows, findings = datacheck.judge({T: fig(5)}, {T: fig(5, "d")}, {}, allow=[dict(table=T, changes=["write"])])
    assert [(f["check"], f["severity"]) for f in findings] == [("declared_change", "warning")]


def test_ignored_tables_are_left_out():
    rows, findings = datacheck.judge({T: fig(5), "public.schema_migrations": fig(1, "a")},
                                     {T: fig(5), "public.schema_migrations": fig(1, "b")}, {},
                                     ignore=["public.schema_migrations"])
    assert [row["table"] for row in rows] == [T] and findings == []


def test_every_table_of_either_snapshot_or_the_changes_gets_a_row():
    created = {"public.c": change("create", state="created")}
    rows, _findings = datacheck.judge({"public.a": fig(1)}, {"public.b": fig(1)}, created)
    assert [row["table"] for row in rows] == ["public.a", "public.b", "public.c"]


def test_a_table_only_deleted_from_must_not_gain_rows():
    _rows, findings = datacheck.judge({T: fig(5)}, {T: fig(9, "d")}, {T: change("delete")})
    assert [f["check"] for f in findings] == ["data_changed"]


@pytest.mark.parametrize("allow, expected", [
    (None, {}),
    (["t", "other.u"], {"public.t": {"any"}, "other.u": {"any"}}),
    ([dict(table="t", changes=["write"]), dict(table="t", changes="delete")], {"public.t": {"write", "delete"}}),
    ([dict(table="app.v")], {"app.v": {"any"}}),
])
def test_normalise_allowed(allow, expected):
    assert datacheck.normalise_allowed(allow) == expected


@pytest.mark.parametrize("check, level", [("duplicate_index", "warning"), ("plan", "warning"),
                                          ("declared_change", "warning"), ("unused_index", "warning"),
                                          ("data_lost", "error"), ("data_changed", "error"),
                                          ("unknown_change", "error"), ("missing_table", "error")])
def test_severity(check, level):
    assert datacheck.severity(check) == level
    assert datacheck.finding(check, "m", table=T) == dict(check=check, message="m", severity=level, table=T)


def test_discards_untouched_equal_is_nothing():
    assert datacheck.discards({T: fig(5)}, {T: fig(5)}) == []


def test_discards_rows_written_after_the_backup():
    found = datacheck.discards({T: fig(5)}, {T: fig(8, "d")})
    assert [(f["table"], f["backup_rows"], f["live_rows"]) for f in found] == [(T, 5, 8)]
    assert "3 rows written since would be lost" in found[0]["message"]
    changed = datacheck.discards({T: fig(5)}, {T: fig(5, "d")})
    assert "would be undone" in changed[0]["message"]


def test_discards_a_table_created_after_the_backup():
    found = datacheck.discards({}, {T: fig(4)})
    assert [(f["table"], f["backup_rows"], f["live_rows"]) for f in found] == [(T, None, 4)]
    assert "would drop it" in found[0]["message"]


def test_discards_nothing_for_a_table_gone_from_live():
    assert datacheck.discards({T: fig(5)}, {}) == []


def test_in_the_runs_window_the_baseline_stands_for_the_live_database():
    changes = {T: change("write"), "public.new": change("create", state="created")}
    untouched = "public.u"
    backup = {T: fig(5), untouched: fig(3)}
    # Nothing written before the migration: what the migration itself did is not a discard.
    assert datacheck.discards(backup, None, changes, baseline={T: fig(5), untouched: fig(3)}) == []
    found = datacheck.discards(backup, None, changes, baseline={T: fig(7, "d"), untouched: fig(4, "e")})
    assert [(f["table"], f["backup_rows"], f["live_rows"]) for f in found] == [(T, 5, 7), (untouched, 3, 4)]
    assert all("when the migration started" in f["message"] for f in found)


def test_after_the_run_a_changed_table_must_still_hold_the_figures_after_the_migration():
    changes = {T: change("write"), "public.new": change("create", state="created")}
    backup, baseline = {T: fig(5)}, {T: fig(5)}
    after = {T: fig(50, "migrated"), "public.new": fig(2, "n")}
    live = {T: fig(50, "migrated"), "public.new": fig(2, "n")}
    assert datacheck.discards(backup, live, changes, baseline, after) == []
    live = {T: fig(53, "written"), "public.new": fig(3, "m")}
    found = datacheck.discards(backup, live, changes, baseline, after)
    assert [(f["table"], f["live_rows"]) for f in found] == [("public.new", 3), (T, 53)]
    assert "3 rows written since would be lost" in found[1]["message"]
    # Without figures after the migration a changed table cannot be vouched for.
    unknown = datacheck.discards(backup, {T: fig(50, "migrated")}, changes, baseline, {})
    assert [f["table"] for f in unknown] == [T] and "cannot be told" in unknown[0]["message"]


def test_discards_compare_projected_figures_on_their_whole_rows():
    changes = {T: change("alter")}
    backup = {T: fig(5, "full")}
    same = fig(5, "proj", ["id"], row_checksum="full")
    assert datacheck.discards(backup, None, changes, baseline={T: same}) == []
    updated = fig(5, "proj", ["id"], row_checksum="other")  # same rows, a value changed before the migration
    assert [f["table"] for f in datacheck.discards(backup, None, changes, baseline={T: updated})] == [T]
    more = fig(6, "proj", ["id"], row_checksum="full6")
    found = datacheck.discards(backup, None, changes, baseline={T: more})
    assert [(f["backup_rows"], f["live_rows"]) for f in found] == [(5, 6)]


def test_discards_skips_ignored_tables():
    assert datacheck.discards({T: fig(5)}, {T: fig(9), "public.n": fig(1)}, ignore=[T, "public.n"]) == []


def test_declaring_writes_does_not_cover_a_lost_table_or_lost_columns():
    allow = [dict(table=T, changes=["write"])]
    _rows, gone = datacheck.judge({T: fig(10)}, {}, {}, allow=allow)
    assert [f["check"] for f in gone] == ["data_lost"]
    _rows, columns = datacheck.judge({T: fig(10, "c", ["id", "name"])}, {T: fig(10, "c", ["id"])}, {}, allow=allow)
    assert [f["check"] for f in columns] == ["data_lost"]


def test_a_renamed_table_is_judged_against_the_rows_it_had():
    changes = {T: change("rename", state="gone", renamed_to="public.u"),
               "public.u": change("create", state="created", renamed_from=T)}
    rows, findings = datacheck.judge({T: fig(10)}, {"public.u": fig(10)}, changes)
    assert findings == [] and {r["table"]: r["content"] for r in rows} == {T: "dropped", "public.u": "unchanged"}
    _rows, lost = datacheck.judge({T: fig(10)}, {"public.u": fig(3, "d")}, changes)
    assert [(f["check"], f["table"]) for f in lost] == [("data_lost", "public.u")]


def test_a_table_production_did_not_write_since_the_backup_must_end_as_in_the_rehearsal():
    written = {"public.metadata": change("write")}
    start = {"public.metadata": fig(10, "1")}
    rehearsed = {"public.metadata": fig(10, "2")}
    expected = datacheck.rehearsed_results(start, rehearsed, start)
    assert expected == rehearsed
    _rows, findings = datacheck.judge(start, rehearsed, written, expected=expected)
    assert findings == []
    # Content written by now() or a modified_at trigger differs by nature: only the rows count.
    _rows, findings = datacheck.judge(start, {"public.metadata": fig(10, "3")}, written, expected=expected)
    assert findings == []
    _rows, findings = datacheck.judge(start, {"public.metadata": fig(11, "3")}, written, expected=expected)
    assert [f["check"] for f in findings] == ["differs_from_rehearsal"] and findings[0]["severity"] == "warning"
    assert "11 rows instead of the 10" in findings[0]["message"]
    # Production wrote to the table between the backup and the baseline: the rehearsal says nothing of it.
    assert datacheck.rehearsed_results({"public.metadata": fig(11, "9")}, rehearsed, start) == {}


def test_figures_of_different_algorithms_are_never_judged_equal_or_changed():
    hashed = dict(fig(5, "c"), algorithm="hash64")  # the same checksum text, by another algorithm
    rows, findings = datacheck.judge({T: fig(5, "c")}, {T: hashed}, {})
    assert rows[0]["content"] == "not comparable"
    assert [(f["check"], f["severity"]) for f in findings] == [("incomparable_figures", "error")]
    assert "computed by different algorithms (md5 and hash64)" in findings[0]["message"]
    # Row counts still compare: rows lost are lost whatever the checksums.
    _rows, lost = datacheck.judge({T: fig(5)}, {T: dict(fig(4), algorithm="hash64")}, {})
    assert [f["check"] for f in lost] == ["data_lost"]


def test_a_swap_whose_figures_cannot_be_compared_is_refused():
    found = datacheck.discards({T: fig(5, "c")}, {T: dict(fig(5, "c"), algorithm="hash64")})
    assert [f["table"] for f in found] == [T]
    assert "cannot be compared" in found[0]["message"] and "cannot be shown to discard nothing" in found[0]["message"]
    # Nor does a rehearsal's figure stand for a table whose backup figure was computed otherwise.
    assert datacheck.rehearsed_results({T: fig(5, "c")}, {T: fig(6)}, {T: dict(fig(5, "c"), algorithm="hash64")}) == {}
