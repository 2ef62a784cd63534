#!/usr/bin/env bash
# Static checks: ruff (Python), yamllint (YAML), ansible-lint (production profile).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
ruff check .
yamllint --strict .
ansible-lint --offline -q
