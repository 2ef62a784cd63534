# make demo   - the main job: migrate.yml against throwaway local PostgreSQL and Redis
# make test   - every test: unit, integration (real servers), Molecule scenarios
# make lint   - ruff, yamllint, ansible-lint, antsibull-docs, ansible-test sanity
# make test-matrix - the whole pytest integration suite on every supported server pair (long)
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/tests
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEMO_SCALE ?= 2000
# Every step of the demo's small database ends within the default 5 s between progress lines: one a second shows them.
DEMO_PROGRESS_INTERVAL ?= 1

MATRIX ?= 15:6.2 15:7 17:6.2 17:7 18:7

.PHONY: bootstrap demo test test-matrix lint clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m tmi_testenv run --seed-version 15 --scale $(DEMO_SCALE) -- \
	  ansible-playbook -i inventories/local playbooks/migrate.yml -e tmi_progress_interval=$(DEMO_PROGRESS_INTERVAL)

test: bootstrap
	scripts/test.sh

test-matrix: bootstrap
	@set -e; for combo in $(MATRIX); do \
	  echo "== pytest integration on PostgreSQL $${combo%%:*} + Redis $${combo##*:}"; \
	  TMI_PG_VERSION=$${combo%%:*} TMI_REDIS_VERSION=$${combo##*:} pytest -p no:cacheprovider tests/integration $(PYTEST_ARGS); \
	  echo "matrix: PostgreSQL $${combo%%:*} + Redis $${combo##*:}: pytest integration passed"; \
	done

lint: bootstrap
	scripts/lint.sh
	scripts/sanity.sh

clean:
	rm -rf .build .pytest_cache .ruff_cache runs
