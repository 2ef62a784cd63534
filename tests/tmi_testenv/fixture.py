"""The TMI-shaped fixture: apply its migrations like golang-migrate, fill it with data, break it on request.

``apply_like_golang_migrate`` is deliberately an independent, minimal re-implementation
of what golang-migrate v4's postgres driver does (one row in ``schema_migrations``,
``dirty=true`` written before a file runs, the whole file sent as one multi-statement
query, ``dirty=false`` after). It seeds databases "as golang-migrate left them" and so
cross-checks the collection's own ``pg_migrate`` engine rather than sharing its code.

The generator is set-based (``INSERT ... SELECT ... generate_series``): ids are md5-derived
UUIDs of (seed, table, row number), so related rows find each other without joins and
the same seed gives the same database on every run.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "migrations"
_FILE_RE = re.compile(r"^(\d+)_(.+)\.(up|down)\.sql$")

# Per threat model, how many rows of each kind the generator writes.
PER_THREAT_MODEL = {"threat_model_access": 3, "diagrams": 2, "threats": 10, "documents": 3, "sources": 2}
CELLS_PER_DIAGRAM = 2
METADATA_KEYS = {"threat_model": 2, "threat": 1, "diagram": 1, "document": 1, "source": 1, "cell": 1}

DEFECTS = ("orphaned_threats", "orphaned_documents", "orphaned_sources", "orphaned_metadata",
           "invalid_metadata", "invalid_index", "not_valid_constraint", "duplicate_index")


@dataclass(frozen=True)
class MigrationFile:
    version: int
    title: str
    direction: str
    path: Path


def golang_lock_id(database: str, schema: str, table: str) -> int:
    """golang-migrate v4's advisory lock id (database/util.go), written out independently of the collection:
    uint32(crc32.ChecksumIEEE(schema NUL table NUL database)) * uint32(1486364155)."""
    crc = binascii.crc32(b"\x00".join(name.encode() for name in (schema, table, database))) & 0xFFFFFFFF
    return (crc * 1486364155) & 0xFFFFFFFF


def migration_files(directory: Path = MIGRATIONS_DIR) -> dict[int, dict[str, MigrationFile]]:
    """Map version -> {'up': file, 'down': file} for a golang-migrate directory."""
    found: dict[int, dict[str, MigrationFile]] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.match(path.name)
        if match:
            version = int(match.group(1))
            found.setdefault(version, {})[match.group(3)] = MigrationFile(version, match.group(2), match.group(3), path)
    return found


def current_version(conn) -> tuple[int, bool]:
    """(version, dirty) as golang-migrate reads it; (0, False) when there is no state."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return 0, False
        cur.execute("SELECT version, dirty FROM schema_migrations LIMIT 1")
        row = cur.fetchone()
    return (int(row[0]), bool(row[1])) if row else (0, False)


def _set_version(conn, version: int | None, dirty: bool) -> None:
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("TRUNCATE schema_migrations")
        if version is not None:
            cur.execute("INSERT INTO schema_migrations (version, dirty) VALUES (%s, %s)", (version, dirty))
        cur.execute("COMMIT")


def apply_like_golang_migrate(conn, target: int, directory: Path = MIGRATIONS_DIR) -> int:
    """Move an autocommit connection's database to ``target`` the way golang-migrate would."""
    files = migration_files(directory)
    versions = sorted(files)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
    version, dirty = current_version(conn)
    if dirty:
        raise RuntimeError(f"database is dirty at version {version}")
    if target > version:
        steps: list[tuple[int, str, int | None]] = [(v, "up", v) for v in versions if version < v <= target]
    else:
        down = [v for v in reversed(versions) if target < v <= version]
        steps = [(v, "down", (versions[versions.index(v) - 1] if versions.index(v) else None)) for v in down]
    for file_version, direction, after in steps:
        # golang-migrate marks the *target* version dirty (-1 below the first migration)
        _set_version(conn, after if after is not None else -1, True)
        with conn.cursor() as cur:
            cur.execute(files[file_version][direction].path.read_text())
        _set_version(conn, after, False)
    return current_version(conn)[0]


def _tm(seed: int, expr: str) -> str:
    """SQL expression for the id of threat model number ``expr``."""
    return f"md5('{seed}:tm:' || ({expr}))::uuid"


def _id(seed: int, kind: str, expr: str) -> str:
    return f"md5('{seed}:{kind}:' || ({expr}))::uuid"


def generate(conn, threat_models: int, seed: int = 42) -> dict[str, int]:
    """Fill a database at version >= 15 with ``threat_models`` threat models and their sub-resources.

    Returns the number of rows written per table. Rows per threat model: see PER_THREAT_MODEL,
    plus metadata for every entity type (METADATA_KEYS per entity).
    """
    n = int(threat_models)
    users = max(n // 5, 10)
    pt = PER_THREAT_MODEL
    statements = [
        "SET max_parallel_workers_per_gather = 0",
        f"SELECT setseed({(seed % 1000) / 1000.0})",
        f"""INSERT INTO users (id, email, name, identity_provider, created_at, modified_at, last_login)
            SELECT {_id(seed, 'user', 'u')}, 'user' || u || '@example.test', 'User ' || u,
                   (ARRAY['google', 'github', 'microsoft'])[1 + u % 3],
                   timestamptz '2025-01-01' + u * interval '1 minute',
                   timestamptz '2025-01-01' + u * interval '1 minute', NULL
            FROM generate_series(0, {users - 1}) AS u""",
        f"""INSERT INTO threat_models (id, owner_email, name, description, created_by,
                                       threat_model_framework, created_at, modified_at)
            SELECT {_tm(seed, 't')}, 'user' || (t % {users}) || '@example.test', 'Threat model ' || t,
                   repeat('System description. ', 1 + (random() * 5)::int), 'user' || (t % {users}) || '@example.test',
                   (ARRAY['CIA', 'STRIDE', 'LINDDUN', 'DIE', 'PLOT4ai'])[1 + t % 5],
                   timestamptz '2025-02-01' + t * interval '10 seconds',
                   timestamptz '2025-02-01' + t * interval '10 seconds'
            FROM generate_series(0, {n - 1}) AS t""",
        f"""INSERT INTO threat_model_access (id, threat_model_id, user_email, role)
            SELECT {_id(seed, 'access', 't * 3 + r')}, {_tm(seed, 't')},
                   'user' || ((t + r) % {users}) || '@example.test', (ARRAY['owner', 'writer', 'reader'])[1 + r]
            FROM generate_series(0, {n - 1}) AS t, generate_series(0, {pt['threat_model_access'] - 1}) AS r""",
        f"""INSERT INTO diagrams (id, threat_model_id, name, cells, created_at, modified_at)
            SELECT {_id(seed, 'diagram', f"t * {pt['diagrams']} + d")}, {_tm(seed, 't')}, 'DFD ' || d,
                   (SELECT jsonb_agg(jsonb_build_object(
                        'id', {_id(seed, 'cell', f"(t * {pt['diagrams']} + d) * {CELLS_PER_DIAGRAM} + c")},
                        'shape', (ARRAY['process', 'store', 'actor'])[1 + c % 3]))
                    FROM generate_series(0, {CELLS_PER_DIAGRAM - 1}) AS c),
                   timestamptz '2025-02-01' + t * interval '10 seconds' + d * interval '1 second',
                   timestamptz '2025-02-01' + t * interval '10 seconds' + d * interval '1 second'
            FROM generate_series(0, {n - 1}) AS t, generate_series(0, {pt['diagrams'] - 1}) AS d""",
        f"""INSERT INTO threats (id, threat_model_id, diagram_id, name, description, severity, mitigation,
                                 metadata, score, priority, mitigated, status, threat_type, created_at, modified_at)
            SELECT {_id(seed, 'threat', f"t * {pt['threats']} + k")}, {_tm(seed, 't')},
                   CASE WHEN k % 2 = 0 THEN {_id(seed, 'diagram', f"t * {pt['diagrams']} + k % {pt['diagrams']}")} END,
                   'Threat ' || k || ' of model ' || t, 'An attacker could do thing ' || k,
                   (ARRAY['Unknown', 'None', 'Low', 'Medium', 'High', 'Critical'])[1 + (random() * 5)::int],
                   CASE WHEN random() < 0.5 THEN 'Mitigate by control ' || k END,
                   jsonb_build_object('cwe', 'CWE-' || (100 + (random() * 900)::int)),
                   round((random() * 10)::numeric, 1), (ARRAY['P0', 'P1', 'P2', 'P3'])[1 + k % 4],
                   random() < 0.3, (ARRAY['open', 'in_progress', 'closed'])[1 + k % 3],
                   (ARRAY['Spoofing', 'Tampering', 'Repudiation', 'Information Disclosure',
                          'Denial of Service', 'Elevation of Privilege'])[1 + k % 6],
                   timestamptz '2025-03-01' + t * interval '10 seconds' + k * interval '1 second',
                   timestamptz '2025-03-01' + t * interval '10 seconds' + k * interval '1 second'
            FROM generate_series(0, {n - 1}) AS t, generate_series(0, {pt['threats'] - 1}) AS k""",
        f"""INSERT INTO documents (id, threat_model_id, name, url, description, created_at, modified_at)
            SELECT {_id(seed, 'document', f"t * {pt['documents']} + k")}, {_tm(seed, 't')}, 'Document ' || k,
                   'https://docs.example.test/' || t || '/' || k, 'Design document ' || k,
                   timestamptz '2025-03-01' + t * interval '10 seconds' + k * interval '1 second',
                   timestamptz '2025-03-01' + t * interval '10 seconds' + k * interval '1 second'
            FROM generate_series(0, {n - 1}) AS t, generate_series(0, {pt['documents'] - 1}) AS k""",
        f"""INSERT INTO sources (id, threat_model_id, name, url, description, type, parameters,
                                 created_at, modified_at)
            SELECT {_id(seed, 'source', f"t * {pt['sources']} + k")}, {_tm(seed, 't')}, 'Repository ' || k,
                   'https://git.example.test/' || t || '/' || k || '.git', NULL,
                   (ARRAY['git', 'svn', 'mercurial', 'other'])[1 + k % 4],
                   jsonb_build_object('refType', 'branch', 'refValue', 'main'),
                   timestamptz '2025-03-01' + t * interval '10 seconds' + k * interval '1 second',
                   timestamptz '2025-03-01' + t * interval '10 seconds' + k * interval '1 second'
            FROM generate_series(0, {n - 1}) AS t, generate_series(0, {pt['sources'] - 1}) AS k""",
    ]
    entity_counts = {"threat_model": n, "threat": n * pt["threats"], "diagram": n * pt["diagrams"],
                     "document": n * pt["documents"], "source": n * pt["sources"],
                     "cell": n * pt["diagrams"] * CELLS_PER_DIAGRAM}
    id_kind = {"threat_model": "tm", "threat": "threat", "diagram": "diagram", "document": "document",
               "source": "source", "cell": "cell"}
    for entity_type, count in entity_counts.items():
        statements.append(
            f"""INSERT INTO metadata (id, entity_type, entity_id, key, value, created_at, modified_at)
                SELECT {_id(seed, 'meta-' + entity_type, "e * 10 + k")}, '{entity_type}',
                       {_id(seed, id_kind[entity_type], 'e')}, (ARRAY['owner_team', 'review_state'])[1 + k],
                       'value ' || e || '-' || k,
                       timestamptz '2025-04-01' + e * interval '1 second',
                       timestamptz '2025-04-01' + e * interval '1 second'
                FROM generate_series(0, {count - 1}) AS e,
                     generate_series(0, {METADATA_KEYS[entity_type] - 1}) AS k""")
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        cur.execute("ANALYZE")
    return row_counts(conn)


_SCHEMA_SNAPSHOT_SQL = """
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'r'
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'state ' || version || ' ' || dirty FROM schema_migrations
"""


def schema_snapshot(conn) -> set[str]:
    """Every column, index, constraint, trigger and function of the public schema, plus the migration state."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
        query = _SCHEMA_SNAPSHOT_SQL if cur.fetchone()[0] else _SCHEMA_SNAPSHOT_SQL.rsplit("UNION ALL", 1)[0]
        cur.execute(query)
        return {row[0] for row in cur.fetchall()}


def row_counts(conn) -> dict[str, int]:
    tables = ("users", "threat_models", "threat_model_access", "diagrams", "threats", "documents",
              "sources", "metadata")
    with conn.cursor() as cur:
        counts = {}
        for table in tables:
            cur.execute(f"SELECT count(*) FROM {table}")  # fixed names from the tuple above
            counts[table] = cur.fetchone()[0]
    return counts


def _table_has_constraint(cur, name: str) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = %s)", (name,))
    return cur.fetchone()[0]


def inject(conn, defect: str, count: int = 3) -> dict[str, object]:
    """Break an autocommit connection's database in one named way; return what was done.

    Orphans bypass the foreign keys with ``session_replication_role = replica`` (superuser),
    which is how orphans appear in real life: bulk loads and restores with triggers off.
    """
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")
    with conn.cursor() as cur:
        if defect in ("orphaned_threats", "orphaned_documents", "orphaned_sources"):
            table = defect.split("_", 1)[1]
            columns = {"threats": "(id, threat_model_id, name)", "documents": "(id, threat_model_id, name, url)",
                       "sources": "(id, threat_model_id, name, url)"}[table]
            extra = {"threats": "", "documents": ", 'https://orphan.example.test'",
                     "sources": ", 'https://orphan.example.test'"}[table]
            cur.execute("SET session_replication_role = replica")
            cur.execute(f"INSERT INTO {table} {columns} SELECT md5('orphan-{table}-' || i)::uuid, "
                        f"md5('missing-threat-model-' || i)::uuid, 'orphan ' || i{extra} "
                        f"FROM generate_series(1, %s) AS i", (count,))
            cur.execute("SET session_replication_role = origin")
            return {"table": table, "rows": count}
        if defect == "orphaned_metadata":
            cur.execute("INSERT INTO metadata (entity_type, entity_id, key, value) "
                        "SELECT (ARRAY['threat_model', 'threat', 'document', 'source'])[1 + i %% 4], "
                        "md5('missing-entity-' || i)::uuid, 'orphan_key', 'x' "
                        "FROM generate_series(0, %s - 1) AS i", (count,))
            return {"table": "metadata", "rows": count}
        if defect == "invalid_metadata":
            had_check = _table_has_constraint(cur, "metadata_entity_type_check")
            if had_check:  # at version 17 the rule is enforced: re-add it NOT VALID around the bad rows
                cur.execute("ALTER TABLE metadata DROP CONSTRAINT metadata_entity_type_check")
            cur.execute("INSERT INTO metadata (entity_type, entity_id, key, value) "
                        "SELECT 'bogus_type', md5('invalid-metadata-' || i)::uuid, 'bad_key', 'x' "
                        "FROM generate_series(1, %s) AS i", (count,))
            if had_check:
                cur.execute("ALTER TABLE metadata ADD CONSTRAINT metadata_entity_type_check CHECK (entity_type IN "
                            "('threat_model', 'threat', 'diagram', 'document', 'source', 'cell')) NOT VALID")
            return {"table": "metadata", "rows": count, "entity_type": "bogus_type"}
        if defect == "invalid_index":
            # A unique build over non-unique data fails and leaves an INVALID index, as a
            # failed CREATE INDEX CONCURRENTLY does in production.
            try:
                cur.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_defect_invalid ON threats (threat_model_id)")
            except Exception:  # noqa: BLE001 - the failure is the point
                pass
            return {"index": "idx_defect_invalid"}
        if defect == "not_valid_constraint":
            cur.execute("ALTER TABLE threats ADD CONSTRAINT threats_defect_name_check "
                        "CHECK (length(name) > 0) NOT VALID")
            return {"constraint": "threats_defect_name_check"}
        # duplicate_index: same key columns as idx_threats_threat_model_id_created_at (000016)
        cur.execute("CREATE INDEX idx_defect_duplicate ON threats (threat_model_id, created_at DESC)")
        return {"index": "idx_defect_duplicate"}


def planned_analysis(conn, versions, directory: Path = MIGRATIONS_DIR) -> dict:
    """pg_migrate's analysis of the up files of ``versions``, with this database's foreign keys: what
    migrate.yml passes to the validate role (for tests and benchmarks that start at the end version)."""
    from ansible_collections.tmi.migration.plugins.module_utils import analysis, migrator

    files = migration_files(directory)
    planned = [(v, files[v]["up"].title, "up", files[v]["up"].path.read_text()) for v in versions]
    with conn.cursor() as cur:
        cur.execute(migrator.FOREIGN_KEYS_SQL)
        keys = [dict(name=r[0], table=r[1], ref_table=r[2], on_delete=r[3], on_update=r[4]) for r in cur.fetchall()]
    return analysis.analyse_plan(planned, "public", (), keys)
