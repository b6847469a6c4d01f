# The two commands in README: `make quickstart` (the main job) and `make test` (the whole suite).
# Both set everything up first: a virtual environment in .venv with eossl and its dev extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart lint test benchmarks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# Executes notebooks/00_quickstart.ipynb headless on the bundled sample; results in runs/quickstart/
# (checkpoint, embeddings, kNN table, and 00_quickstart.html with every picture).
# Running it again resumes the finished run instead of retraining: delete runs/quickstart to start over.
quickstart: setup
	mkdir -p runs/quickstart
	EOSSL_RUNS="$(CURDIR)/runs" EOSSL_PROGRESS=0 $(BIN)/jupyter nbconvert --to html --execute \
		--ExecutePreprocessor.timeout=900 notebooks/00_quickstart.ipynb \
		--output-dir runs/quickstart --output 00_quickstart
	@echo "results: $(CURDIR)/runs/quickstart (open 00_quickstart.html)"

# ruff (the [tool.ruff] section in pyproject.toml): undefined names, unused imports, syntax errors.
lint: setup
	$(BIN)/ruff check .

# Lint, then unit tests and every notebook (nbval); notebooks write their runs to a fresh temporary folder.
test: setup lint
	EOSSL_RUNS="$$(mktemp -d)" $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider --durations=30 tests notebooks

benchmarks: setup
	$(BIN)/python benchmarks/bench_pretrain.py
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_analysis.py

clean:
	rm -rf $(VENV) runs
