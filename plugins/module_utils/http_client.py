# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One HTTP request to the application, timed: what api_probe and api_watch both send.

Written on ansible-core's open_url so that the modules need no library beyond Ansible's own; the
bearer token goes into a header here and never into the module's logged arguments.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import time

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

# The status of a request that got no answer (refused, timed out, TLS failure).
NO_ANSWER = -1


def answer_body(raw, limit):
    """The first ``limit`` characters of an answer, parsed as JSON when they are JSON."""
    text = to_text(raw or b"", errors="surrogate_or_replace")[:limit]
    try:
        return json.loads(text)
    except ValueError:
        return text


def send(url, method="GET", token="", timeout=10, validate_certs=True, ca_path=None, body_limit=1000):
    """One request: (status, body, milliseconds); status NO_ANSWER with the reason as body when no answer came."""
    headers = {"Authorization": "Bearer " + token} if token else {}
    started = time.monotonic()
    try:
        response = open_url(url, method=method, headers=headers, timeout=timeout, validate_certs=validate_certs,
                            ca_path=ca_path, data=b"" if method in ("POST", "PUT") else None,
                            follow_redirects="safe")
        raw = response.read()
        status = response.getcode()
    except HTTPError as error:
        raw = error.read() if error.fp is not None else b""
        status = error.code
    except (URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return NO_ANSWER, "no answer: %s" % to_native(reason), (time.monotonic() - started) * 1000.0
    return status, answer_body(raw, body_limit), (time.monotonic() - started) * 1000.0
