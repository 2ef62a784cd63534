# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs tmi.migration.pg_rehearse and prints its progress while it runs (plugin_utils/progress_action.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.tmi.migration.plugins.plugin_utils.progress_action import ProgressAction


class ActionModule(ProgressAction):
    pass
