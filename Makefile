PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test test-fast lint bench man clean browser containers

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,test]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/qgjobd up

# The dashboard test drives a real browser: Debian's chromium, installed when missing
# and when we may (CI runs as root); without it that one test says why it skipped.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The container tests build and run the image with Debian's podman, its runtime runc
# (crun cannot run on these machines' hybrid cgroups) and a base image debootstrap makes;
# installed when missing and when we may, else those tests say why they skipped.
# netavark and aardvark-dns give compose's services a network with a name for each.
CONTAINER_PACKAGES := podman runc netavark aardvark-dns debootstrap
containers:
	@dpkg -s $(CONTAINER_PACKAGES) >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && apt-get install -y -qq $(CONTAINER_PACKAGES) >/dev/null; }

test: $(STAMP) browser containers
	$(BIN)/pytest

# The inner loop: everything but the tests that spawn processes, drive a browser or a
# container, or run many jobs (marked slow); under a minute on 2 cores.
test-fast: $(STAMP)
	$(BIN)/pytest -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

man: man/qgjob.1

# The page is built as the package is built ([tool.build_manpages] in pyproject.toml).
man/qgjob.1: qgjob.py $(STAMP)
	$(BIN)/python -c 'import setuptools; setuptools.setup()' --quiet build_manpages

clean:
	rm -rf $(VENV) .qgjob
