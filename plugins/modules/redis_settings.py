#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: redis_settings
short_description: Read, set and verify Redis server settings idempotently, with their previous values
version_added: 0.1.0
description:
  - Reads the current value of every setting named in O(settings) or O(read) (C(CONFIG GET)), sets those in
    O(settings) that differ (C(CONFIG SET)), reads them back to verify, and optionally persists them with
    C(CONFIG REWRITE) when the server has a config file.
  - Compares values the way Redis stores them, so a second run reports no change - keyspace event flags in any order
    (C(Ex) equals C(xE)), memory sizes in any unit (C(100mb) equals C(104857600)).
  - Returns the values before and after, so a later run can put the previous values back.
  - Managed Redis services often disable C(CONFIG); the module then fails with instructions, or skips with
    O(config_disabled=skip).
  - Written for this collection because M(community.general.redis) (C(command=config)) sets one value without
    returning the previous one, comparing normalised values, verifying, or persisting.
options:
  settings:
    description: Settings to enforce, name to value.
    type: dict
    default: {}
    version_added: 0.1.0
  read:
    description: Further settings to read and return without changing them.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  persist:
    description: After a change, write the configuration file with C(CONFIG REWRITE) (when the server has one).
    type: bool
    default: false
    version_added: 0.1.0
  tls:
    description:
      - Connect with TLS. Off by default here (the community.general.redis fragment says on), because most
        self-hosted Redis servers are plain TCP; set it for managed services.
    type: bool
    default: false
    version_added: 0.1.0
  config_disabled:
    description: What to do when the server refuses C(CONFIG) - V(fail) with instructions, or V(skip) with a warning.
    type: str
    choices: [fail, skip]
    default: fail
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads the settings and reports what would change.
  diff_mode:
    support: none
    description: Returns no diff.
extends_documentation_fragment:
  - community.general.redis
  - tmi.migration.redis
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Configure the TMI cache
  tmi.migration.redis_settings:
    login_host: redis.example.internal
    login_password: "{{ vault_tmi_redis_password }}"
    tls: true
    settings:
      maxmemory-policy: allkeys-lru
      notify-keyspace-events: Ex
    persist: true
"""

RETURN = r"""
before:
  description: Values before the run.
  returned: always
  type: dict
  sample: {"maxmemory-policy": "noeviction", "notify-keyspace-events": ""}
after:
  description: Values after the run (in check mode, the values the run would leave).
  returned: always
  type: dict
  sample: {"maxmemory-policy": "allkeys-lru", "notify-keyspace-events": "xE"}
changed_settings:
  description: Names of the settings that were (or would be) changed.
  returned: always
  type: list
  elements: str
redis_version:
  description: Server version.
  returned: always
  type: str
config_file:
  description: The server's config file ("" when it has none).
  returned: always
  type: str
rewritten:
  description: Whether C(CONFIG REWRITE) ran.
  returned: always
  type: bool
config_disabled:
  description: Whether the server refused C(CONFIG) (only with O(config_disabled=skip)).
  returned: always
  type: bool
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import redis_client

try:
    from redis import exceptions as redis_errors
except ImportError:  # redis_client.connect reports it
    redis_errors = None

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}
_KEYSPACE_ALL = "g$lshzxet"  # what the 'A' flag of notify-keyspace-events stands for
_MEMORY_SETTINGS = {"maxmemory", "client-query-buffer-limit", "proto-max-bulk-len"}


def normalise(name, value):
    """The form Redis stores a value in, for comparing what is wanted with what is set."""
    text = to_native(value).strip()
    if name == "notify-keyspace-events":
        flags = text.replace("A", _KEYSPACE_ALL)
        return "".join(sorted(set(flags)))
    if name in _MEMORY_SETTINGS:
        match = re.match(r"^(\d+)\s*([a-z]*)$", text.lower())
        if match and match.group(2) in _UNITS:
            return str(int(match.group(1)) * _UNITS[match.group(2)])
    return text.lower()


def config_disabled_message(error):
    return ("The Redis server refuses CONFIG (%s). Managed Redis services (ElastiCache, Azure Cache, Memorystore) "
            "disable or rename it: set the values in the provider's parameter group instead, then run again with "
            "config_disabled=skip (redis_config_on_config_disabled: skip in the role)." % to_native(error))


def manage(module, client, result):
    """Read, set, verify and persist the settings; exits the module."""
    wanted = dict((name, to_native(value)) for name, value in module.params["settings"].items())
    names = list(dict.fromkeys(list(wanted) + module.params["read"]))
    server = client.info("server")
    result.update(redis_version=server.get("redis_version", ""), config_file=server.get("config_file", "") or "")
    try:
        for name in names:
            value = client.config_get(name)
            if name not in value:
                module.fail_json(msg="Redis %s has no setting %r; check its name." % (result["redis_version"], name),
                                 **result)
            result["before"][name] = value[name]
    except redis_errors.ResponseError as error:
        if module.params["config_disabled"] == "skip":
            module.warn(config_disabled_message(error))
            result["config_disabled"] = True
            module.exit_json(**result)
        module.fail_json(msg=config_disabled_message(error), **result)

    changes = [n for n in wanted if normalise(n, wanted[n]) != normalise(n, result["before"][n])]
    result.update(changed=bool(changes), changed_settings=changes, after=dict(result["before"]))
    if module.check_mode or not changes:
        result["after"].update((n, wanted[n]) for n in changes)
        module.exit_json(**result)
    try:
        for name in changes:
            client.config_set(name, wanted[name])
        result["after"] = dict((n, client.config_get(n)[n]) for n in names)
    except redis_errors.ResponseError as error:
        module.fail_json(msg="Redis rejected a setting: %s. Check the value." % to_native(error), **result)
    wrong = [n for n in wanted if normalise(n, wanted[n]) != normalise(n, result["after"][n])]
    if wrong:
        module.fail_json(msg="Redis did not keep %s (read back %s); another client or a proxy may rewrite them."
                             % (", ".join(wrong), ", ".join("%s=%s" % (n, result["after"][n]) for n in wrong)),
                         **result)
    if module.params["persist"]:
        if result["config_file"]:
            client.config_rewrite()
            result["rewritten"] = True
        else:
            module.warn("Redis runs without a config file, so the settings last until it restarts; set them in its "
                        "startup configuration too.")
    module.exit_json(**result)


def main():
    spec = redis_client.argument_spec(
        settings=dict(type="dict", default={}),
        read=dict(type="list", elements="str", default=[]),
        persist=dict(type="bool", default=False),
        config_disabled=dict(type="str", choices=["fail", "skip"], default="fail"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    client = redis_client.connect(module)
    result = dict(changed=False, before={}, after={}, changed_settings=[], rewritten=False, config_disabled=False)
    try:
        manage(module, client, result)
    except redis_errors.RedisError as error:  # not reachable, no answer in time, credentials refused
        redis_client.fail(module, error, **result)
    finally:
        client.close()


if __name__ == "__main__":
    main()
