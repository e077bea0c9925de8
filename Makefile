# FER2013 reproduction: set-up, notebooks, tests.
#   make all    FER2013=path/to/fer2013.csv.gz    run every notebook (profile cpu) into reports/
#   make 01                                        run one notebook
#   make smoke                                     every notebook, smoke profile, into build/ (never reports/)
#   make test                                      pytest on every core, the notebooks run in sequence included
#   make test-slow                                 the slow tests: fresh venv, browser, JAX backend (CI runs both)
#   make app                                       the browser app (Streamlit) on http://localhost:8501
# Without FER2013= and without a copy in data/, notebooks run on a synthetic stand-in at the smoke
# profile's sizes into build/ (minutes); FER2013=synthetic keeps PROFILE on the stand-in.

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
FER2013 ?=
SEED    ?= 42
FORCE   ?=
ARGS    ?=

BIN        := $(VENV)/bin
PY         := $(BIN)/python
STAMP      := $(VENV)/.installed
NOTEBOOKS  := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
NUMBERS    := $(foreach nb,$(NOTEBOOKS),$(firstword $(subst _, ,$(notdir $(nb)))))
RUN        := $(PY) -m fer_utils.pipeline --profile $(PROFILE) --seed $(SEED) \
              $(if $(FER2013),--data "$(FER2013)") $(if $(FORCE),--force) $(ARGS)

.PHONY: all smoke test test-slow app install clean distclean help $(NUMBERS)

help:
	@sed -n '1,10p' Makefile

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

all: $(STAMP)
	$(RUN)

$(NUMBERS): $(STAMP)
	$(RUN) $@

smoke: $(STAMP)
	$(PY) -m fer_utils.pipeline --profile smoke --seed $(SEED) $(if $(FER2013),--data "$(FER2013)") $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n auto -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -n auto -m slow $(ARGS)

app: $(STAMP)
	$(BIN)/streamlit run fer_utils/app.py --browser.gatherUsageStats false --client.toolbarMode minimal $(ARGS)

clean:
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) data/cache
