# Vigil: the two commands in README.md (`make run`, `make test`) create the venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vigil-installed

.PHONY: venv run pipeline test lint bench clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## The main job: train, track in MLflow, export to ONNX, evaluate, gate release, then serve what was released
## (see README for what each stage does). `make pipeline` stops before serving.
run: pipeline
	$(BIN)/vigil serve

pipeline: venv
	$(BIN)/vigil run

## The test suite (CI calls exactly this through .ci/run).
test: venv
	$(BIN)/python -m pytest -q --durations=15

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf vigil-work .pytest_cache
