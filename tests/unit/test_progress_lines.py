"""How a progress line reads (module_utils/progress.py, plugin_utils/progress_action.py), as a table of cases.

Each session row is what the progress thread's query (``activity_sql``) returns for one session; the cases cover
every kind of work the long-running modules watch: a dump's and a restore's COPY, index builds, rewrites, ANALYZE,
a scan no view covers, a lock wait. tests/integration/test_progress.py shows the lines of a real dump and online
build in ansible-playbook's and ansible-runner's output.
"""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from ansible.errors import AnsibleError
from ansible_collections.tmi.migration.plugins.module_utils import progress
from ansible_collections.tmi.migration.plugins.plugin_utils import progress_action
from pglast import parse_sql

COLUMNS = ("pid state seconds wait_type wait_event blockers query tuples copied_bytes bytes_total copy_table estimate "
           "index_phase blocks_done blocks_total tuples_done tuples_total index_table index_name cluster_phase "
           "heap_done heap_total cluster_table analyze_phase sample_done sample_total analyze_table").split()


def row(**values):
    """A row of activity_sql: an active session for 5 s unless said otherwise."""
    values = {"pid": 4242, "state": "active", "seconds": 5.0, "blockers": 0, **values}
    return tuple(values.get(name) for name in COLUMNS)


@pytest.mark.parametrize("version, views", [
    (120000, ["pg_stat_progress_create_index", "pg_stat_progress_cluster"]),
    (130000, ["pg_stat_progress_create_index", "pg_stat_progress_cluster", "pg_stat_progress_analyze"]),
    (180000, ["pg_stat_progress_copy", "pg_stat_progress_create_index", "pg_stat_progress_cluster",
              "pg_stat_progress_analyze"]),
])
def test_the_sampling_query_reads_the_views_the_server_has_in_the_columns_rows_are_read_by(version, views):
    text = progress.activity_sql(version) % {"pids": "'{}'", "application_name": "'x'"}
    statement = parse_sql(text)[0].stmt
    assert len(statement.targetList) == len(COLUMNS)
    assert [view for view in ["pg_stat_progress_copy", "pg_stat_progress_create_index", "pg_stat_progress_cluster",
                              "pg_stat_progress_analyze"] if view in text] == views


@pytest.mark.parametrize("session, totals, phrase", [
    # a restore's COPY against the rows the backup's figures give the table
    (row(copy_table="public.threats", tuples=120000, copied_bytes=9_000_000), {"public.threats": 230000},
     "public.threats 120,000 of 230,000 rows (52%)"),
    # a dump's COPY against the planner's estimate
    (row(copy_table="public.threats", tuples=812345, estimate=1_000_000.0), {},
     "public.threats 812,345 of ~1,000,000 rows (81%)"),
    # a table never analysed: no estimate, the rows and bytes so far
    (row(copy_table="public.sources", tuples=1500, copied_bytes=3 * 1024 * 1024, estimate=-1.0), {},
     "public.sources 1,500 rows, 3.0 MiB"),
    # COPY FROM a file knows its size
    (row(copy_table="public.sources", tuples=10, copied_bytes=512, bytes_total=2048), {},
     "public.sources 512 of 2,048 bytes (25%)"),
    (row(index_phase="building index: scanning table", blocks_done=2593, blocks_total=6667,
         index_table="public.threats", index_name="public.idx_threats_tm"), {},
     "index public.idx_threats_tm on public.threats: building index: scanning table, 2,593 of 6,667 blocks (38%)"),
    (row(index_phase="building index: loading tuples in tree", tuples_done=50, tuples_total=200,
         index_table="public.threats"), {},
     "a new index on public.threats: building index: loading tuples in tree, 50 of 200 tuples (25%)"),
    (row(index_phase="waiting for writers before build", index_table="public.threats", index_name="public.i"), {},
     "index public.i on public.threats: waiting for writers before build"),
    (row(cluster_phase="seq scanning heap", heap_done=10, heap_total=40, cluster_table="public.metadata"), {},
     "rewriting public.metadata: seq scanning heap, 10 of 40 blocks (25%)"),
    (row(analyze_phase="acquiring sample rows", sample_done=3, sample_total=30, analyze_table="public.threats"), {},
     "analyzing public.threats: acquiring sample rows, 3 of 30 sample blocks (10%)"),
    # a scan no view covers: the tables of its one statement, never its text
    (row(query='SELECT count(*) FROM "public"."threats" AS t WHERE t.name = \'secret value\'', seconds=12.4), {},
     "reading public.threats, 12 s"),
    (row(query="ALTER TABLE ONLY public.threats ADD CONSTRAINT fk FOREIGN KEY (tm) REFERENCES public.threat_models(id)",
         seconds=3.0), {},
     "ALTER TABLE public.threat_models, public.threats, 3 s"),
    # a whole migration file sent as one batch: which of its statements runs is not known
    (row(query="UPDATE metadata SET key = lower(key); ALTER TABLE metadata ALTER COLUMN key TYPE text", seconds=7.0),
     {}, "running a statement, 7 s"),
    (row(query="CREATE INDEX i ON threats (tm)", wait_type="Lock", wait_event="relation", blockers=1, seconds=3.2), {},
     "CREATE INDEX on threats, waiting for a lock (relation) behind 1 session for 3 s"),
    (row(query="SELECT pg_advisory_lock(1)", wait_type="Lock", wait_event="advisory", blockers=2, seconds=40.0), {},
     "running a statement, waiting for a lock (advisory) behind 2 sessions for 40 s"),
    # nothing worth a phrase: between statements, or one of many short ones
    (row(state="idle in transaction", query="SELECT 1"), {}, None),
    (row(query="SELECT * FROM pg_class", seconds=0.2), {}, None),
])
def test_each_kind_of_session_reads_as_an_object_and_how_far_it_is(session, totals, phrase):
    assert progress.describe_session(session, totals) == phrase


def test_the_statement_text_never_leaves_only_the_names_of_its_tables():
    assert progress.statement_tables("SELECT * FROM t WHERE secret = 'hunter2'") == "reading t"
    assert progress.statement_tables("SELECT 1; SELECT 2") is None
    assert progress.statement_tables("SELECT * FROM pg_catalog.pg_class") is None
    assert progress.statement_tables("SELECT * FROM threats WHERE name = 'cut sho") is None  # query size limit


def test_a_restore_counts_the_rows_of_the_tables_done_and_those_being_copied():
    reporter = progress.Progress()
    step = progress.Step("restore into tmi_verify", None, "app", (), None,
                         {"public.a": 200, "public.b": 300, "public.c": 500}, None)
    first = reporter._sessions(step, [row(pid=1, copy_table="public.a", tuples=100)])
    assert first == ["public.a 100 of 200 rows (50%)", "100 of 1,000 rows (10%) restored in all"]
    then = reporter._sessions(step, [row(pid=1, copy_table="public.b", tuples=50)])
    assert then == ["public.b 50 of 300 rows (16%)", "250 of 1,000 rows (25%) restored in all"]


@pytest.mark.parametrize("done, total, shown", [(0, 10, " (0%)"), (999, 1000, " (99%)"), (1000, 1000, " (100%)"),
                                                (5, 0, ""), (5, None, "")])
def test_a_share_is_never_100_percent_before_the_end(done, total, shown):
    assert progress.percent(done, total) == shown


def test_the_progress_file_is_private_holds_the_step_and_goes_when_the_module_ends(tmp_path):
    dead = tmp_path / "tmi-progress-dead.json"
    dead.write_text(json.dumps({"pid": 2 ** 22 + 12345, "text": ""}))
    alive = tmp_path / "tmi-progress-alive.json"
    alive.write_text(json.dumps({"pid": os.getpid(), "text": ""}))
    dead_partial = tmp_path / f"tmi-progress-dead.json.{2 ** 22 + 12345}.partial"
    dead_partial.write_text("{")
    path = tmp_path / "tmi-progress-this.json"
    reporter = progress.Progress(str(path), interval=0.5)
    # only the files of a process that is gone are removed
    assert not dead.exists() and not dead_partial.exists() and alive.exists()
    try:
        with reporter.step("migration"):
            reporter.expect(2)
            reporter.item("000016 add_performance_indexes up")
            reporter.part("online build 3 of 13")
            reporter.count(3 * 1024 * 1024, 12 * 1024 * 1024, "bytes")
            reporter.begin_jobs([10, 30, 60])
            reporter.job_done(2)
            deadline = time.monotonic() + 10
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            written = json.loads(path.read_text())
        assert written["pid"] == os.getpid()
        assert written["text"] == ("migration, 000016 add_performance_indexes up (file 1 of 2), online build 3 of 13: "
                                   "3.0 MiB of 12.0 MiB (25%); 1 of 3 scans done (60%)")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        reporter.close()
    assert not path.exists() and [p.name for p in tmp_path.iterdir()] == [alive.name]


def test_a_module_run_without_its_action_plugin_reports_nothing():
    class Module:
        params = {"progress_file": None, "progress_interval": None}
        check_mode = False

    reporter = progress.Progress.of_module(Module())
    assert reporter.path is None and reporter._thread is None


@pytest.mark.parametrize("value, seconds", [(5, 5.0), ("10", 10.0), (0, 0.0), (0.1, 0.25)])
def test_the_polling_interval_is_seconds_or_zero_for_none(value, seconds):
    assert progress_action.interval_of(value) == seconds


@pytest.mark.parametrize("value", ["soon", -1, None])
def test_a_polling_interval_that_is_not_a_number_of_seconds_is_refused(value):
    with pytest.raises(AnsibleError, match="tmi_progress_interval"):
        progress_action.interval_of(value)


def test_the_progress_file_is_read_where_the_module_wrote_it():
    plain = "~/.ansible/tmp/tmi-progress-ab12.json"
    assert progress_action.shell_path(plain) == plain
    assert progress_action.shell_path("/tmp/a b/tmi-progress-x.json") == "'/tmp/a b/tmi-progress-x.json'"
    assert progress_action.shell_path("/tmp/$(reboot)/x") == "'/tmp/$(reboot)/x'"


def test_a_line_names_the_host_the_phase_and_what_the_module_said():
    assert progress_action.progress_line("tmi_local", "backup", 25.7, {"text": "dump: public.threats 1 of 2 rows"}) == \
        "[tmi_local] backup 25 s | dump: public.threats 1 of 2 rows"
    assert progress_action.progress_line("db1", "migrate", 3, None) == "[db1] migrate 3 s | starting"
    assert progress_action.progress_line("db1", "migrate", 8, {"text": ""}) == "[db1] migrate 8 s | running"
    assert progress_action.progress_line("db1", "migrate", 9, None, seen=True) == "[db1] migrate 9 s | running"
