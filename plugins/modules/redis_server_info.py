#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: redis_server_info
short_description: Read a Redis server's version and INFO figures, with a time limit
version_added: 0.1.0
description:
  - Connects to Redis, authenticates, and returns the server version and the figures of the C(INFO) sections named in
    O(sections). Changes nothing.
  - Written for this collection because M(community.general.redis_info) has no timeout - with redis-py's defaults it
    waits a minute or more (older redis-py versions for ever) on a server that accepts the connection and never
    answers - and reports every failure as C(unable to connect to database).
options:
  sections:
    description:
      - C(INFO) sections to read, for example V(server), V(stats), V(memory), V(replication); V(all) for every one.
    type: list
    elements: str
    default: [server]
    version_added: 0.1.0
  tls:
    description:
      - Connect with TLS. Off by default here (the community.general.redis fragment says on), because most
        self-hosted Redis servers are plain TCP; set it for managed services.
    type: bool
    default: false
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads only, in check mode as otherwise.
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
- name: Read the Redis version, failing within 5 seconds when Redis does not answer
  tmi.migration.redis_server_info:
    login_host: redis.example.internal
    login_password: "{{ vault_tmi_redis_password }}"
    timeout: 5
  register: redis_server

- name: Read the cache counters
  tmi.migration.redis_server_info:
    login_host: redis.example.internal
    login_password: "{{ vault_tmi_redis_password }}"
    sections: [stats, memory]
"""

RETURN = r"""
redis_version:
  description: Server version.
  returned: always
  type: str
  sample: "7.2.4"
endpoint:
  description: The C(host:port) that answered.
  returned: always
  type: str
  sample: redis.example.internal:6379
info:
  description: The figures of the sections read, one dictionary (C(INFO)'s field names).
  returned: always
  type: dict
  sample: {"redis_version": "7.2.4", "keyspace_hits": 120, "keyspace_misses": 4, "used_memory_human": "1.02M"}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tmi.migration.plugins.module_utils import redis_client

try:
    from redis import exceptions as redis_errors
except ImportError:  # redis_client.connect reports it
    redis_errors = None


def main():
    module = AnsibleModule(
        argument_spec=redis_client.argument_spec(
            sections=dict(type="list", elements="str", default=["server"]),
        ),
        supports_check_mode=True,
    )
    client = redis_client.connect(module)
    info = {}
    try:
        # The server section first: it holds the version, and it fails fast when the server does not answer.
        info.update(client.info("server"))
        for section in module.params["sections"]:
            if section.lower() != "server":
                info.update(client.info(section))
    except redis_errors.RedisError as error:
        redis_client.fail(module, error)
    finally:
        client.close()
    module.exit_json(changed=False, redis_version=info.get("redis_version", ""),
                     endpoint=redis_client.endpoint(module), info=info)


if __name__ == "__main__":
    main()
