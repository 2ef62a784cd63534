# make demo   - the main job: migrate.yml against throwaway local PostgreSQL and Redis
# make test   - every test: unit, integration (real servers), Molecule scenarios
# make lint   - ruff, yamllint, ansible-lint
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/tests
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEMO_SCALE ?= 2000

.PHONY: bootstrap demo test lint clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m tmi_testenv run --seed-version 15 --scale $(DEMO_SCALE) -- \
	  ansible-playbook -i inventories/local playbooks/migrate.yml

test: bootstrap
	scripts/test.sh

lint: bootstrap
	scripts/lint.sh

clean:
	rm -rf .build .pytest_cache .ruff_cache runs
