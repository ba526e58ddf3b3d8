# Two entry points that work on a fresh machine with only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test system-packages lint typecheck bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch lies on disk here; a range would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[flask,django,postgres,dask,serve,queue,aiohttp,report,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pixelroute demo

test: $(STAMP) system-packages lint typecheck
	$(PY) -m pytest -q

# chromium and tesseract-ocr for the tests that drive them: installed with apt-get when missing and this user
# may (root or passwordless sudo); under CI=true one still missing fails here, elsewhere those tests skip
system-packages:
	bash .ci/system_packages.sh

lint: $(STAMP)
	$(PY) -m ruff check sdk router tests benchmarks

# sdk/ is `pixelroute` and router/ is `pixelroute.router` only through pyproject.toml's package-dir, which
# mypy does not read (nor the editable install's import finder): it checks them under their import names
# from a tree of links, build/import-root/pixelroute/, that tests/_import_root.py builds.
typecheck: $(STAMP)
	$(PY) tests/_import_root.py >/dev/null
	MYPYPATH=build/import-root $(PY) -m mypy -p pixelroute

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

docs: $(STAMP)
	# docs/_hooks.py builds the build/import-root link tree the API reference reads; the variable silences
	# the theme's banner about MkDocs 2.0
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) build *.egg-info
