# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run's timeline as pictures (inline SVG) for the HTML report, drawn from the run record alone.

Two charts:

* the run: one bar per phase on the wall clock, the maintenance band (from ``maintenance_log``, when
  maintenance mode really went on and off), each migration file where it ran (``migration.applied[].started``)
  and the failed one, the rollback's phase;
* the files and their locks: per file, how long it ran in production and in the rehearsal, and under it
  each table lock the rehearsal saw it take (table, mode, from which statement and for how long), coloured by
  whom it blocks - the only place the record says where writers were blocked.

``events`` reads what happened when (plain data, unit-tested); ``run_chart`` and ``files_chart`` draw it.
Every text taken from the record goes through ``_text`` (html.escape): a file title, a table name or an
error cannot put markup into the page. Written here because no charting library is on the controller and
the report must stay one file with nothing to fetch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
from datetime import datetime, timezone

from ansible_collections.tmi.migration.plugins.module_utils import locks

# Geometry (px). Wide labels on the left, durations and lock figures on the right.
WIDTH = 1160
ROW = 26
BAR = 16
LEFT = 190
FONT = 14
# Labels of files that ran close together go on lines below each other, at most this many.
LABEL_LINES = 3
LABEL_LINE = 15

COLOURS = {
    "ok": "#3d6a9e",
    "failed": "#c62828",
    "rolled back": "#6a1b9a",
    "file": "#37474f",
    "file_blocking": "#e65100",
    "rehearsal": "#c5ced6",
    "blocks_reads": "#b71c1c",
    "blocks_writes": "#ef6c00",
    "passes_writers": "#4f8a8b",
    "band": "#ffb300",
    "band_text": "#7a4f00",
    "grid": "#d5dae0",
    "text": "#1b1f24",
    "muted": "#56606b",
}


def _text(value):
    """A value of the record as SVG/HTML text or attribute value."""
    return html.escape("" if value is None else str(value), quote=True)


def _number(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _mapping(value):
    return value if isinstance(value, dict) else {}


def _list(value):
    return value if isinstance(value, list) else []


def clock_time(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")


def seconds_text(seconds):
    seconds = _number(seconds)
    if seconds >= 120:
        return "%d min %02d s" % (seconds // 60, round(seconds % 60))
    if seconds >= 10:
        return "%.1f s" % seconds
    return "%.3f s" % seconds if seconds < 1 else "%.2f s" % seconds


def table_name(name):
    """A table as the report shows it: without the default schema."""
    name = str(name)
    return name[len("public."):] if name.startswith("public.") else name


def blocks(mode):
    """Whom a table lock mode keeps waiting: 'reads and writes', 'writes' or ''."""
    if mode in locks.BLOCKS_READS:
        return "reads and writes"
    if mode in locks.BLOCKS_WRITES:
        return "writes"
    return ""


# What happened when.
def phases(record):
    """Each phase with its start, end (seconds since the epoch) and result."""
    found = []
    entries = [_mapping(item) for item in _list(record.get("phases"))]
    for index, item in enumerate(entries):
        if "started" not in item:
            continue
        start = _number(item["started"])
        if "duration" in item:
            end = start + _number(item["duration"])
        elif index + 1 < len(entries):
            end = _number(entries[index + 1].get("started"), start)
        else:
            end = start
        found.append({"phase": str(item.get("phase", "")), "result": str(item.get("result", "ok")),
                      "start": start, "end": max(end, start)})
    return found


def maintenance(record, end):
    """The spans maintenance mode was on: [{start, end, still_on}], from the record's maintenance_log."""
    spans, since = [], None
    log = sorted((_mapping(item) for item in _list(record.get("maintenance_log"))),
                 key=lambda item: _number(item.get("at")))
    for item in log:
        at = _number(item.get("at"), None)
        if at is None:
            continue
        if item.get("state") == "enabled" and since is None:
            since = at
        elif item.get("state") == "disabled" and since is not None:
            spans.append({"start": since, "end": at, "still_on": False})
            since = None
    if since is not None:
        spans.append({"start": since, "end": max(end, since), "still_on": True})
    return spans


def files(record):
    """The migration files production ran (and the one that failed), each with its start, end and lock waits."""
    migration = _mapping(record.get("migration"))
    entries = [(_mapping(item), False) for item in _list(migration.get("applied"))]
    if _mapping(migration.get("failed_migration")):
        entries.append((_mapping(migration["failed_migration"]), True))
    found = []
    for item, failed in entries:
        started = item.get("started")
        found.append({
            "version": item.get("version"), "title": str(item.get("title", "")),
            "direction": str(item.get("direction", "up")), "mode": str(item.get("mode", "")), "failed": failed,
            "start": None if started is None else _number(started),
            "duration": _number(item.get("duration")),
            "lock_wait": str(item.get("lock_wait_summary") or ""), "production": True,
        })
    return found


def rehearsed_only(record, applied):
    """The files the rehearsal ran that production did not (the run stopped before, or in, the rehearsal): their
    locks are why a run stops there."""
    ran = set((item["version"], item["direction"]) for item in applied)
    found = []
    for entry in _list(_mapping(record.get("rehearsal")).get("up")):
        entry = _mapping(entry)
        if (entry.get("version"), "up") not in ran:
            found.append({"version": entry.get("version"), "title": str(entry.get("title", "")), "direction": "up",
                          "mode": "", "failed": False, "start": None, "duration": 0.0, "lock_wait": "",
                          "production": False})
    return found


def rehearsed_locks(entry):
    """The table locks a rehearsed file took: [{table, mode, offset, held, line}], offset in seconds from the
    file's start (its statements ran one after the other), held until the lock was released."""
    found, offset = [], 0.0
    for statement in _list(_mapping(entry).get("statements")):
        statement = _mapping(statement)
        held = _mapping(statement.get("held"))
        for table, mode in _mapping(statement.get("taken")).items():
            seconds = _number(held.get(table), _number(statement.get("duration")))
            found.append({"table": str(table), "mode": str(mode), "offset": offset, "held": seconds,
                          "line": statement.get("line")})
        offset += _number(statement.get("duration"))
    return found


def rehearsal_of(record, version, direction):
    """The rehearsal's entry of a file production ran ({} when none: only plans going up are rehearsed)."""
    if direction != "up":
        return {}
    for entry in _list(_mapping(record.get("rehearsal")).get("up")):
        entry = _mapping(entry)
        if entry.get("version") == version:
            return entry
    return {}


def events(record):
    """What happened when, read from the record: phases, maintenance spans, files, the run's start and end."""
    record = _mapping(record)
    found = phases(record)
    applied = files(record)
    start = min([item["start"] for item in found] + [item["start"] for item in applied if item["start"]] or [0.0])
    end = max([item["end"] for item in found] +
              [item["start"] + item["duration"] for item in applied if item["start"]] or [start])
    spans = maintenance(record, end)
    end = max([end] + [span["end"] for span in spans])
    applied += rehearsed_only(record, applied)
    for item in applied:
        entry = rehearsal_of(record, item["version"], item["direction"])
        item["rehearsal"] = {"duration": _number(entry.get("duration")), "ok": entry.get("ok", True),
                             "locks": rehearsed_locks(entry)} if entry else {}
        item["blocks_writers"] = any(blocks(lock["mode"]) for lock in (item["rehearsal"] or {}).get("locks", []))
        middle = None if item["start"] is None else item["start"] + item["duration"] / 2
        item["maintenance"] = middle is not None and any(span["start"] <= middle <= span["end"] for span in spans)
    return {"start": start, "end": end, "phases": found, "maintenance": spans, "files": applied,
            "rollback": _mapping(record.get("rollback"))}


# Drawing.
def _nice_step(span, most=10):
    """A round tick step (1, 2, 5 times a power of ten, or whole minutes) giving at most ``most`` ticks."""
    candidates = []
    for exponent in range(-3, 5):
        candidates.extend(factor * 10 ** exponent for factor in (1, 2, 5))
    candidates.extend((15, 30, 60, 120, 300, 600, 900, 1800, 3600))
    for step in sorted(candidates):
        if span / step <= most:
            return step
    return 3600 * max(1, int(span / 3600 / most) + 1)


def _element(name, text=None, **attributes):
    attrs = "".join(' %s="%s"' % (key.rstrip("_").replace("_", "-"), _text(value))
                    for key, value in attributes.items() if value is not None)
    if text is None:
        return "<%s%s/>" % (name, attrs)
    return "<%s%s>%s</%s>" % (name, attrs, text, name)


def _rect(x, y, width, height, fill, css, title, **attributes):
    return _element("rect", _element("title", _text(title)), x="%.1f" % x, y="%.1f" % y,
                    width="%.1f" % max(width, 0.0), height="%.1f" % height, fill=fill, class_=css, **attributes)


def _label(x, y, text, anchor="start", weight=None, fill=COLOURS["text"], size=FONT, css=None):
    return _element("text", _text(text), x="%.1f" % x, y="%.1f" % y, fill=fill, font_size=size,
                    font_weight=weight, text_anchor=anchor, class_=css)


def _width(text, size=FONT):
    """About how wide a text is drawn (px): enough to keep labels apart."""
    return len(str(text)) * size * 0.55


def _shorten(text, most):
    text = str(text)
    return text if len(text) <= most else text[:most - 1] + "\u2026"


def _svg(height, body, css, title):
    return ('<svg xmlns="http://www.w3.org/2000/svg" class="%s" role="img" width="%d" height="%d" '
            'viewBox="0 0 %d %d" font-family="system-ui, -apple-system, \'Segoe UI\', Roboto, sans-serif">'
            '<title>%s</title>%s</svg>' % (css, WIDTH, height, WIDTH, height, _text(title), "".join(body)))


def _legend(x, y, items):
    body = []
    for colour, text in items:
        body.append(_element("rect", x="%.1f" % x, y="%.1f" % (y - 11), width=14, height=14, fill=colour, rx=2))
        body.append(_label(x + 20, y, text, size=13))
        x += 44 + 7.0 * len(text)
    return body


def _file_marks(files, x_of, scale):
    """Where each file that has a start goes in the run chart, and on which line its label fits (None: no room
    on the lines there are; its bar keeps its tooltip). The label of the failed file always gets a line."""
    marks, ends = [], []
    for item in files:
        if item["start"] is None:
            continue
        x = x_of(item["start"])
        width = max(item["duration"] * scale, 4.0)
        text = "%06d%s" % (_number(item["version"]), " FAILED" if item["failed"] else "")
        left, right = x + width + 4, x + width + 4 + _width(text, 12) + 6
        level = next((index for index, end in enumerate(ends) if left > end), None)
        if level is None and (len(ends) < LABEL_LINES or item["failed"]):
            ends.append(0.0)
            level = len(ends) - 1
        if level is not None:
            ends[level] = right
        name = "%06d %s" % (_number(item["version"]), item["title"])
        marks.append({
            "x": x, "width": width, "text": text, "level": level, "failed": item["failed"],
            "version": item["version"],
            "colour": COLOURS["failed"] if item["failed"] else (
                COLOURS["file_blocking"] if item["blocks_writers"] else COLOURS["file"]),
            "title": "%s (%s): %s at %s UTC, %s%s" % (
                name, item["direction"], "FAILED" if item["failed"] else "ran", clock_time(item["start"]),
                seconds_text(item["duration"]), ", during maintenance" if item["maintenance"] else ", live")})
    return marks


def run_chart(record):
    """The run on the wall clock (UTC): phases, maintenance band, files, rollback."""
    found = events(record)
    if not found["phases"]:
        return ""
    right = 130
    plot = WIDTH - LEFT - right
    start, end = found["start"], max(found["end"], found["start"] + 1.0)
    scale = plot / (end - start)

    def x_of(moment):
        return LEFT + (moment - start) * scale

    spans = found["maintenance"]
    marks = _file_marks(found["files"], x_of, scale)
    top = 10 + 22 * len(spans)
    levels = max([mark["level"] or 0 for mark in marks] or [0])
    bottom = top + len(found["phases"]) * ROW + ((ROW + LABEL_LINE * levels) if marks else 0)
    height = bottom + 74
    body = []
    step = _nice_step(end - start)
    tick = (int(start // step) + 1) * step if start % step else start
    while tick <= end + 1e-9:
        x = x_of(tick)
        body.append(_element("line", x1="%.1f" % x, x2="%.1f" % x, y1=top - 4, y2=bottom + 4,
                             stroke=COLOURS["grid"], stroke_width=1))
        body.append(_label(x, bottom + 20, clock_time(tick), anchor="middle", fill=COLOURS["muted"], size=12))
        tick += step
    body.append(_label(LEFT + plot + 34, bottom + 20, "UTC", fill=COLOURS["muted"], size=12))
    for index, span in enumerate(spans):
        x, width = x_of(span["start"]), max((span["end"] - span["start"]) * scale, 2.0)
        seconds = span["end"] - span["start"]
        if span["still_on"]:
            text = "MAINTENANCE MODE ON since %s UTC - STILL ON at the end of the run" % clock_time(span["start"])
        else:
            text = "maintenance mode ON %s \u2192 %s UTC (%s)" % (
                clock_time(span["start"]), clock_time(span["end"]), seconds_text(seconds))
        body.append(_rect(x, top - 6, width, bottom - top + 12, COLOURS["band"], "maintenance", text,
                          fill_opacity="0.28", stroke=COLOURS["band"], stroke_width=2,
                          data_start=clock_time(span["start"]), data_end=clock_time(span["end"])))
        anchor = "end" if x > LEFT + plot * 0.6 else "start"
        body.append(_label(x + width if anchor == "end" else x, 10 + 22 * index + 8, text, anchor=anchor,
                           weight="bold", fill=COLOURS["band_text"]))
    y = top
    for phase in found["phases"]:
        name = phase["phase"]
        if name == "rollback" and found["rollback"]:
            shown = "rollback (%s)" % (found["rollback"].get("mode") or "?")
        else:
            shown = name
        result = phase["result"] if phase["result"] in COLOURS else "ok"
        duration = phase["end"] - phase["start"]
        title = "%s: %s, %s, %s \u2192 %s UTC" % (shown, phase["result"], seconds_text(duration),
                                                  clock_time(phase["start"]), clock_time(phase["end"]))
        body.append(_label(LEFT - 10, y + 18, shown, anchor="end", weight="bold" if result != "ok" else None))
        x = x_of(phase["start"])
        width = max(duration * scale, 2.0)
        body.append(_rect(x, y + 5, width, BAR, COLOURS[result], "phase", title, rx=2, data_phase=name,
                          data_result=phase["result"]))
        figure = seconds_text(duration) + ("" if result == "ok" else "  " + phase["result"].upper())
        if x + width + 6 + _width(figure) <= WIDTH or width < _width(figure) + 12:
            body.append(_label(x + width + 6, y + 18, figure, weight="bold" if result != "ok" else None,
                               fill=COLOURS[result] if result != "ok" else COLOURS["muted"]))
        else:  # no room after the bar: inside it, at its end
            body.append(_label(x + width - 6, y + 18, figure, anchor="end", weight="bold", fill="#ffffff"))
        y += ROW
    if marks:
        body.append(_label(LEFT - 10, y + 18, "migration files", anchor="end", weight="bold"))
        for mark in marks:
            body.append(_rect(mark["x"], y + 3, mark["width"], BAR + 4, mark["colour"], "file", mark["title"],
                              data_version=mark["version"]))
            if mark["level"] is not None:
                body.append(_label(mark["x"] + mark["width"] + 4, y + 18 + LABEL_LINE * mark["level"], mark["text"],
                                   size=12, fill=mark["colour"], weight="bold" if mark["failed"] else None))
    results = set(phase["result"] for phase in found["phases"])
    legend = [(COLOURS["ok"], "phase")]
    legend += [(COLOURS[result], result) for result in ("failed", "rolled back") if result in results]
    if spans:
        legend.append((COLOURS["band"], "maintenance mode on"))
    if marks:
        legend.append((COLOURS["file"], "migration file"))
    if any(mark["colour"] == COLOURS["file_blocking"] for mark in marks):
        legend.append((COLOURS["file_blocking"], "file that blocked writers in the rehearsal"))
    body.extend(_legend(LEFT, bottom + 52, legend))
    return _svg(height, body, "timeline run", "The run's phases on the clock")


def files_chart(record):
    """Per file: production and rehearsal durations, and each lock the rehearsal saw it take, on one scale."""
    found = events(record)
    shown = found["files"]
    if not shown:
        return ""
    right = 420
    plot = WIDTH - LEFT - right
    span = max([item["duration"] for item in shown] +
               [item["rehearsal"].get("duration", 0.0) for item in shown if item["rehearsal"]] +
               [lock["offset"] + lock["held"] for item in shown if item["rehearsal"]
                for lock in item["rehearsal"]["locks"]] + [0.001])
    step = _nice_step(span, 8)
    span = step * (int(span / step) + (0 if abs(span / step - round(span / step)) < 1e-9 else 1))
    scale = plot / span
    top = 30
    body = []
    y = top
    for item in shown:
        name = "%06d %s (%s)" % (_number(item["version"]), item["title"], item["direction"])
        if not item["production"]:
            where = "not run in production"
        elif item["failed"]:
            where = "FAILED after %s" % seconds_text(item["duration"])
        elif item["start"] is None:
            where = "ran"
        else:
            where = "ran %s UTC%s" % (clock_time(item["start"]), ", during maintenance" if item["maintenance"]
                                      else ", application serving")
        body.append(_label(14, y + 18, _shorten(name, 70), weight="bold", css="file-name"))
        body.append(_label(WIDTH - 14, y + 18, where + (" \u2013 " + item["mode"] if item["mode"] else ""),
                           anchor="end", fill=COLOURS["failed"] if item["failed"] else COLOURS["muted"], size=13))
        y += ROW
        colour = COLOURS["failed"] if item["failed"] else COLOURS["file"]
        body.append(_label(LEFT - 10, y + 18, "production", anchor="end"))
        if item["production"]:
            body.append(_rect(LEFT, y + 5, max(item["duration"] * scale, 2.0), BAR, colour, "file-run",
                              "%s in production: %s" % (name, seconds_text(item["duration"])),
                              data_version=item["version"]))
            body.append(_label(LEFT + plot + 10, y + 18, seconds_text(item["duration"]) +
                               ("; " + item["lock_wait"] if item["lock_wait"] else ""), fill=COLOURS["muted"],
                               size=13))
        else:
            body.append(_label(LEFT, y + 18, "not run: the run stopped before", fill=COLOURS["muted"], size=13))
        y += ROW
        rehearsal = item["rehearsal"]
        if not rehearsal:
            body.append(_label(LEFT, y + 18, "not rehearsed: the locks it took were not observed", size=13,
                               fill=COLOURS["muted"]))
            y += ROW + 8
            continue
        body.append(_label(LEFT - 10, y + 18, "rehearsal", anchor="end"))
        body.append(_rect(LEFT, y + 5, max(rehearsal["duration"] * scale, 2.0), BAR,
                          COLOURS["rehearsal"] if rehearsal["ok"] else COLOURS["failed"],
                          "file-rehearsal", "%s in the rehearsal: %s" % (name, seconds_text(rehearsal["duration"]))))
        body.append(_label(LEFT + plot + 10, y + 18, seconds_text(rehearsal["duration"]) +
                           ("" if rehearsal["ok"] else " FAILED"), fill=COLOURS["muted"], size=13))
        y += ROW
        lanes = []
        for lock in rehearsal["locks"]:
            key = (lock["table"], lock["mode"])
            if key not in lanes:
                lanes.append(key)
        for table, mode in lanes:
            taken = [lock for lock in rehearsal["locks"] if (lock["table"], lock["mode"]) == (table, mode)]
            effect = blocks(mode)
            colour = COLOURS["blocks_reads" if effect == "reads and writes" else
                             "blocks_writes" if effect else "passes_writers"]
            body.append(_label(LEFT - 10, y + 18, _shorten(table_name(table), 24), anchor="end", size=13))
            for lock in taken:
                title = "%s %s held %s (line %s)%s" % (
                    table_name(table), mode, seconds_text(lock["held"]),
                    lock["line"] if lock["line"] is not None else "?",
                    "; blocks " + effect if effect else "; writers pass")
                body.append(_rect(LEFT + lock["offset"] * scale, y + 7, max(lock["held"] * scale, 2.0), BAR - 4,
                                  colour, "lock", title, data_table=table, data_mode=mode,
                                  data_blocks=effect or "none"))
            longest = max(lock["held"] for lock in taken)
            body.append(_label(LEFT + plot + 10, y + 18, "%s %s%s" % (
                mode, seconds_text(longest), ": blocks " + effect if effect else ""), size=13,
                fill=colour if effect else COLOURS["muted"], weight="bold" if effect else None))
            y += ROW - 4
        y += 12
    axis = y + 4
    tick = 0.0
    while tick <= span + 1e-9:
        x = LEFT + tick * scale
        body.insert(0, _element("line", x1="%.1f" % x, x2="%.1f" % x, y1=top, y2=axis,
                                stroke=COLOURS["grid"], stroke_width=1))
        body.append(_label(x, axis + 16, ("%.3f" % tick).rstrip("0").rstrip(".") + " s", anchor="middle",
                           fill=COLOURS["muted"], size=12))
        tick += step
    body.append(_label(LEFT, 16, "seconds from the start of each file", fill=COLOURS["muted"], size=13))
    body.extend(_legend(LEFT, axis + 46, [(COLOURS["blocks_reads"], "blocks reads and writes"),
                                          (COLOURS["blocks_writes"], "blocks writes"),
                                          (COLOURS["passes_writers"], "writers pass"),
                                          (COLOURS["rehearsal"], "rehearsal on the verified copy")]))
    return _svg(axis + 60, body, "timeline files", "The migration files and the table locks they took")


def charts(record):
    """Both charts, as the HTML report embeds them ('' when the record has nothing to draw)."""
    return {"run": run_chart(record), "files": files_chart(record)}
