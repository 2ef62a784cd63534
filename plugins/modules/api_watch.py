#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: api_watch
short_description: Poll the health endpoints of several application hosts and measure how long each did not answer
version_added: 0.1.0
description:
  - Polls every target of O(targets) every O(interval) seconds, each in its own thread, until O(stop_file) appears
    (or its directory is removed) or O(duration) seconds have passed. A target answers when every path of O(paths)
    answers one of O(expect).
  - Returns per target the stretches during which it did not answer (from the first poll that failed to the first that
    answered again, so to within one O(interval)), with the last answer of each, and the longest stretch during which
    no target answered - for a single host the gap its users see; for hosts restarted one at a time, zero.
  - Meant to run in the background (C(async), C(poll=0)) while the app_config role restarts the application hosts,
    and to be collected with M(ansible.builtin.async_status) after the role removes O(stop_file)'s directory (creating
    O(stop_file) ends it too).
  - Written for this collection because M(ansible.builtin.uri) and M(ansible.builtin.wait_for) wait for one endpoint
    in the foreground and report no unavailability. It sends no token - health endpoints are public in the
    runbook, and the arguments of a background job are written to a file on the host.
options:
  targets:
    description: The hosts to watch, each with its own base URL.
    type: list
    elements: dict
    required: true
    version_added: 0.1.0
    suboptions:
      name:
        description: The name of the target in the results (the inventory host).
        type: str
        required: true
        version_added: 0.1.0
      url:
        description: Base URL of this host's application, for example C(http://app1.internal:8080).
        type: str
        required: true
        version_added: 0.1.0
  paths:
    description: Paths below each target's URL that must all answer (the runbook's C(/health) and C(/ready)).
    type: list
    elements: str
    default: [/health]
    version_added: 0.1.0
  expect:
    description: Status codes that count as an answer.
    type: list
    elements: int
    default: [200]
    version_added: 0.1.0
  interval:
    description: Seconds between two polls of a target (at least 0.01).
    type: float
    default: 0.1
    version_added: 0.1.0
  timeout:
    description: Seconds to wait for each answer; a poll without an answer in that time counts as not answered.
    type: float
    default: 2
    version_added: 0.1.0
  duration:
    description: Seconds after which the watch ends even without O(stop_file).
    type: float
    default: 600
    version_added: 0.1.0
  stop_file:
    description:
      - The watch ends once this file exists or its directory no longer exists (a run that was killed and cleaned up).
      - Without it, the watch lasts O(duration) seconds.
    type: path
    version_added: 0.1.0
  validate_certs:
    description: Verify the servers' TLS certificates.
    type: bool
    default: true
    version_added: 0.1.0
  ca_path:
    description: CA bundle to verify the servers' certificates with.
    type: path
    version_added: 0.1.0
  body_limit:
    description: Characters of an answer's body kept as the reason of a stretch.
    type: int
    default: 300
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Can run in check mode; it sends read-only requests only and changes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Watch both hosts' health in the background
  tmi.migration.api_watch:
    targets:
      - name: app1
        url: https://app1.example.internal
      - name: app2
        url: https://app2.example.internal
    paths: [/health, /ready]
    interval: 0.1
    stop_file: "{{ watch_dir.path }}/stop"
  async: 900
  poll: 0
  register: watch_job

# ... restart the hosts one at a time ...

- name: Remove the stop file's directory, which tells the watcher to stop
  ansible.builtin.file:
    path: "{{ watch_dir.path }}"
    state: absent

- name: Collect what the watcher saw
  ansible.builtin.async_status:
    jid: "{{ watch_job.ansible_job_id }}"
  register: watch
  until: watch.finished
  retries: 30
  delay: 1
"""

RETURN = r"""
targets:
  description: One entry per target, in the order given.
  returned: always
  type: list
  elements: dict
  sample:
    - name: app1
      url: http://app1.internal:8080
      polls: 118
      seconds_unavailable: 0.61
      longest_unavailable: 0.61
      down:
        - from: "2026-11-25T06:40:01.120Z"
          to: "2026-11-25T06:40:01.730Z"
          seconds: 0.61
          open: false
          answer: {path: /health, status: -1, body: "no answer: [Errno 111] Connection refused"}
gap_seconds:
  description: The longest stretch during which no target answered (0 when one always did).
  returned: always
  type: float
  sample: 0.0
gap:
  description: When that longest stretch began and ended (null when there was none).
  returned: always
  type: dict
  sample: {from: "2026-11-25T06:40:01.120Z", to: "2026-11-25T06:40:01.730Z"}
seconds:
  description: How long the watch lasted.
  returned: always
  type: float
stopped_by:
  description: What ended the watch - V(stop_file) or V(duration).
  returned: always
  type: str
"""

import os
import threading
import time
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tmi.migration.plugins.module_utils import http_client


def down_stretches(observations, end):
    """Stretches without an answer from (time, answered, answer) observations in time order: (from, to, answer, open).

    A stretch runs from the first poll that got no answer to the first that got one again; one that has not ended
    when the watch ends is open and ends at ``end``.
    """
    stretches, began, last = [], None, None
    for moment, answered, answer in observations:
        if not answered:
            began = moment if began is None else began
            last = answer
        elif began is not None:
            stretches.append((began, moment, last, False))
            began = None
    if began is not None:
        stretches.append((began, end, last, True))
    return stretches


def longest_gap(per_target, end):
    """The longest stretch during which no target answered: (seconds, from, to), (0.0, None, None) without one.

    ``per_target`` holds each target's observations; a target counts as answering until its first poll says otherwise,
    and between two polls it is as its last poll found it.
    """
    events = sorted((moment, index, answered) for index, observations in enumerate(per_target)
                    for moment, answered, _answer in observations)
    answering = [True] * len(per_target)
    best, began = (0.0, None, None), None
    for moment, index, answered in events:
        answering[index] = answered
        if not any(answering):
            began = moment if began is None else began
        elif began is not None:
            if moment - began > best[0]:
                best = (moment - began, began, moment)
            began = None
    if began is not None and end - began > best[0]:
        best = (end - began, began, end)
    return best


def _iso(moment):
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Watcher:
    """Polls one target in its own thread and keeps (time, answered, answer) per poll."""

    def __init__(self, target, params, stop):
        self.target = target
        self.params = params
        self.stop = stop
        self.observations = []
        self.thread = threading.Thread(target=self.run, name="watch-" + target["name"])
        self.thread.daemon = True

    def poll(self):
        base = self.target["url"].rstrip("/")
        for path in self.params["paths"]:
            status, body, _ms = http_client.send(base + path, timeout=self.params["timeout"],
                                                 validate_certs=self.params["validate_certs"],
                                                 ca_path=self.params["ca_path"], body_limit=self.params["body_limit"])
            if status not in self.params["expect"]:
                return False, {"path": path, "status": status, "body": body}
        return True, None

    def run(self):
        interval = self.params["interval"]
        while not self.stop.is_set():
            sent = time.time()
            answered, answer = self.poll()
            self.observations.append((sent, answered, answer))
            self.stop.wait(max(0.0, interval - (time.time() - sent)))


def should_stop(stop_file, deadline):
    """'stop_file' once the file exists or its directory is gone, 'duration' past the deadline, else None."""
    if stop_file and (os.path.exists(stop_file) or not os.path.isdir(os.path.dirname(stop_file) or ".")):
        return "stop_file"
    if time.monotonic() >= deadline:
        return "duration"
    return None


def watch(params):
    stop = threading.Event()
    watchers = [Watcher(target, params, stop) for target in params["targets"]]
    started, deadline = time.time(), time.monotonic() + params["duration"]
    for watcher in watchers:
        watcher.thread.start()
    stopped_by = should_stop(params["stop_file"], deadline)
    while stopped_by is None:
        time.sleep(min(params["interval"], 0.05))
        stopped_by = should_stop(params["stop_file"], deadline)
    # The watch ends when the stop was decided; the polls in flight then only finish.
    ended = time.time()
    stop.set()
    for watcher in watchers:
        watcher.thread.join(params["timeout"] * len(params["paths"]) + 5)

    seen_by = [[seen for seen in watcher.observations if seen[0] <= ended] for watcher in watchers]
    targets = []
    for watcher, observations in zip(watchers, seen_by):
        stretches = down_stretches(observations, ended)
        seconds = [to - began for began, to, _answer, _open in stretches]
        targets.append({
            "name": watcher.target["name"], "url": watcher.target["url"], "polls": len(observations),
            "seconds_unavailable": round(sum(seconds), 3), "longest_unavailable": round(max(seconds or [0.0]), 3),
            "down": [{"from": _iso(began), "to": _iso(to), "seconds": round(to - began, 3), "open": is_open,
                      "answer": answer} for began, to, answer, is_open in stretches],
        })
    gap, gap_from, gap_to = longest_gap(seen_by, ended)
    return dict(targets=targets, gap_seconds=round(gap, 3),
                gap={"from": _iso(gap_from), "to": _iso(gap_to)} if gap_from is not None else None,
                seconds=round(ended - started, 3), stopped_by=stopped_by, changed=False)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            targets=dict(type="list", elements="dict", required=True,
                         options=dict(name=dict(type="str", required=True), url=dict(type="str", required=True))),
            paths=dict(type="list", elements="str", default=["/health"]),
            expect=dict(type="list", elements="int", default=[200]),
            interval=dict(type="float", default=0.1),
            timeout=dict(type="float", default=2),
            duration=dict(type="float", default=600),
            stop_file=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            body_limit=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    params = module.params
    bad_urls = [t["url"] for t in params["targets"] if not t["url"].startswith(("http://", "https://"))]
    bad_paths = [p for p in params["paths"] if not p.startswith("/")]
    if not params["targets"] or bad_urls or not params["paths"] or bad_paths:
        module.fail_json(msg="targets must be a non-empty list of http(s) URLs and paths a non-empty list of paths "
                             "starting with '/' (bad: %s); nothing was polled." % ", ".join(bad_urls + bad_paths))
    if params["interval"] < 0.01 or params["timeout"] <= 0 or params["duration"] <= 0:
        module.fail_json(msg="interval must be at least 0.01 and timeout and duration above 0 (got %s, %s and %s); "
                             "nothing was polled." % (params["interval"], params["timeout"], params["duration"]))
    module.exit_json(**watch(params))


if __name__ == "__main__":
    main()
