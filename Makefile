# guie-nb: every target creates the virtual environment when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
ROOT ?= build/$(PROFILE)

.PHONY: venv notebooks demo test test-fast test-extended verify clean push submit rehearse rehearse-all

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (guie-nb)" >/dev/null
	touch $@

notebooks: venv
	$(PY) scripts/build_notebooks.py --out build/notebooks

demo: venv
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(PY) scripts/run_local.py --profile $(PROFILE) --root $(ROOT)

# The tests run the five notebooks (nbmake) at demo scale, baked with the demo preset and an
# absolute output root (nbmake runs each notebook from its own folder), then the unit tests.
# --overwrite keeps the executed notebooks (their outputs) in $(TEST_NOTEBOOKS) for
# tests/test_demo_outputs.py, which checks the pictures and progress lines in them.
TEST_ROOT := $(CURDIR)/build/test-demo
TEST_NOTEBOOKS := build/test-notebooks
NBMAKE := --nbmake --nbmake-timeout=1800 --overwrite

test: venv
	rm -rf $(TEST_NOTEBOOKS) $(TEST_ROOT)
	$(PY) scripts/build_notebooks.py --out $(TEST_NOTEBOOKS) --preset demo --root $(TEST_ROOT) >/dev/null
	GUIE_DEMO_ROOT=$(TEST_ROOT) GUIE_DEMO_NOTEBOOKS=$(CURDIR)/$(TEST_NOTEBOOKS) $(PY) -m pytest -ra -m "not extended" $(NBMAKE) $(TEST_NOTEBOOKS) tests

test-fast: venv
	$(PY) -m pytest -ra -m "not slow and not extended"

# What `make test` leaves out to stay under 40 minutes on 2 cores (tests marked `extended`): the
# rehearsals of every full preset other than first_place, the ViT-H XLA memory compile, the ViT-H
# SavedModel export and the refused-submission cases (about 30 minutes).
test-extended: venv
	$(PY) -m pytest -ra -m extended tests

# Stage, validate and push the chain to Kaggle (credentials from KAGGLE_USERNAME/KAGGLE_KEY or
# ~/.kaggle/kaggle.json; see docs/kaggle.md): the helper dataset when it changed, then each kernel whose
# staged content or inputs changed, once the one before it completed (status tied to its run id).
# The chain state (versions, run ids) is kept in build/kaggle/chain_state.json.
# PUSH_ARGS=--dry-run stages and validates only; PUSH_ARGS=--no-wait pushes what is ready and exits.
push: venv
	$(PY) -m guie_nb.kaggle push --preset $(PROFILE) $(PUSH_ARGS)

# Submit the submit kernel's (05, internet off) version that `make push` produced, after checking
# its output (run id, submit report, the zip's sha256 against it and the export's verification).
#   make submit [PROFILE=demo] [MESSAGE="..."]
submit: venv
	$(PY) -m guie_nb.kaggle submit --preset $(PROFILE) $(if $(MESSAGE),--message "$(MESSAGE)") $(SUBMIT_ARGS)

# Verify any submission.zip in the scorer's runtime (TF 2.6.4 / PyTorch 1.11, created once):
#   make verify ZIP=build/demo/submission.zip [MODEL_DIR=build/demo/finetune] [TTA=1]
verify: venv
	@test -n "$(ZIP)" || { echo "usage: make verify ZIP=path/to/submission.zip [MODEL_DIR=...] [TTA=1]"; exit 2; }
	$(PY) -m guie_nb.export.verify $(ZIP) $(if $(MODEL_DIR),--model-dir $(MODEL_DIR)) $(if $(TTA),--flip-tta)

clean:
	rm -rf build

# Stage a preset exactly as `make push` does and dry-run every kernel on a simulated Kaggle
# (what each kernel's metadata attaches, as fixtures; network off where the metadata says so).
# Report: build/rehearsal/<preset>/report.json. XLA=1 adds XLA's TPU memory per chip (slow).
rehearse: venv
	$(PY) -m guie_nb.kaggle.rehearse --preset $(PROFILE) $(if $(XLA),--xla-memory)

# Every full preset rehearsed at the datasets' published sizes (slow: fixtures of ~3M listed
# images are made once, then cached in build/rehearsal/.fixtures).
rehearse-all: venv
	set -e; for p in first_place second_place third_place fourth_place fifth_place zero_shot_h14 seed_recipe host_baseline; do $(PY) -m guie_nb.kaggle.rehearse --preset $$p; done
