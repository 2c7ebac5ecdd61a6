# rayhpc.slurm: Ray autoscaling clusters on SLURM.
#   make demo   local SLURM site, ray up, an autoscaling workload, ray down
#   make test   lint, unit tests, end-to-end tests on a real local SLURM site
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
SITE := scripts/localsite
# The other local sites, beside the default campus site (Slurm 22.05, the machine's Debian 12):
# the GPU centre and campus24 (campus's shape) run Debian 13's Slurm 24.11 with slurmctld's rate
# limiter, in a root filesystem of their own (scripts/sites/*.yaml, scripts/rootfs).
GPU_SITE := scripts/localsite --site gpu-centre
SITE24 := scripts/localsite --site campus24
WIDE_SITE := scripts/localsite --site wide
# The harness's Kubernetes (scripts/localkube: built from the Go modules of the release pinned in
# requirements/kubernetes.env, once per machine), beside the sites; its network reaches theirs.
KUBE := scripts/localkube
SITES_DOWN := $(KUBE) down; $(SITE24) down; $(GPU_SITE) down; $(SITE) down
# The end-to-end suite on both SLURM releases at once, a pytest run on each release's campus
# (most of an end-to-end test is waiting, so two share the 2 cores). campus24 (24.11) runs all of
# it but what needs campus itself (the other sites and SSH deployment; bursting: the Ray image
# of the harness's Kubernetes has campus's Python) and roll-over (the two lines' lengths even
# out; its USR1 drain is the same on both releases); campus (22.05) runs those and what depends
# on SLURM's release: the login and SLURM heads and the whole fault suite. (test_rate_limit.py
# needs slurmctld's rate limiter, test_preempt_drain.py its send_user_signal: campus24 only.)
E2E_CAMPUS_ONLY := tests/e2e/test_sites.py tests/e2e/test_ssh_deploy.py tests/e2e/test_burst.py \
	tests/e2e/test_rollover.py
E2E_BOTH := tests/e2e/test_login_head.py tests/e2e/test_slurm_head.py $(sort $(wildcard tests/e2e/test_fault_*.py))
E2E_CAMPUS := $(E2E_CAMPUS_ONLY) $(E2E_BOTH)
E2E_CAMPUS24 := $(filter-out $(E2E_CAMPUS_ONLY),$(sort $(wildcard tests/e2e/test_*.py)))
PYTEST_E2E := $(abspath $(VENV))/bin/pytest -v -p no:cacheprovider --durations=25 --timeout=900
CONSTRAINTS := requirements/constraints.txt
PEERS_VENV := /var/tmp/rayhpc-bench-peers
# Python 3.12 for the tool venv (pyenv's shim may not be active: try its install dir too).
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$$p"; break; }; done)

.PHONY: help setup lint unit e2e test demo site-up site-down clean ansible-lint molecule site-tests
.PHONY: sites-up site-suites checks e2e-suites kube-up
.PHONY: collection sanity units collection-docs bench bench-wide

help:
	@echo "make demo   - local SLURM site, ray up, autoscaling workload, ray down"
	@echo "make test   - lint + unit tests + end-to-end tests on the local SLURM site"
	@echo "make bench  - benchmarks on the local SLURM site (table + bench/results.json)"
	@echo "make setup  - create .venv (Python 3.12, pinned Ray $(shell grep '^ray==' $(CONSTRAINTS)))"

$(VENV)/.done: requirements/constraints.txt requirements/dev.txt provider/pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found (set PYTHON312=/path/to/python3.12)"; exit 1; }
	$(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# --no-compile: Python writes the .pyc of what is imported on first use (half the install time)
	$(PY) -m pip install -q --no-compile -c $(CONSTRAINTS) -r requirements/dev.txt -e provider
	touch $@

setup: $(VENV)/.done

lint: setup
	$(VENV)/bin/ruff check provider tests scripts bench
	$(VENV)/bin/ruff format --check provider tests scripts bench
	$(VENV)/bin/mypy --strict provider/src/ray_slurm
	bash -n $(SITE)
	bash -n scripts/rootfs
	bash -n scripts/localkube scripts/kube/build scripts/kube/images

unit: setup
	$(VENV)/bin/pytest -q provider/tests tests/harness

# The local site, deployed as its sysadmin would (playbooks/site.yml: the site's Ray
# environment, the provider, the site's files), with its unprivileged users.
site-up:
	$(SITE) up
	$(SITE) deploy

site-down:
	$(SITE) down

# End-to-end tests run on the site's login node: the harness as root, every `ray` command and
# driver as one of the site's users; the site is stopped afterwards whatever the result.
e2e: setup
	status=0; $(MAKE) --no-print-directory sites-up || status=1; \
	((status)) || $(MAKE) --no-print-directory e2e-suites || status=1; \
	$(SITES_DOWN); exit $$status

# The end-to-end suites on both releases, side by side, on sites already up; each one's output
# is in build/e2e-<site>.log, printed when both have ended.
e2e-suites: setup
	mkdir -p build; result() { (($$1)) && echo FAILED || echo passed; }; c=0; c24=0; \
	$(SITE) login $(PYTEST_E2E) $(E2E_CAMPUS) >build/e2e-campus.log 2>&1 & campus=$$!; \
	$(SITE24) login $(PYTEST_E2E) $(E2E_CAMPUS24) >build/e2e-campus24.log 2>&1 & campus24=$$!; \
	wait $$campus || c=1; wait $$campus24 || c24=1; \
	cat build/e2e-campus.log build/e2e-campus24.log; \
	echo "e2e: campus (Slurm 22.05) $$(result $$c), campus24 (Slurm 24.11) $$(result $$c24)"; \
	((c + c24 == 0))

# The Ansible collection: ansible-lint (production profile, offline: .config/ansible-lint.yml),
# run plainly, as editors, pre-commit and Galaxy users run it. Then: every role option in
# defaults/main.yml and meta/argument_specs.yml, same default.
ansible-lint: setup
	PATH=$(abspath $(VENV))/bin:$$PATH ansible-lint
	$(PY) scripts/check-argument-specs

# Molecule scenarios (extensions/molecule/) on the local site's login node: deploy it with
# playbooks/site.yml, idempotence, verify with a real cluster; a deployment killed half-way
# converges; from the controller, both sites over SSH (ssh-sites). The sites are stopped
# afterwards whatever the result.
molecule: setup
	status=0; $(MAKE) --no-print-directory sites-up || status=1; \
	((status)) || PATH=$(abspath $(VENV))/bin:$$PATH scripts/molecule-test || status=1; \
	$(SITES_DOWN); exit $$status

# Everything that needs the local sites, in one session of them: the e2e and fault suites (on
# campus, Slurm 22.05, and campus24, Slurm 24.11, with the GPU centre beside them; bursting on
# the harness's Kubernetes), the molecule scenarios. The sites are stopped whatever the result.
site-tests: setup
	status=0; $(MAKE) --no-print-directory -j2 --output-sync=recurse sites-up kube-up || status=1; \
	((status)) || $(MAKE) --no-print-directory site-suites || status=1; \
	$(SITES_DOWN); exit $$status

# Both sites up and deployed (they are left up: site-tests and test stop them).
sites-up: setup
	$(SITE) up
	$(SITE) deploy
	$(GPU_SITE) up
	$(GPU_SITE) deploy
	$(SITE24) up
	$(SITE24) deploy

# The harness's Kubernetes: its binaries built (cached), its images made (cached), then up.
kube-up: setup
	scripts/kube/build
	scripts/kube/images
	$(KUBE) up

# The suites of site-tests, on sites already up, in two lines at once: on campus (22.05) its
# e2e share (bursting to the harness's Kubernetes among it), then the molecule scenarios (campus
# and the GPU centre); beside them the whole e2e suite on campus24 (24.11), the longer of the
# two. Each line's output is in build/, printed when both have ended.
site-suites: setup
	mkdir -p build; result() { (($$1)) && echo FAILED || echo passed; }; c=0; c24=0; \
	( s=0; $(SITE) login $(PYTEST_E2E) $(E2E_CAMPUS) || s=1; \
	  PATH=$(abspath $(VENV))/bin:$$PATH scripts/molecule-test || s=1; \
	  exit $$s ) >build/suites-campus.log 2>&1 & campus=$$!; \
	$(SITE24) login $(PYTEST_E2E) $(E2E_CAMPUS24) >build/e2e-campus24.log 2>&1 & campus24=$$!; \
	wait $$campus || c=1; wait $$campus24 || c24=1; \
	cat build/suites-campus.log build/e2e-campus24.log; \
	echo "site suites: campus (Slurm 22.05: e2e with bursting to Kubernetes, molecule) $$(result $$c)," \
	  "campus24 (Slurm 24.11: e2e) $$(result $$c24)"; \
	((c + c24 == 0))

# The checks that need no site, one after the other.
checks: setup
	$(MAKE) --no-print-directory -j1 lint unit sanity units ansible-lint collection-docs

# The checks run while the sites come up and Kubernetes is built (most of a site's start is
# waiting for its daemons; --output-sync keeps each one's output together), then the site suites;
# the sites are stopped whatever the result.
test: setup
	status=0; $(MAKE) --no-print-directory -j3 --output-sync=recurse checks sites-up kube-up || status=1; \
	((status)) || $(MAKE) --no-print-directory site-suites || status=1; \
	$(SITES_DOWN); exit $$status

# Benchmarks (bench/run.py, ~50 min) on the sites' login nodes: on campus scale-up latency vs its
# floor, provider cost with 1,000 jobs, teardown, playbook runs, memory, roll-over on vs off (k);
# then on campus24 (24.11) ten clusters under the rate limiter (i); then on the wide site 32
# nodes (j). Prints a table and writes bench/results.json; each site is stopped afterwards
# whatever the result.
bench: setup
	# the peers (dask-jobqueue) get a venv of the site's system Python, as the site's Ray env
	[ -x $(PEERS_VENV)/bin/python ] || /usr/bin/python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q -c $(CONSTRAINTS) -r requirements/bench.txt
	$(SITE) up
	$(SITE) deploy
	status=0; $(SITE) login $(abspath $(PY)) bench/run.py || status=$$?; \
	$(SITE) down; \
	$(SITE24) up && $(SITE24) deploy && \
	$(SITE24) login $(abspath $(PY)) bench/run.py --only i --merge || status=$$?; \
	$(SITE24) down; \
	$(MAKE) --no-print-directory bench-wide || status=1; exit $$status

# j alone (32 nodes, 1,000 held jobs) on the wide site, added to bench/results.json.
bench-wide: setup
	$(WIDE_SITE) up
	$(WIDE_SITE) deploy
	status=0; $(WIDE_SITE) login $(abspath $(PY)) bench/run.py --only j --merge || status=$$?; \
	$(WIDE_SITE) down; exit $$status

# The sysadmin deploys the site (as root), then a user (rsl-alice) runs the demo.
demo: setup
	$(SITE) up
	status=0; $(SITE) deploy && $(SITE) user rsl-alice bash $(abspath scripts/demo.sh) || status=$$?; \
	$(SITE) down; exit $$status

# ansible-test runs only in a real .../ansible_collections/rayhpc/slurm directory (not a symlink):
# `make collection` copies the repository's files there (those git does not ignore, so no .venv,
# build, egg-info or caches; not the .collections symlink) and makes the copy a git repository of
# its own (else ansible-test sees it as an ignored part of this one). sanity/units bootstrap pip
# offline (scripts/ansible-test-offline-pip).
COLLECTION_DIR := build/ansible_collections/rayhpc/slurm
ANSIBLE_TEST := cd $(COLLECTION_DIR) && PATH=$(abspath $(VENV))/bin:$$PATH ansible-test

collection:
	rm -rf $(COLLECTION_DIR) && mkdir -p $(COLLECTION_DIR)
	git ls-files -z --cached --others --exclude-standard | grep -zvE '^((\.collections|provider|tests/(e2e|support|harness)|bench)/|pytest\.ini$$)' \
	  | tar -c --null --ignore-failed-read -T - | tar -x -C $(COLLECTION_DIR)
	git init -q $(COLLECTION_DIR)

sanity: setup collection
	scripts/ansible-test-offline-pip $(PY)
	$(ANSIBLE_TEST) sanity --local --python 3.12

units: setup collection
	scripts/ansible-test-offline-pip $(PY)
	$(ANSIBLE_TEST) units --local --python 3.12 --requirements

# antsibull-docs' lint of the collection's documentation: modules' DOCUMENTATION/EXAMPLES/RETURN
# and the roles' argument_specs (markup, references: a role is R(), not M()).
collection-docs: setup collection
	cd $(COLLECTION_DIR) && PATH=$(abspath $(VENV))/bin:$$PATH \
	  ANSIBLE_COLLECTIONS_PATH=$(abspath build) antsibull-docs lint-collection-docs --plugin-docs .

clean:
	rm -rf $(VENV) build dist
