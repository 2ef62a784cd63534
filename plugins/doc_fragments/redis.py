# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every tmi.migration Redis module adds to community.general's connection options, documented once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  timeout:
    description:
      - Seconds to wait for the connection and for each answer of the server. There are no retries, so a server
        that accepts the connection and never answers fails the task after this time, naming the endpoint.
      - Must be above 0.
    type: float
    default: 10
    version_added: 0.1.0
notes:
  - Errors name the endpoint (C(host:port)) and whether Redis was not reachable, did not answer in time or refused
    the credentials; they never show the password.
  - A O(login_password) holding a line break is refused before connecting, because C(redis-cli) (used for the RDB
    copy of the backup) reads the password as one line.
"""
