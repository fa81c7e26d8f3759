# Two entry points for a fresh clone: `make demo` and `make test`. Both set up .venv first.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SAMPLE := captures/sample.parquet

.PHONY: setup demo test sample bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; py=$$(scripts/find-python); \
	  if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	    echo "creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV); fi
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/analyze report $(SAMPLE)

test: setup
	$(VENV)/bin/pytest

sample: setup
	$(PY) scripts/make_sample_capture.py $(SAMPLE)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
