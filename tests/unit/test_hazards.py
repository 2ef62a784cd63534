"""Pure function of module_utils/hazards.py: catalog facts plus the files' analysis in, findings out."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis, hazards


def catalog(identity="default", identity_index=None, published=False, views=(), update=True):
    """public.m (id primary key, k, v) with indexes m_pkey, m_k_key (constraint m_k_key) and m_v_idx."""
    indexes = {
        "public.m_pkey": dict(table="public.m", replident=False, primary=True, columns=["id"], constraint="m_pkey"),
        "public.m_k_key": dict(table="public.m", replident=False, primary=False, columns=["k"], constraint="m_k_key"),
        "public.m_v_idx": dict(table="public.m", replident=False, primary=False, columns=["v"], constraint=None),
    }
    if identity_index:
        indexes[identity_index]["replident"] = True
    return dict(
        publications={"public.m": [dict(name="pub", update=update, delete=update)]} if published else {},
        identities={"public.m": identity},
        indexes=indexes,
        views=[dict(view=view, kind="view", table="public.m", column=column) for view, column in views])


def found(sql, cat, direction="up"):
    files = analysis.analyse_plan([(7, "seven", direction, sql)])["files"]
    return sorted((f["kind"], f["severity"], f["object"]) for f in hazards.find(files, cat))


IDENTITY_ON_K = dict(identity="index", identity_index="public.m_k_key")
VIEW_ON_K = dict(views=[("public.vk", "k")])

# (case, sql, catalog, expected [(kind, severity, object)])
CASES = [
    ("nothing around the table", "ALTER TABLE m ALTER COLUMN k TYPE text", catalog(), []),
    ("the identity index dropped", "DROP INDEX m_k_key", catalog(**IDENTITY_ON_K),
     [("replica_identity", "error", "public.m_k_key")]),
    ("the identity index dropped through its constraint", "ALTER TABLE m DROP CONSTRAINT IF EXISTS m_k_key",
     catalog(**IDENTITY_ON_K), [("replica_identity", "error", "public.m_k_key")]),
    ("the identity index dropped with its column", "ALTER TABLE m DROP COLUMN k", catalog(**IDENTITY_ON_K),
     [("replica_identity", "error", "public.m_k_key")]),
    ("another index dropped", "DROP INDEX m_v_idx", catalog(**IDENTITY_ON_K), []),
    ("the identity index renamed", "ALTER INDEX m_k_key RENAME TO m_k_key2", catalog(**IDENTITY_ON_K), []),
    ("the identity index retyped (PostgreSQL keeps the identity)", "ALTER TABLE m ALTER COLUMN k TYPE text",
     catalog(**IDENTITY_ON_K), []),
    ("another identity set first", "ALTER TABLE m REPLICA IDENTITY DEFAULT; DROP INDEX m_k_key",
     catalog(**IDENTITY_ON_K), [("replica_identity", "warning", None)]),
    ("another identity set after, in the same file", "DROP INDEX m_k_key; ALTER TABLE m REPLICA IDENTITY FULL",
     catalog(**IDENTITY_ON_K), [("replica_identity", "warning", None)]),
    ("the table dropped with its identity", "DROP TABLE m", catalog(**IDENTITY_ON_K), []),
    ("identity FULL: no index to lose", "DROP INDEX m_k_key", catalog(identity="full"), []),
    ("the primary key of an unpublished table", "ALTER TABLE m DROP CONSTRAINT m_pkey", catalog(), []),
    ("the primary key of a published table", "ALTER TABLE m DROP CONSTRAINT m_pkey",
     catalog(published=True), [("replica_identity", "error", "public.m_pkey")]),
    ("a primary key of a published table replaced",
     "ALTER TABLE m DROP CONSTRAINT m_pkey; ALTER TABLE m ADD PRIMARY KEY (k)", catalog(published=True), []),
    ("the primary key of a table published for inserts only", "ALTER TABLE m DROP CONSTRAINT m_pkey",
     catalog(published=True, update=False), []),
    ("a published table's columns change", "ALTER TABLE m ADD COLUMN w int",
     catalog(published=True), [("publication", "warning", "pub")]),
    ("a published table dropped", "DROP TABLE m", catalog(published=True), [("publication", "warning", "pub")]),
    ("a published table's index dropped", "DROP INDEX m_v_idx", catalog(published=True), []),
    ("identity set on a published table", "ALTER TABLE m REPLICA IDENTITY FULL", catalog(published=True),
     [("replica_identity", "warning", None)]),
    ("a column a view uses retyped", "ALTER TABLE m ALTER COLUMN k TYPE text", catalog(**VIEW_ON_K),
     [("view", "error", "public.vk")]),
    ("a column a view uses dropped", "ALTER TABLE m DROP COLUMN k", catalog(**VIEW_ON_K),
     [("view", "error", "public.vk")]),
    ("a column a view uses dropped with CASCADE", "ALTER TABLE m DROP COLUMN k CASCADE", catalog(**VIEW_ON_K),
     [("view", "warning", "public.vk")]),
    ("a column a view uses renamed", "ALTER TABLE m RENAME COLUMN k TO kk", catalog(**VIEW_ON_K), []),
    ("another column retyped", "ALTER TABLE m ALTER COLUMN v TYPE text", catalog(**VIEW_ON_K), []),
    ("the view dropped and recreated around the change",
     "DROP VIEW vk; ALTER TABLE m ALTER COLUMN k TYPE text; CREATE VIEW vk AS SELECT k FROM m",
     catalog(**VIEW_ON_K), []),
    ("a table a view uses dropped", "DROP TABLE m", catalog(**VIEW_ON_K), [("view", "error", "public.vk")]),
    ("a table a view uses dropped with CASCADE", "DROP TABLE m CASCADE", catalog(**VIEW_ON_K),
     [("view", "warning", "public.vk")]),
    ("a DO block retyping a column a view uses",
     "DO $$ BEGIN ALTER TABLE m ALTER COLUMN k TYPE text; END $$", catalog(**VIEW_ON_K),
     [("view", "error", "public.vk")]),
    ("another schema's table of the same name", "ALTER TABLE other.m ALTER COLUMN k TYPE text",
     catalog(**VIEW_ON_K), []),
]


@pytest.mark.parametrize(("sql", "cat", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_findings(sql, cat, expected):
    assert found(sql, cat) == sorted(expected)


def test_a_finding_names_file_line_table_and_remedy():
    files = analysis.analyse_plan([(17, "enhance_metadata", "down", "SELECT 1;\nDROP INDEX m_k_key;\n")])["files"]
    (finding,) = hazards.find(files, catalog(published=True, **IDENTITY_ON_K), planned=False)
    assert {k: v for k, v in finding.items() if k != "message"} == dict(
        version=17, title="enhance_metadata", direction="down", line=2, table="public.m", kind="replica_identity",
        object="public.m_k_key", severity="error", planned=False)
    assert finding["message"].startswith("Migration 000017 enhance_metadata (down, line 2) drops index public.m_k_key, "
                                         "the replica identity of public.m (REPLICA IDENTITY USING INDEX")
    assert "publication pub" in finding["message"]
    assert "Run ALTER TABLE public.m REPLICA IDENTITY DEFAULT" in finding["message"]
    assert hazards.errors([finding]) == []  # not planned: it never stops this run
    assert hazards.errors([dict(finding, planned=True)]) == [dict(finding, planned=True)]


def test_a_view_dropped_by_an_earlier_file_is_no_longer_in_the_way():
    files = analysis.analyse_plan([(1, "a", "up", "DROP VIEW vk"),
                                   (2, "b", "up", "ALTER TABLE m ALTER COLUMN k TYPE text")])["files"]
    assert hazards.find(files, catalog(**VIEW_ON_K)) == []


def test_the_identity_index_dropped_by_a_later_file_after_the_first_moved_it():
    files = analysis.analyse_plan([(1, "a", "up", "ALTER TABLE m REPLICA IDENTITY USING INDEX m_v_idx"),
                                   (2, "b", "up", "DROP INDEX m_v_idx")])["files"]
    assert [(f["version"], f["kind"], f["severity"]) for f in hazards.find(files, catalog(**IDENTITY_ON_K))] == [
        (1, "replica_identity", "warning"), (2, "replica_identity", "error")]


def test_reverse_steps_are_the_other_files_of_the_same_versions_backwards():
    class Migration:
        def __init__(self, version, down=True):
            self.version, self.down = version, down

        def path(self, direction):
            return f"{self.version}.{direction}.sql" if direction == "up" or self.down else None

    steps = [(Migration(16), "up", 16), (Migration(17, down=False), "up", 17)]
    assert [(m.version, d) for m, d in hazards.reverse_steps(steps)] == [(16, "down")]
