"""The AWX configuration as code (awx/): surveys AWX accepts, asking only for variables the collection documents.

A survey variable is declared when it is an option of a role's meta/argument_specs.yml (any entry point) or a
documented playbook variable: a row of README's variable table that the playbook of the job template (with the
files it imports and loads: inputs.yml, vars/*.yml, phases/*.yml) reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.tmi.migration.plugins.module_utils import downtime

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / "awx"
TEMPLATES = yaml.safe_load((AWX / "job_templates.yml").read_text())["tmi_awx_job_templates"]
# The question types of AWX's survey_spec API.
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


def _role_options() -> set[str]:
    names = set()
    for spec in (REPO / "roles").glob("*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            names |= set(entry.get("options") or {})
    return names


def _readme_variables() -> set[str]:
    """The variables named in the first column of README's table of variables shared by the roles."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| variable | meaning |"):]
    table = table[:table.index("\n\n")]
    return {name for line in table.splitlines()[2:] for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}


def _playbook_text(playbook: str) -> str:
    """The playbook and every file of playbooks/ it can load (inputs.yml, vars, phases)."""
    files = [REPO / playbook, *sorted((REPO / "playbooks").glob("*/*.yml")), REPO / "playbooks" / "inputs.yml"]
    return "\n".join(path.read_text() for path in files)


def _survey(template: dict) -> dict:
    return json.loads((AWX / template["survey"]).read_text())


def _spec(template: dict, variable: str) -> dict:
    return next(question for question in _survey(template)["spec"] if question["variable"] == variable)


def test_there_is_a_job_template_for_migrate_and_for_rollback():
    assert sorted(template["playbook"] for template in TEMPLATES) == ["playbooks/migrate.yml", "playbooks/rollback.yml"]
    for template in TEMPLATES:
        assert (REPO / template["playbook"]).is_file() and (AWX / template["survey"]).is_file()


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda template: Path(template["playbook"]).stem)
def test_the_survey_is_one_awx_accepts(template):
    survey = _survey(template)
    assert survey["name"] and survey["description"] and survey["spec"]
    variables = [question["variable"] for question in survey["spec"]]
    assert len(variables) == len(set(variables)), f"a variable asked twice: {variables}"
    for question in survey["spec"]:
        assert question["question_name"] and question["question_description"], question
        assert question["type"] in SURVEY_TYPES and isinstance(question["required"], bool), question
        if question["type"] == "multiplechoice":
            assert question["default"] in question["choices"], question
        if question["type"] in ("integer", "float"):
            assert question["min"] <= question["default"] <= question["max"], question
        if question["type"] == "text":
            assert question["min"] <= len(question["default"]) <= question["max"], question
            assert question["required"] or question["min"] == 0, f"an optional answer may be empty: {question}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda template: Path(template["playbook"]).stem)
def test_every_survey_variable_is_declared_by_a_role_or_documented_and_read_by_the_playbook(template):
    roles, documented = _role_options(), _readme_variables()
    assert {"tmi_target_version", "tmi_serial", "tmi_rollback_mode"} <= documented, "README's table was not read"
    text = _playbook_text(template["playbook"])
    for question in _survey(template)["spec"]:
        variable = question["variable"]
        assert variable in roles or variable in documented, (
            f"{template['survey']} asks for {variable}, which no role's argument_specs declares and README's "
            "variable table does not document")
        if variable not in roles:
            assert re.search(rf"\b{variable}\b", text), f"{template['playbook']} never reads {variable}"


def test_the_choices_are_the_ones_the_playbooks_accept():
    rollback = yaml.safe_load((REPO / "roles" / "rollback" / "meta" / "argument_specs.yml").read_text())
    modes = rollback["argument_specs"]["main"]["options"]["rollback_mode"]["choices"]
    for template in TEMPLATES:
        assert _spec(template, "tmi_rollback_mode")["choices"] == modes
    migrate = next(template for template in TEMPLATES if template["playbook"] == "playbooks/migrate.yml")
    assert set(_spec(migrate, "tmi_maintenance")["choices"]) == set(downtime.MODES)
    # AWX answers a multiple choice with the string chosen: the flags are the strings | bool reads as true and false.
    for template in TEMPLATES:
        for question in _survey(template)["spec"]:
            if "true" in question.get("choices", []):
                assert sorted(question["choices"]) == ["false", "true"], question


def test_the_credential_type_injects_what_docs_awx_md_reads():
    credential_type = json.loads((AWX / "credential_type.json").read_text())
    fields = {field["id"] for field in credential_type["inputs"]["fields"]}
    assert all(field["secret"] for field in credential_type["inputs"]["fields"])
    injected = credential_type["injectors"]["env"]
    assert {re.fullmatch(r"\{\{ (\w+) \}\}", value).group(1) for value in injected.values()} == fields
    docs = (REPO / "docs" / "awx.md").read_text()
    for variable in injected:
        assert f"lookup('ansible.builtin.env', '{variable}')" in docs, f"docs/awx.md does not read {variable}"
