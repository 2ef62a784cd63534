#!/usr/bin/env bash
# The one test command (make test, .ci/run): lint, pytest (unit + integration against
# throwaway real servers), ansible-test sanity and every Molecule scenario, each with its own
# fresh servers. Ends with one summary line; pytest's "no tests collected" (exit 5) fails the run.
#
# Sanity, Molecule and the version matrix run one process at a time (about one core), so they run
# in the background beside pytest's workers instead of after them, with their output kept in
# .build/background.log and printed once they end; the tests that measure time run alone at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH" PYTHONPATH="$PWD/tests"
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 ANSIBLE_NOCOLOR=1
mkdir -p .build

echo "== lint"
scripts/lint.sh

# The background job (its body is not indented: it holds a multi-line Python string).
background() {
echo "== ansible-test sanity (empty ignore files)"
scripts/sanity.sh

# Molecule: each scenario runs once, on one of the supported server pairs, so that every scenario and
# every pair is exercised without running the same playbooks twice (each playbook run is minutes of CI's
# hour): the default pair (PostgreSQL 18 + Redis 6.2) runs the main job (converge, idempotence, check,
# verify), the migrate role alone and the emergency rollback; the oldest pair (PostgreSQL 15 + Redis 7)
# the main job again and the failing migration's rollback (dump and restore across versions); PostgreSQL
# 17 + Redis 6.2 the planned rollback (migrate.yml, then rollback.yml). TMI_MATRIX chooses the other
# pairs ("" for none); a pair left out or whose servers this machine lacks (Debian's postgresql-15,
# redis-server) has its scenarios run on the default pair instead, and says so. .ci/run installs the
# servers and sets TMI_MATRIX_REQUIRED=1, so CI never skips a pair.
scenarios_for() {
  case "$1" in
    default) echo "default migrate rollback_emergency" ;;
    15:7) echo "default failure" ;;
    17:6.2) echo "rollback_planned" ;;
    *) echo "default" ;;
  esac
}
standard_pairs="15:7 17:6.2"
matrix="${TMI_MATRIX-$standard_pairs}"

# Every directory with a molecule.yml is a scenario (molecule/common holds their common playbooks): one
# that no pair runs is an error, not a scenario silently left out.
planned=" $(for pair in default $standard_pairs; do scenarios_for "$pair"; done | tr '\n' ' ') "
for scenario in molecule/*/molecule.yml; do
  scenario="$(basename "$(dirname "$scenario")")"
  case "$planned" in *" $scenario "*) ;; *) echo "molecule scenario $scenario is run by no server pair (scripts/test.sh)" >&2; exit 1 ;; esac
done

molecule_passed=0
matrix_skipped=0
# The scenarios of a standard pair left out of TMI_MATRIX, or skipped, are owed to the default servers.
owed=""
for pair in $standard_pairs; do
  case " $matrix " in *" $pair "*) ;; *) owed="$owed $(scenarios_for "$pair")" ;; esac
done
for pair in default $matrix; do
  scenarios="$(scenarios_for "$pair")"
  if [ "$pair" = default ]; then
    pg="${TMI_PG_VERSION:-18}" redis="${TMI_REDIS_VERSION:-6.2}" label="default servers"
  else
    pg="${pair%%:*}" redis="${pair##*:}" label="matrix PostgreSQL $pg + Redis $redis"
    if ! missing="$(python -c "from tmi_testenv.servers import find_pg_bindir, find_redis_server
find_pg_bindir('$pg'); find_redis_server('$redis')" 2>&1)"; then
      if [ -n "${TMI_MATRIX_REQUIRED:-}" ]; then echo "$missing" >&2; exit 1; fi
      echo "matrix: PostgreSQL $pg + Redis $redis: SKIPPED (${missing##*: }); its scenarios ($scenarios) run on the default servers"
      matrix_skipped=$((matrix_skipped + 1))
      owed="$owed $scenarios"
      continue
    fi
  fi
  for scenario in $scenarios; do
    echo "== molecule scenario $scenario ($label)"
    TMI_PG_VERSION="$pg" TMI_REDIS_VERSION="$redis" \
      python -m tmi_testenv run --scale "${MOLECULE_SCALE:-50}" -- molecule test -s "$scenario"
    echo "molecule: $scenario passed ($label)"
    molecule_passed=$((molecule_passed + 1))
  done
done
for scenario in $(printf '%s\n' $owed | sort -u); do
  case " $(scenarios_for default) " in *" $scenario "*) continue ;; esac  # ran there already
  echo "== molecule scenario $scenario (default servers, for a pair left out or skipped)"
  python -m tmi_testenv run --scale "${MOLECULE_SCALE:-50}" -- molecule test -s "$scenario"
  echo "molecule: $scenario passed (default servers)"
  molecule_passed=$((molecule_passed + 1))
done
echo "$molecule_passed $matrix_skipped" > .build/background.counts
}

rm -f .build/background.counts
# Its own process group (job control on for the start only), so that a failure of pytest, which ends the
# run, ends the whole background job with it: servers, Molecule and all.
set -m
background > .build/background.log 2>&1 &
background_pid=$!
set +m
trap 'kill -- -"$background_pid" 2>/dev/null || true' EXIT
echo "== sanity, Molecule and the version matrix: started in the background (.build/background.log)"

echo "== pytest: unit and integration tests (real PostgreSQL ${TMI_PG_VERSION:-18}, Redis ${TMI_REDIS_VERSION:-6.2})"
# Three workers (pytest-xdist), each with its own servers: most of a test's time is spent waiting on
# ansible-playbook, the servers and the stand-in, so a third worker fills two cores better than two do.
# --dist worksteal: xdist's default hands each worker a fixed first batch of tests, so at the end one worker
# still ran its queue of playbook tests one after another while the others idled; with worksteal an idle
# worker takes tests from a busy one's queue.
pytest_status=0
pytest -p no:cacheprovider -n "${PYTEST_WORKERS:-3}" --dist worksteal -m "not serial" --junitxml=.build/pytest.xml ${PYTEST_ARGS:-} \
  || pytest_status=$?

background_status=0
wait "$background_pid" || background_status=$?
trap - EXIT
echo "== sanity, Molecule and the version matrix (background) ended with status $background_status:"
cat .build/background.log
if [ "$pytest_status" -ne 0 ]; then echo "pytest failed (status $pytest_status)" >&2; exit "$pytest_status"; fi
if [ "$background_status" -ne 0 ]; then echo "sanity, Molecule or the matrix failed (above)" >&2; exit "$background_status"; fi
read -r molecule_passed matrix_skipped < .build/background.counts

echo "== pytest: the tests that measure time, alone"
pytest -p no:cacheprovider -m serial --junitxml=.build/pytest-serial.xml ${PYTEST_ARGS:-} || [ $? -eq 5 ]

python - "$molecule_passed" "$matrix_skipped" <<'PY'
import sys
import xml.etree.ElementTree as ET

tests = failures = errors = skipped = 0
for report in (".build/pytest.xml", ".build/pytest-serial.xml"):
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = [int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")]
    tests, failures, errors, skipped = (a + b for a, b in zip((tests, failures, errors, skipped), counts))
molecule = int(sys.argv[1])
matrix_skipped = int(sys.argv[2])
passed = tests - failures - errors - skipped + molecule
print(f"pytest: {tests - failures - errors - skipped} passed, {failures + errors} failed, {skipped} skipped")
print(f"molecule: {molecule} passed, 0 failed, {matrix_skipped} matrix pair(s) skipped")
print(f"total: {passed} passed, {failures + errors} failed, {skipped + matrix_skipped} skipped")
PY
