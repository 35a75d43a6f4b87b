# Fresh-machine entry points: each target creates .venv (CPU torch pinned first) and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test example demo

$(BIN)/.silc-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	# open_clip, only to check the open_clip converter against open_clip's own forward (its torchvision
	# requirement is left out: torchvision does not run beside the CPU torch build)
	$(BIN)/pip install -q --no-deps open_clip_torch==3.3.0
	$(BIN)/pip install -q ftfy regex
	touch $@

# Lint and format checks (ruff), then the test suite (CPU, float32).
test: $(BIN)/.silc-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -v --durations=5

# Main job: convert a small random CLIP into a SILC folder and classify a bundled image with the pipeline.
example: $(BIN)/.silc-installed
	$(BIN)/python examples/convert_and_classify.py

# Main job: generate the captioned scenes, train a small SILC on the CPU, evaluate, write plots and the model.
demo: $(BIN)/.silc-installed
	$(BIN)/python -m silc_hf.demo
