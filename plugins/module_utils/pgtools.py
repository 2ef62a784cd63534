# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running PostgreSQL client programs (pg_dump, pg_restore) safely from modules.

* The password never reaches a command line or the environment of the child: it goes
  into a pgpass file created 0600 in a private temporary directory and removed afterwards;
  the directory names its process, so that the next run removes it when a kill left it.
* Connection options become a libpq connection string *without* the password, built
  by ``postgres.connection_params`` (community.postgresql's ``get_conn_params`` and a
  connect_timeout) so it matches what the modules connect to.
* A client older than the server cannot dump it: the major versions are checked first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import stat
import subprocess
import tempfile

from ansible_collections.tmi.migration.plugins.module_utils import processes
from ansible_collections.tmi.migration.plugins.module_utils.postgres import connection_params

_CONNINFO_KEYS = ("host", "port", "user", "dbname", "sslmode", "sslrootcert", "sslcert", "sslkey",
                  "application_name", "connect_timeout")


def find_binary(module, bin_dir, name):
    """Path of a client program in bin_dir (or PATH when empty), or fail naming the remedy."""
    if bin_dir:
        path = os.path.join(bin_dir, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        module.fail_json(msg="%s not found in %s. Set pg_bin_dir (tmi_pg_bin_dir) to the directory holding the "
                             "PostgreSQL client programs of the server's major version." % (name, bin_dir))
    path = shutil.which(name)
    if not path:
        module.fail_json(msg="%s is not on PATH. Install the PostgreSQL client programs of the server's major version "
                             "(for example apt-get install postgresql-client-<major>) or set pg_bin_dir." % name)
    return path


def client_major(path):
    output = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    return int(match.group(1)) if match else None


def check_client_version(module, path, server_version_num):
    """pg_dump refuses servers newer than itself; say so before any work starts."""
    server_major = int(server_version_num) // 10000
    major = client_major(path)
    if major is None or major < server_major:
        module.fail_json(msg="%s is version %s but the server is PostgreSQL %d: a client older than the server "
                             "cannot dump or restore it. Point pg_bin_dir (tmi_pg_bin_dir) at PostgreSQL %d or newer "
                             "client programs." % (path, major, server_major, server_major))
    return major


def _quote(value):
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")


def conninfo(module, dbname, application_name):
    """A libpq connection string for dbname from the module's options, without the password.

    It carries the same connect_timeout as the modules' own connections (``postgres.connection_params``),
    so pg_dump and pg_restore cannot hang on a server that never answers either.
    """
    params = connection_params(module, dbname, application_name)
    return " ".join("%s=%s" % (key, _quote(params[key])) for key in _CONNINFO_KEYS if params.get(key) not in (None, ""))


PASSWORD_DIR_PREFIX = "tmi-pgpass-"
_PASSWORD_DIR = re.compile(r"^%s(\d+)-" % re.escape(PASSWORD_DIR_PREFIX))


def remove_dead_password_dirs(parent=None):
    """Remove this user's password directories (``tmi-pgpass-<pid>-*``) whose process no longer runs.

    A run killed while a client tool ran (SIGKILL skips every ``finally``) leaves its pgpass file
    behind; the next run removes it. Returns the directories removed.
    """
    parent = parent or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in sorted(names):
        match = _PASSWORD_DIR.match(name)
        if not match:
            continue
        path = os.path.join(parent, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        # Only real directories of this user, never through a link, and never a running process's.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or processes.alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return removed


class PasswordFile(object):
    """A pgpass file holding the module's password, 0600 in a private directory, removed on exit.

    Use as ``with PasswordFile(module) as env: subprocess.run(..., env=env)``. The directory is
    ``tmi-pgpass-<pid>-*`` in the temporary directory; a new one first removes those whose process
    is gone (a run killed before it could remove its own), warns about each and keeps them in ``removed``.
    """

    def __init__(self, module):
        self.module = module
        self.password = module.params.get("login_password") or ""
        self.directory = None
        self.removed = []

    def __enter__(self):
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        self.removed = remove_dead_password_dirs()
        for path in self.removed:
            self.module.warn("Removed %s, a password file left behind by an earlier run that was killed before it "
                             "could remove it (its process is gone)." % path)
        self.directory = tempfile.mkdtemp(prefix="%s%d-" % (PASSWORD_DIR_PREFIX, os.getpid()))  # mode 0700
        path = os.path.join(self.directory, "pgpass")
        escaped = self.password.replace("\\", "\\\\").replace(":", "\\:")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("*:*:*:*:%s\n" % escaped)
        env["PGPASSFILE"] = path
        return env

    def __exit__(self, *exc_info):
        shutil.rmtree(self.directory, ignore_errors=True)
        return False


def start(argv, env):
    """Start a client tool in the background (stdout and stderr piped); the caller communicate()s.

    For work that must happen while the tool runs (pg_dump reading an exported snapshot that
    this process holds open); run() is for everything else.
    """
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def run(argv, env):
    """Run a client program; return None, or its error output (which never holds the password)."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return result.stderr.strip() or result.stdout.strip() or "exit status %d" % result.returncode
    return None
