# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one Redis connection helper of the tmi.migration Redis modules.

Connection options and their translation come from community.general (``redis_auth_argument_spec``,
``redis_auth_params``), so they are named and documented as there. What this adds, and why:

* A time limit, option ``timeout`` (``socket_connect_timeout`` and ``socket_timeout``), and no
  retries. A listener that accepts the TCP connection and never answers (a hung server, the
  wrong port, a proxy with nothing behind it) otherwise holds a run: older redis-py versions
  wait for ever, redis-py 8 retries the timed-out command with backoff for about a minute.
* Errors that name the endpoint (host:port), say what happened (not reachable, no answer in
  time, authentication refused) and what to change - never the password.
* A password holding a line break is refused before connecting: redis-cli, which copies the
  RDB for the backup, reads the password as one line (``--askpass``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.community.general.plugins.module_utils.redis import (
    fail_imports,
    redis_auth_argument_spec,
    redis_auth_params,
)

try:
    import redis
    from redis import exceptions as redis_errors
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # fail_imports reports it
    redis = None
    redis_errors = None

DEFAULT_TIMEOUT = 10
_LINE_BREAKS = ("\n", "\r")


def argument_spec(**extra):
    """community.general's Redis connection options (TLS off by default), ``timeout``, and a module's own."""
    spec = redis_auth_argument_spec(tls_default=False)
    spec["timeout"] = dict(type="float", default=DEFAULT_TIMEOUT)
    spec.update(extra)
    return spec


def endpoint(module):
    return "%s:%s" % (module.params["login_host"], module.params["login_port"])


def connect(module):
    """A redis-py client with the module's connection options, its timeout and no retries.

    redis-py connects on the first command: wrap the commands in ``try`` and pass the errors to ``fail``.
    """
    params = module.params
    fail_imports(module, params["tls"])
    if any(char in (params["login_password"] or "") for char in _LINE_BREAKS):
        module.fail_json(msg="login_password (tmi_redis_connection.login_password) contains a line break. redis-cli, "
                             "which copies the Redis data for the backup, reads the password as one line, so it "
                             "would log in with only part of it. Remove the line break (a password read from a file "
                             "often ends with one: trim it). Nothing was changed.")
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be above 0 seconds (got %s); without a limit a Redis server that never "
                             "answers holds the run for ever. Nothing was changed." % params["timeout"])
    options = redis_auth_params(module)
    options.update(socket_connect_timeout=params["timeout"], socket_timeout=params["timeout"],
                   retry=Retry(NoBackoff(), 0))
    return redis.Redis(**options)


def error_message(module, error):
    """What went wrong talking to Redis, where, and what to change; never the password."""
    where = endpoint(module)
    reason = to_native(error).strip()
    if isinstance(error, redis_errors.AuthenticationError) or reason.startswith(("WRONGPASS", "NOAUTH")):
        return ("Redis at %s refused authentication (%s). Set login_password (tmi_redis_connection.login_password) "
                "to the password this Redis expects, and login_user for an ACL user."
                % (where, reason))
    if isinstance(error, redis_errors.TimeoutError):
        return ("Redis at %s did not answer within %g s (%s). Check that login_host and login_port "
                "(tmi_redis_connection) point at the Redis server and not at another service, that tls matches the "
                "server, and that no firewall drops the traffic; raise timeout if the server is only slow."
                % (where, module.params["timeout"], reason))
    if isinstance(error, redis_errors.ConnectionError):
        return ("Cannot reach Redis at %s: %s. Check login_host, login_port and tls (tmi_redis_connection) and that "
                "Redis runs and accepts connections from this host." % (where, reason))
    return "Redis at %s answered with an error: %s." % (where, reason)


def is_connection_error(error):
    """Whether an exception is about reaching or logging in to Redis (not a command's own error)."""
    return isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError)) or \
        to_native(error).startswith(("WRONGPASS", "NOAUTH"))


def fail(module, error, **result):
    module.fail_json(msg=error_message(module, error), **result)
