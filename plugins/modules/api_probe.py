#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: api_probe
short_description: Call HTTP endpoints with a bearer token, repeat each call and time it in milliseconds
version_added: 0.1.0
description:
  - Sends each request of O(requests) to O(url) O(samples) times, with the bearer token O(token) when given,
    and returns per request every status code, the last answer (truncated) and the response times in milliseconds
    (minimum, median, 95th percentile, maximum).
  - Fails when an answer is not one of the expected status codes (unless O(fail_on_error=false)), with the method, the
    URL, the status and the body of the answer in the message - for a health check, the endpoint's own reason.
  - Used by the app_config role for the maintenance switch, the health and readiness checks, the cache warm-up and the
    smoke tests of the granular endpoints.
  - Written for this collection because M(ansible.builtin.uri) reports the time in whole seconds, sends one request
    per task, and would show the bearer token in its logged arguments (it is a header there); here it is a
    C(no_log) option.
options:
  url:
    description: Base URL of the application, for example C(http://localhost:8080).
    type: str
    required: true
    version_added: 0.1.0
  requests:
    description: The requests to send, in order.
    type: list
    elements: dict
    required: true
    version_added: 0.1.0
    suboptions:
      path:
        description: Path below O(url), starting with C(/).
        type: str
        required: true
        version_added: 0.1.0
      method:
        description: HTTP method.
        type: str
        default: GET
        choices: [GET, HEAD, POST, PUT, DELETE]
        version_added: 0.1.0
      name:
        description: A name for the request in the results (default the method and path).
        type: str
        version_added: 0.1.0
      expect:
        description: Status codes that count as success.
        type: list
        elements: int
        default: [200]
        version_added: 0.1.0
  token:
    description: Bearer token sent with every request (none when empty).
    type: str
    default: ""
    version_added: 0.1.0
  samples:
    description: How many times each request is sent; the times are taken over all of them.
    type: int
    default: 1
    version_added: 0.1.0
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 10
    version_added: 0.1.0
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
    version_added: 0.1.0
  ca_path:
    description: CA bundle to verify the server's certificate with.
    type: path
    version_added: 0.1.0
  state_changing:
    description:
      - The requests change the application's state (the maintenance switch). The module then reports C(changed)
        when they succeed and, in check mode, sends nothing.
      - Without it, only C(GET) and C(HEAD) requests are sent in check mode.
    type: bool
    default: false
    version_added: 0.1.0
  fail_on_error:
    description: Fail when an answer has an unexpected status; with V(false), report it in RV(failed_requests) only.
    type: bool
    default: true
    version_added: 0.1.0
  body_limit:
    description: Characters of each answer's body to keep in the results.
    type: int
    default: 1000
    version_added: 0.1.0
attributes:
  check_mode:
    support: partial
    description: Can run in check mode.
    details: Sends read-only requests (C(GET), C(HEAD)) only; the others are reported as skipped.
  diff_mode:
    support: none
    description: Returns no diff.
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Smoke-test the granular endpoints, 20 times each
  tmi.migration.api_probe:
    url: https://tmi.example.internal
    token: "{{ vault_tmi_api_token }}"
    samples: 20
    requests:
      - path: /threat_models/{{ threat_model_id }}/threats
      - path: /threat_models/{{ threat_model_id }}/documents

- name: Switch maintenance mode on
  tmi.migration.api_probe:
    url: https://tmi.example.internal
    token: "{{ vault_tmi_api_token }}"
    state_changing: true
    requests:
      - path: /admin/maintenance/enable
        method: POST
"""

RETURN = r"""
results:
  description: One entry per request.
  returned: always
  type: list
  elements: dict
  sample:
    - name: GET /health
      method: GET
      url: http://localhost:8080/health
      status: 200
      statuses: [200]
      ok: true
      skipped: false
      body: {"status": "ok"}
      ms: {min: 1.2, median: 1.2, p95: 1.2, max: 1.2}
failed_requests:
  description: Names of the requests that got an unexpected status at least once.
  returned: always
  type: list
  elements: str
median_ms:
  description: Median response time over every sample of every request sent (null when none was sent).
  returned: always
  type: float
max_ms:
  description: Longest response time of any sample (null when none was sent).
  returned: always
  type: float
failure_message:
  description:
    - What failed, one line per failed request (as the message of a failure); empty when nothing failed.
    - With O(fail_on_error=false), the message a caller can fail with in its own words.
  returned: always
  type: str
  version_added: 0.1.0
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tmi.migration.plugins.module_utils import http_client

_READ_ONLY = ("GET", "HEAD")


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list (fraction 0.5 = median of an odd list)."""
    ordered = sorted(values)
    if len(ordered) % 2 == 0 and fraction == 0.5:
        middle = len(ordered) // 2
        return (ordered[middle - 1] + ordered[middle]) / 2.0
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(samples):
    """min, median, p95 and max of response times, rounded to 0.1 ms (None without samples)."""
    if not samples:
        return None
    return {"min": round(min(samples), 1), "median": round(percentile(samples, 0.5), 1),
            "p95": round(percentile(samples, 0.95), 1), "max": round(max(samples), 1)}


def send(module, url, method):
    """One request: (status, body, milliseconds); status -1 when no answer came."""
    params = module.params
    return http_client.send(url, method, token=params["token"], timeout=params["timeout"],
                            validate_certs=params["validate_certs"], ca_path=params["ca_path"],
                            body_limit=params["body_limit"])


def probe(module):
    params = module.params
    base = params["url"].rstrip("/")
    results, failed, everything = [], [], []
    for request in params["requests"]:
        method = request["method"]
        name = request.get("name") or "%s %s" % (method, request["path"])
        url = base + request["path"]
        entry = {"name": name, "method": method, "url": url, "expected": request["expect"], "statuses": [],
                 "status": None, "body": None, "ok": True, "skipped": False, "ms": None}
        if module.check_mode and (params["state_changing"] or method not in _READ_ONLY):
            entry["skipped"] = True
            results.append(entry)
            continue
        times = []
        for _sample in range(params["samples"]):
            status, body, elapsed = send(module, url, method)
            entry["statuses"].append(status)
            entry["status"], entry["body"] = status, body
            times.append(elapsed)
        entry["ok"] = all(status in request["expect"] for status in entry["statuses"])
        entry["ms"] = summarize(times)
        everything.extend(times)
        if not entry["ok"]:
            failed.append(name)
        results.append(entry)
    return results, failed, everything


def failure_message(results, timeout=None):
    """One line per failed request; with a remedy when a request got no answer (``timeout``: the limit it had)."""
    lines = []
    for entry in results:
        if entry["ok"]:
            continue
        body = entry["body"] if isinstance(entry["body"], str) else json.dumps(entry["body"], sort_keys=True)
        bad = [s for s in entry["statuses"] if s not in entry["expected"]]
        status = "got no answer" if entry["status"] == -1 else "answered %s" % entry["status"]
        lines.append("%s %s %s (expected %s; %d of %d answers unexpected): %s"
                     % (entry["method"], entry["url"], status, "/".join(str(s) for s in entry["expected"]),
                        len(bad), len(entry["statuses"]), body))
    text = "; ".join(lines)
    if any(-1 in entry["statuses"] for entry in results if not entry["ok"]):
        text += (". No answer means the application refused the connection or did not answer%s: check that it runs "
                 "and listens at this URL (app_config_url), or raise timeout if it is only slow"
                 % (" within %s s" % timeout if timeout else ""))
    return text


def main():
    request_spec = dict(
        path=dict(type="str", required=True),
        method=dict(type="str", default="GET", choices=["GET", "HEAD", "POST", "PUT", "DELETE"]),
        name=dict(type="str"),
        expect=dict(type="list", elements="int", default=[200]),
    )
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            requests=dict(type="list", elements="dict", required=True, options=request_spec),
            token=dict(type="str", default="", no_log=True),
            samples=dict(type="int", default=1),
            timeout=dict(type="float", default=10),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            state_changing=dict(type="bool", default=False),
            fail_on_error=dict(type="bool", default=True),
            body_limit=dict(type="int", default=1000),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not params["url"].startswith(("http://", "https://")):
        module.fail_json(msg="url must start with http:// or https:// (got %r); nothing was sent." % params["url"])
    if params["samples"] < 1 or params["timeout"] <= 0:
        module.fail_json(msg="samples must be at least 1 and timeout above 0 (got %s and %s); nothing was sent."
                         % (params["samples"], params["timeout"]))
    bad_paths = [r["path"] for r in params["requests"] if not r["path"].startswith("/")]
    if bad_paths or not params["requests"]:
        module.fail_json(msg="requests must be a non-empty list of paths starting with '/' (bad: %s); nothing was sent."
                         % ", ".join(bad_paths))

    results, failed, everything = probe(module)
    sent = [entry for entry in results if not entry["skipped"]]
    outcome = dict(
        results=results,
        failed_requests=failed,
        median_ms=round(percentile(everything, 0.5), 1) if everything else None,
        max_ms=round(max(everything), 1) if everything else None,
        changed=bool(params["state_changing"] and sent and not failed),
        failure_message=failure_message(results, params["timeout"]) if failed else "",
    )
    if failed and params["fail_on_error"]:
        module.fail_json(msg=outcome["failure_message"], **outcome)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
