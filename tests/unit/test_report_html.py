"""run.md as HTML sections (module_utils/report_html.py): the Markdown report.md.j2 writes, escaped first."""

from __future__ import annotations

from ansible_collections.tmi.migration.plugins.module_utils import report_html

REPORT = """# TMI migration run r1 — FAILED

> **MAINTENANCE MODE IS ON: the application refuses its users**

| | |
| --- | --- |
| host | db1 |
| error | a \\| b <b>bold</b> |

## Phases

| phase | result | duration (s) |
| --- | --- | ---: |
| backup | ok | 1.5 |
| migrate | failed | 2.0 |

## Backup

- path: `/b/r1` (verified)
- Redis RDB: `none`

**The run stopped here: <img src=x onerror=alert(1)>**

Failed checks: none
"""


def test_the_reports_sections_headings_tables_and_lists():
    sections = report_html.sections(REPORT)
    assert [(section["level"], section["title"]) for section in sections] == [
        (1, "TMI migration run r1 — FAILED"), (2, "Phases"), (2, "Backup")]
    head, phases, backup = (section["html"] for section in sections)
    assert head.startswith('<blockquote class="notice"><strong>MAINTENANCE MODE IS ON')
    # An escaped pipe stays in its cell; the cell's markup is text.
    assert "<td>a | b &lt;b&gt;bold&lt;/b&gt;</td>" in head
    assert "<th>phase</th><th>result</th><th class=\"num\">duration (s)</th>" in phases
    assert '<td>migrate</td><td class="bad">failed</td><td class="num">2.0</td>' in phases
    assert '<td class="good">ok</td>' in phases
    assert backup.startswith("<ul><li>path: <code>/b/r1</code> (verified)</li>"
                             "<li>Redis RDB: <code>none</code></li></ul>")
    assert "<p><strong>The run stopped here: &lt;img src=x onerror=alert(1)&gt;</strong></p>" in backup
    assert backup.endswith("<p>Failed checks: none</p>")


def test_markup_in_the_text_stays_text():
    hostile = '<script>alert("x")</script>'
    sections = report_html.sections(f"# run {hostile}\n\n| a |\n| --- |\n| {hostile} |\n\n- {hostile}\n\n{hostile}\n")
    rendered = sections[0]["title"] + sections[0]["html"]
    assert "<script" not in rendered
    assert rendered.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") == 4


def test_verdict_cells():
    assert report_html.verdict("fail") == report_html.verdict("FAILED") == report_html.verdict("FAILED: x") == "bad"
    assert report_html.verdict("pass") == report_html.verdict("ok") == "good"
    assert report_html.verdict("n/a") == report_html.verdict("rolled back") == ""
