#!/usr/bin/env bash
# Static checks: ruff (Python), yamllint (YAML), ansible-lint (production profile) and antsibull-docs
# (the docs of every module, plugin and role as the Ansible docsite renders them: schema, markup,
# references, RST).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
ruff check .
yamllint --strict .

# antsibull-docs runs beside ansible-lint (each takes about one core, and nothing else runs while lint
# does), its output printed once both have ended. It lints a copy of the collection and of its
# dependencies, and copies only Git's files of anything inside a Git work tree: the ceiling keeps
# git from taking the dependencies bundled in .venv (ignored files of this repository) for files of
# this work tree, which would copy them as empty directories.
docs_log="$(mktemp)"
trap 'rm -f "$docs_log"' EXIT
GIT_CEILING_DIRECTORIES="$PWD/$VENV" antsibull-docs lint-collection-docs --plugin-docs . > "$docs_log" 2>&1 &
docs_pid=$!
lint_status=0
ansible-lint --offline -q || lint_status=$?
docs_status=0
wait "$docs_pid" || docs_status=$?
if [ "$docs_status" -ne 0 ]; then
  cat "$docs_log"
  echo "antsibull-docs lint-collection-docs failed (status $docs_status)" >&2
fi
[ "$lint_status" -eq 0 ] && [ "$docs_status" -eq 0 ]
