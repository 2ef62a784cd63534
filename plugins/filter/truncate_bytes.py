# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: truncate_bytes
short_description: Cut a string to at most a number of UTF-8 bytes, at a character boundary
version_added: 0.1.0
author:
  - tmi.migration maintainers (@tmi-migration)
description:
  - Returns the longest start of the string whose UTF-8 encoding is at most O(length) bytes. A character is never cut
    in half, so the result is always valid UTF-8.
  - PostgreSQL limits identifiers (database names among them) to 63 bytes, not characters, and silently cuts longer
    ones, possibly inside a character. Jinja's slicing (C(name[:30])) counts characters, so a name of multibyte
    characters (C(ü) is two bytes, most CJK characters three) cut that way can still be too long. Use this filter to
    build names derived from a database name.
positional: length
options:
  _input:
    description: The string to cut.
    type: str
    required: true
  length:
    description: The most bytes the result may have (0 or more).
    type: int
    required: true
"""

EXAMPLES = r"""
- name: A scratch database name that stays within PostgreSQL's 63 bytes
  ansible.builtin.debug:
    msg: "{{ database | tmi.migration.truncate_bytes(30) }}_verify_{{ run_slug[-24:] }}"
  vars:
    database: "{{ 'ü' * 31 }}"  # 62 bytes; the filter keeps 15 characters (30 bytes)
    run_slug: 20260101t000000z_123456
"""

RETURN = r"""
_value:
  description: The string, cut to at most O(length) UTF-8 bytes at a character boundary.
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text


def truncate_bytes(value, length):
    """The longest prefix of ``value`` that is at most ``length`` bytes in UTF-8."""
    try:
        length = int(length)
    except (TypeError, ValueError):
        raise AnsibleFilterError("truncate_bytes: length must be a whole number, not %r" % (length,)) from None
    if length < 0:
        raise AnsibleFilterError("truncate_bytes: length must be 0 or more, not %d" % length)
    text = to_text(value, errors="surrogate_or_strict")
    encoded = text.encode("utf-8")
    if len(encoded) <= length:
        return text
    # Dropping the bytes of a character cut in half leaves whole characters only.
    return encoded[:length].decode("utf-8", errors="ignore")


class FilterModule(object):
    def filters(self):
        return {"truncate_bytes": truncate_bytes}
