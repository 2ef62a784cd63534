# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""run.md as HTML: the Markdown report's sections, for the HTML report beside it.

The HTML report shows the same tables as run.md, so it renders run.md itself (the report role's
report.md.j2) rather than a second copy of what it says. Only the Markdown that template writes is
understood: headings, pipe tables (alignment row included, ``\\|`` inside cells), ``- `` items,
``> `` quotes and paragraphs, with ``**bold**`` and ```code``` inline. Every piece of text is escaped
first (html.escape) and only then given the few tags above, so nothing in the record - a migration
file's name, a server's error - can become markup. No Markdown library is on the controller.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
import re

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_ALIGNMENT = re.compile(r"^\s*:?-{3,}:?\s*$")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def inline(text):
    """One line of Markdown text as HTML: escaped, then code spans and bold."""
    escaped = html.escape(text, quote=True)
    escaped = _CODE.sub(lambda match: "<code>%s</code>" % match.group(1), escaped)
    return _BOLD.sub(lambda match: "<strong>%s</strong>" % match.group(1), escaped)


# A table cell that is a verdict, coloured in the page: what went wrong must be seen first.
BAD = ("fail", "failed")
GOOD = ("pass", "ok")


def verdict(text):
    """'bad', 'good' or '' for a table cell's text."""
    word = text.strip().lower()
    if word in BAD or word.startswith(("fail:", "failed:")):
        return "bad"
    return "good" if word in GOOD else ""


def cells(line):
    """The cells of a pipe-table row, ``\\|`` back to ``|``."""
    inner = line.strip()
    if inner.startswith("|"):
        inner = inner[1:]
    if inner.endswith("|") and not inner.endswith("\\|"):
        inner = inner[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(inner)]


def _alignments(line):
    found = []
    for cell in cells(line):
        cell = cell.strip()
        found.append("right" if cell.endswith(":") and not cell.startswith(":") else
                     "center" if cell.startswith(":") and cell.endswith(":") else "")
    return found


def _is_alignment(line):
    parts = cells(line)
    return bool(parts) and all(_ALIGNMENT.match(part) for part in parts)


def _table(lines):
    head = cells(lines[0])
    aligns = _alignments(lines[1]) if len(lines) > 1 and _is_alignment(lines[1]) else []
    body = lines[2:] if aligns else lines[1:]

    def cell(tag, text, index):
        classes = ["num"] if index < len(aligns) and aligns[index] == "right" else []
        if tag == "td" and verdict(text):
            classes.append(verdict(text))
        style = ' class="%s"' % " ".join(classes) if classes else ""
        return "<%s%s>%s</%s>" % (tag, style, inline(text), tag)

    out = ["<table>"]
    if any(head):
        out.append("<thead><tr>%s</tr></thead>" % "".join(cell("th", text, i) for i, text in enumerate(head)))
    out.append("<tbody>")
    for row in body:
        out.append("<tr>%s</tr>" % "".join(cell("td", text, i) for i, text in enumerate(cells(row))))
    out.append("</tbody></table>")
    return "".join(out)


def _blocks(lines):
    """The HTML of the lines between two headings."""
    out, index = [], 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
        elif line.lstrip().startswith("|"):
            end = index
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            out.append(_table(lines[index:end]))
            index = end
        elif line.startswith("- "):
            items = []
            while index < len(lines) and lines[index].startswith("- "):
                items.append("<li>%s</li>" % inline(lines[index][2:]))
                index += 1
            out.append("<ul>%s</ul>" % "".join(items))
        elif line.startswith(">"):
            quoted = []
            while index < len(lines) and lines[index].startswith(">"):
                quoted.append(inline(lines[index][1:].strip()))
                index += 1
            out.append('<blockquote class="notice">%s</blockquote>' % "<br>".join(quoted))
        else:
            paragraph = []
            while index < len(lines) and lines[index].strip() and not lines[index].lstrip().startswith(("|", ">")) \
                    and not lines[index].startswith(("- ", "#")):
                paragraph.append(inline(lines[index].strip()))
                index += 1
            if not paragraph:  # a heading level the template does not write: shown as text
                paragraph.append(inline(lines[index].strip()))
                index += 1
            out.append("<p>%s</p>" % " ".join(paragraph))
    return "".join(out)


def sections(markdown):
    """run.md as [{level, title, html}]: the part before the first heading has level 0 and no title."""
    found, title, level, lines = [], "", 0, []
    for line in str(markdown).splitlines():
        heading = re.match(r"^(#{1,2}) (.*)$", line)
        if heading:
            if title or any(part.strip() for part in lines):
                found.append({"level": level, "title": inline(title), "html": _blocks(lines)})
            level, title, lines = len(heading.group(1)), heading.group(2).strip(), []
        else:
            lines.append(line)
    if title or any(part.strip() for part in lines):
        found.append({"level": level, "title": inline(title), "html": _blocks(lines)})
    return found
