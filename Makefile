PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench man clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/qgjobd up

# The dashboard test drives a real browser: Debian's chromium, installed when missing
# and when we may (CI runs as root); without it that one test says why it skipped.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

man: man/qgjob.1

man/qgjob.1: qgjob.py $(STAMP)
	mkdir -p man
	$(BIN)/argparse-manpage --pyfile qgjob.py --function build_parser --project-name qgjob \
		--description "submit and follow AppWright test jobs on a qgjob server" --output $@

clean:
	rm -rf $(VENV) .qgjob
