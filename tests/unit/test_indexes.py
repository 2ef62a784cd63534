"""The pure parts of module_utils/indexes.py: reading pg_get_indexdef() and EXPLAIN output."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import indexes


@pytest.mark.parametrize(("definition", "parsed"), [
    ("CREATE INDEX idx_a ON public.threats USING btree (threat_model_id, created_at DESC)",
     {"columns": ["threat_model_id", "created_at DESC"], "include": [], "where": ""}),
    ("CREATE INDEX idx_b ON public.threats USING btree (threat_model_id) INCLUDE (name, severity, status)",
     {"columns": ["threat_model_id"], "include": ["name", "severity", "status"], "where": ""}),
    ("CREATE INDEX idx_c ON public.metadata USING btree (entity_id, key) WHERE ((entity_type)::text = 'cell'::text)",
     {"columns": ["entity_id", "key"], "include": [], "where": "((entity_type)::text = 'cell'::text)"}),
    ("CREATE UNIQUE INDEX u ON public.t USING btree (lower((email)::text), (coalesce(a, b))) INCLUDE (x) "
     "WHERE (deleted IS NULL)",
     {"columns": ["lower((email)::text)", "(coalesce(a, b))"], "include": ["x"], "where": "(deleted IS NULL)"}),
    ("CREATE INDEX q ON public.t USING gin (tags) WHERE (note = 'a, (b)')",
     {"columns": ["tags"], "include": [], "where": "(note = 'a, (b)')"}),
    ("not an index definition", {"columns": [], "include": [], "where": ""}),
])
def test_parse_indexdef(definition, parsed):
    assert indexes.parse_indexdef(definition) == parsed


def test_parenthesised_ignores_parentheses_in_quotes():
    assert indexes._parenthesised("(a, ')(', (b)) rest", 0) == ("a, ')(', (b)", 14)
    assert indexes._parenthesised("(unclosed", 0) == ("unclosed", 9)


def test_split_keeps_commas_inside_parentheses():
    assert indexes._split("a, f(b, c), d DESC") == ["a", "f(b, c)", "d DESC"]
    assert indexes._split("") == []


@pytest.mark.parametrize(("written", "catalog"), [
    ("entity_type = 'cell'", "((entity_type)::text = 'cell'::text)"),
    ("created_at DESC", "created_at desc"),
    ('"Key"', "key"),
    ("a > now()", "(a > now())"),
    ("ts = '2026-01-01'", "(ts = '2026-01-01'::timestamp without time zone)"),
    ("ids = '{1}'", "(ids = '{1}'::integer[])"),
])
def test_normalise_expression_makes_the_written_and_the_catalog_form_equal(written, catalog):
    assert indexes.normalise_expression(written) == indexes.normalise_expression(catalog)


def test_normalise_expression_keeps_what_differs():
    assert indexes.normalise_expression("entity_type = 'cell'") != indexes.normalise_expression(
        "entity_type = 'document'")
    assert indexes.normalise_expression(None) == ""


def test_index_names_in_plan_finds_every_index_of_a_nested_plan():
    plan = [{"Plan": {"Node Type": "Nested Loop", "Plans": [
        {"Node Type": "Index Scan", "Index Name": "idx_a"},
        {"Node Type": "Bitmap Heap Scan", "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "idx_b"}]},
        {"Node Type": "Seq Scan"}]}}]
    assert indexes.index_names_in_plan(plan) == {"idx_a", "idx_b"}
    assert indexes.index_names_in_plan([{"Plan": {"Node Type": "Seq Scan"}}]) == set()


def test_the_checker_expects_nothing_by_default():
    assert indexes.DEFAULTS["expected"] == [] and indexes.DEFAULTS["queries"] == []
