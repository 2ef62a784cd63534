"""Every role's meta/argument_specs.yml documents exactly its defaults (required options have none)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"].get("options") or {}
    optional = {name for name, spec in options.items() if not spec.get("required")}
    assert set(defaults) == optional, f"{role.name}: defaults and argument_specs differ"
    for name, spec in options.items():
        assert spec.get("description") and spec.get("type"), f"{role.name}.{name} needs a description and a type"
        if name in defaults and "default" in spec:
            assert spec["default"] == defaults[name], f"{role.name}.{name}: default differs from defaults/main.yml"
