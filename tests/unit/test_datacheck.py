"""Pure functions of module_utils/datacheck.py: per-table verdicts of a migration and what a swap would discard."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import datacheck

T = "public.t"
UNKNOWN = [dict(version=18, line=7, reason="a DO block, whose effect cannot be read statically")]


def fig(rows, checksum="c", columns=None):
    entry = {"rows": rows, "checksum": checksum}
    if columns is not None:
        entry["columns"] = list(columns)
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
    _, findings = datacheck.judge({T: fig(5)}, {T: fig(3)}, {T: change("write")})
    message = findings[0]["message"]
    assert "2 rows disappeared" in message and "000018 line 3: updates rows" in message


def test_a_projected_comparison_names_the_columns():
    rows, findings = datacheck.judge({T: fig(5, "k", ["id", "a"])}, {T: fig(5, "x", ["id", "a"])}, {T: change("alter")})
    assert rows[0]["compared_columns"] == ["id", "a"]
    assert "the columns it kept (id, a)" in findings[0]["message"]
    _, findings = datacheck.judge({T: fig(5, "k", ["id", "a"])}, {T: fig(5, "k", ["id"])}, {T: change("alter")})
    assert "lost the columns a" in findings[0]["message"]


def test_an_unknown_statement_makes_an_unexplained_change_unknown_change():
    rows, findings = datacheck.judge({T: fig(5), "public.u": fig(1)}, {T: fig(6, "d"), "public.u": fig(1)}, {},
                                     unknown=UNKNOWN)
    assert [(f["check"], f["severity"]) for f in findings] == [("unknown_change", "error")]
    assert "000018 line 7: a DO block" in findings[0]["message"]
    assert [row["verdict"] for row in rows] == ["error", "ok"]


def test_an_unknown_statement_does_not_excuse_a_table_the_files_touch():
    _, findings = datacheck.judge({T: fig(5)}, {T: fig(4)}, {T: change("write")}, unknown=UNKNOWN)
    assert [f["check"] for f in findings] == ["data_lost"]


@pytest.mark.parametrize("allow", [["public.t"], ["t"], [dict(table="public.t", changes=["write"])],
                                   [dict(table="t", changes="write")], [dict(table="public.t")]])
def test_a_declared_change_is_a_warning(allow):
    rows, findings = datacheck.judge({T: fig(5)}, {T: fig(6, "d")}, {}, unknown=UNKNOWN, allow=allow)
    assert [(f["check"], f["severity"]) for f in findings] == [("declared_change", "warning")]
    assert "declared in validate_allow_changes" in findings[0]["message"]
    assert rows[0]["verdict"] == "warning"


def test_a_declared_delete_covers_lost_rows_only():
    allow = [dict(table=T, changes=["delete"])]
    _, gained = datacheck.judge({T: fig(5)}, {T: fig(6, "d")}, {}, unknown=UNKNOWN, allow=allow)
    assert [f["check"] for f in gained] == ["unknown_change"]
    _, lost = datacheck.judge({T: fig(5)}, {T: fig(4, "d")}, {}, allow=allow)
    assert [f["check"] for f in lost] == ["declared_change"]


def test_a_declared_change_is_found_without_unknown_statements_too():
    _, findings = datacheck.judge({T: fig(5)}, {T: fig(5, "d")}, {}, allow=[dict(table=T, changes=["write"])])
    assert [(f["check"], f["severity"]) for f in findings] == [("declared_change", "warning")]


def test_ignored_tables_are_left_out():
    rows, findings = datacheck.judge({T: fig(5), "public.schema_migrations": fig(1, "a")},
                                     {T: fig(5), "public.schema_migrations": fig(1, "b")}, {},
                                     ignore=["public.schema_migrations"])
    assert [row["table"] for row in rows] == [T] and findings == []


def test_every_table_of_either_snapshot_or_the_changes_gets_a_row():
    created = {"public.c": change("create", state="created")}
    rows, _ = datacheck.judge({"public.a": fig(1)}, {"public.b": fig(1)}, created)
    assert [row["table"] for row in rows] == ["public.a", "public.b", "public.c"]


def test_a_table_only_deleted_from_must_not_gain_rows():
    _, findings = datacheck.judge({T: fig(5)}, {T: fig(9, "d")}, {T: change("delete")})
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


def test_describe():
    findings = [datacheck.finding("data_lost", f"m{i}") for i in range(12)]
    assert datacheck.describe(findings[:2]) == "[data_lost] m0; [data_lost] m1"
    text = datacheck.describe(findings)
    assert text.count("[data_lost]") == 10 and text.endswith("; ... and 2 more")
    assert datacheck.describe([]) == ""


def test_discards_untouched_equal_is_nothing():
    assert datacheck.discards({T: fig(5)}, {T: fig(5)}) == []


def test_discards_rows_written_after_the_backup():
    found = datacheck.discards({T: fig(5)}, {T: fig(8, "d")})
    assert [(f["table"], f["backup_rows"], f["live_rows"]) for f in found] == [(T, 5, 8)]
    assert "3 rows written after the backup would be lost" in found[0]["message"]
    changed = datacheck.discards({T: fig(5)}, {T: fig(5, "d")})
    assert "would be undone" in changed[0]["message"]


def test_discards_a_table_created_after_the_backup():
    found = datacheck.discards({}, {T: fig(4)})
    assert [(f["table"], f["backup_rows"], f["live_rows"]) for f in found] == [(T, None, 4)]
    assert "would drop it" in found[0]["message"]


def test_discards_nothing_for_a_table_gone_from_live():
    assert datacheck.discards({T: fig(5)}, {}) == []


def test_discards_a_changed_table_through_the_baseline():
    changes = {T: change("write")}
    live = {T: fig(50, "after-migration")}
    assert datacheck.discards({T: fig(5)}, live, changes, baseline={T: fig(5)}) == []
    found = datacheck.discards({T: fig(5)}, live, changes, baseline={T: fig(7, "d")})
    assert [(f["backup_rows"], f["live_rows"]) for f in found] == [(5, 7)]
    assert "when the migration started" in found[0]["message"]
    assert datacheck.discards({T: fig(5)}, live, changes, baseline={}) == []
    assert datacheck.discards({}, live, {T: change("create", state="created")}, baseline={}) == []


def test_discards_a_projected_baseline_compares_rows_only():
    changes = {T: change("alter")}
    assert datacheck.discards({T: fig(5, "full")}, {}, changes, baseline={T: fig(5, "proj", ["id"])}) == []
    found = datacheck.discards({T: fig(5, "full")}, {}, changes, baseline={T: fig(6, "proj", ["id"])})
    assert [(f["backup_rows"], f["live_rows"]) for f in found] == [(5, 6)]


def test_discards_skips_ignored_tables():
    assert datacheck.discards({T: fig(5)}, {T: fig(9), "public.n": fig(1)}, ignore=[T, "public.n"]) == []
