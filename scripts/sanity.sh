#!/usr/bin/env bash
# ansible-test sanity on the collection, offline, with empty tests/sanity/ignore-*.txt.
# ansible-test needs the collection at .../ansible_collections/tmi/migration (a real tree, not
# the bootstrap link) with its dependencies beside it, and a get-pip it can run without network.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
# Outside the checkout: inside it, git would hide the copy (.build is ignored) and ansible-test
# would find no files.
work="$(mktemp -d "${TMPDIR:-/tmp}/tmi-sanity-XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/ansible_collections"
mkdir -p "$root/tmi/migration" "$root/community"
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$root/tmi/migration"
# The collections the ansible package bundles (a namespace package: __path__, no __file__).
bundled="$(python -c 'import ansible_collections; print(list(ansible_collections.__path__)[0])')"
for dep in postgresql general; do ln -sfn "$bundled/community/$dep" "$root/community/$dep"; done
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for version in 24_2 25_0 25_1; do
  [ -f "$cache/get_pip_$version.py" ] || printf 'import ensurepip\nensurepip.bootstrap(upgrade=True)\n' > "$cache/get_pip_$version.py"
done
cd "$root/tmi/migration"
ansible-test sanity --python 3.11 --requirements "$@"
