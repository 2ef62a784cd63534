# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action plugin of the long-running modules: their progress printed while they run.

Why an action plugin: a module runs on the runner host (which need not be the controller) and can say
nothing until it ends, and a callback plugin only hears of tasks as they start and end (AWX replaces the
stdout callback with its own anyway). An action plugin runs on the controller for the whole task: it starts
the module as ``ansible.builtin.normal`` would - over the same connection, arguments and pipelining, so
secrets go where they always went - in a thread, and while that thread waits, reads the progress file the
module writes (``module_utils/progress.py``) with one ``cat`` over the same connection every
``progress_interval`` seconds and prints it with ``Display.display``. Such output reaches ansible-playbook's
stdout whatever the stdout callback, and ansible-runner (AWX) makes it a ``verbose`` event of the task, shown in
the job output, without -v.

What it does not change: the module's result (failures and their messages included) is returned as the
module gave it; check mode and ``async`` tasks run exactly as before, without progress; a step that ends
before the first interval costs no remote command at all (the thread is joined with a timeout, which returns
as the module ends).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import shlex
import threading
import time
import uuid

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()

DEFAULT_INTERVAL = 5.0
MIN_INTERVAL = 0.25
FILE_PREFIX = "tmi-progress-"
# A path the remote shell may expand (~, $HOME) the way the module's path option does.
_EXPANDABLE = re.compile(r"^[A-Za-z0-9_./~${}-]+$")


def interval_of(value):
    """The polling interval in seconds (0: off) of a task argument or variable, or AnsibleError."""
    try:
        seconds = float(value)
    except (TypeError, ValueError) as error:
        raise AnsibleError("progress_interval (tmi_progress_interval) must be a number of seconds, 0 for no "
                           "progress lines; got %r." % (value,)) from error
    if seconds < 0:
        raise AnsibleError("progress_interval (tmi_progress_interval) must be 0 or more seconds; got %s." % value)
    return 0.0 if seconds == 0 else max(seconds, MIN_INTERVAL)


def shell_path(path):
    """``path`` for a POSIX shell command: left to the shell's expansion when it is plain, else quoted."""
    return path if _EXPANDABLE.match(path) else shlex.quote(path)


def progress_line(host, phase, seconds, document, seen=False):
    """The line printed for one poll: '[tmi_local] backup 25 s | dump: public.threats ...'. Without a
    ``document`` the module has not written its file yet (starting) or has just removed it (``seen``)."""
    if document is None:
        text = "running" if seen else "starting"
    else:
        text = document.get("text") or "running"
    return "[%s] %s %d s | %s" % (host, phase, seconds, text)


class ProgressAction(ActionBase):
    """Runs the task's module; while it runs, prints its progress every ``progress_interval`` seconds."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ProgressAction, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        wrap_async = self._task.async_val and not self._connection.has_native_async
        interval = self._interval(task_vars)
        if wrap_async or self._task.check_mode or not interval:
            result = merge_hash(result, self._as_given(self._execute_module(task_vars=task_vars,
                                                                            wrap_async=wrap_async)))
        else:
            result = merge_hash(result, self._run_with_progress(task_vars, interval))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _interval(self, task_vars):
        if self._task.args.get("progress_interval") is not None:
            return interval_of(self._task.args["progress_interval"])
        if "tmi_progress_interval" in task_vars:
            return interval_of(self._templar.template(task_vars["tmi_progress_interval"]))
        return DEFAULT_INTERVAL

    def _run_with_progress(self, task_vars, interval):
        remote_tmp = self.get_shell_option("remote_tmp", default="~/.ansible/tmp")
        path = "%s/%s%s.json" % (remote_tmp.rstrip("/"), FILE_PREFIX, uuid.uuid4().hex)
        module_args = dict(self._task.args, progress_file=path, progress_interval=interval)
        outcome = {}

        def execute():
            try:
                outcome["result"] = self._execute_module(module_args=module_args, task_vars=task_vars)
            except BaseException as error:  # noqa: BLE001 - raised again in the task's own thread
                outcome["error"] = error

        worker = threading.Thread(target=execute, name="tmi-progress-module")
        worker.daemon = True
        started = time.monotonic()
        worker.start()
        worker.join(interval)
        polled = seen = False
        while worker.is_alive():
            polled = True
            seen = self._show(path, task_vars, time.monotonic() - started, seen)
            worker.join(interval)
        if polled:  # the module removes its file; this covers a module that was killed
            self._low_level_execute_command("rm -f -- %s" % shell_path(path), sudoable=True)
        if "error" in outcome:
            raise outcome["error"]
        return self._as_given(outcome["result"])

    def _as_given(self, result):
        """The module's result with the task's own arguments in its invocation: the progress options the action
        plugin set (or the module defaulted) are not the task's."""
        shown = (result.get("invocation") or {}).get("module_args")
        if isinstance(shown, dict):
            for name in ("progress_file", "progress_interval"):
                if name not in self._task.args:
                    shown.pop(name, None)
        return result

    def _show(self, path, task_vars, seconds, seen):
        """Print one progress line; whether the module's file has been read so far."""
        document = None
        try:
            found = self._low_level_execute_command("cat -- %s" % shell_path(path), sudoable=True)
            if found.get("rc") == 0:
                document = json.loads(to_text(found.get("stdout", "")))
        except Exception:  # noqa: BLE001 - a poll that fails only leaves this line without detail
            document = None
        if not self._task.no_log:
            host = task_vars.get("inventory_hostname", "")
            phase = task_vars.get("tmi_phase") or self._task.action.split(".")[-1]
            display.display(progress_line(host, phase, seconds, document, seen))
        return seen or document is not None
