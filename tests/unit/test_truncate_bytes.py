"""The truncate_bytes filter: PostgreSQL names are limited in bytes, Jinja slices count characters."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.tmi.migration.plugins.filter.truncate_bytes import FilterModule, truncate_bytes


@pytest.mark.parametrize("value, length, expected", [
    ("tmi", 30, "tmi"),
    ("a" * 40, 30, "a" * 30),
    ("ü" * 31, 30, "ü" * 15),  # 62 bytes; 30 bytes are exactly 15 characters
    ("ü" * 31, 29, "ü" * 14),  # a cut inside a character drops the whole character
    ("aü" * 20, 30, "aü" * 10),
    ("日本語のデータベース", 10, "日本語"),  # three bytes each: 9 bytes, the tenth would split a character
    ("🙂x", 3, ""),
    ("", 5, ""),
    ("abc", 0, ""),
])
def test_cuts_at_most_length_bytes_at_a_character_boundary(value, length, expected):
    result = truncate_bytes(value, length)
    assert result == expected
    assert len(result.encode("utf-8")) <= length
    assert value.startswith(result)


def test_a_derived_database_name_stays_within_postgresqls_63_bytes():
    name = truncate_bytes("ü" * 31, 30) + "_restore_" + "x" * 24
    assert len(name.encode("utf-8")) == 63
    assert len(("ü" * 31)[:30] + "_restore_" + "x" * 24) == 63  # characters: what slicing checked
    assert len((("ü" * 31)[:30] + "_restore_" + "x" * 24).encode("utf-8")) == 93  # bytes: what PostgreSQL counts


@pytest.mark.parametrize("length", [-1, "ten", None])
def test_a_bad_length_is_an_error(length):
    with pytest.raises(AnsibleFilterError, match="truncate_bytes: length must be"):
        truncate_bytes("abc", length)


def test_the_filter_is_registered():
    assert FilterModule().filters()["truncate_bytes"] is truncate_bytes
