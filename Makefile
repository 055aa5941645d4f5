# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each creates the virtual environment on first use. torch is installed first, pinned to the
# CPU build this kind of machine keeps on disk, so that the project's range needs no CUDA build.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tlroutes-installed
export OMP_NUM_THREADS ?= 2

.PHONY: demo test calibration lint setup browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "torch==2.13.0" \
		|| $(BIN)/python -m pip install --quiet "torch>=2.2,<3"
	$(BIN)/python -m pip install --quiet -e ".[dev,vision,text,lora,ray,tensorboard,mlflow,torchjd]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/tlroutes demo --out runs/demo

# The report's browser test needs Debian's chromium; install it when missing and we may.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } || \
		echo "could not install chromium: the browser test will say so"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check src tests benchmarks

# The full 100-trial calibration of the domain verdict (about 80 s); `make test` runs a quick one.
calibration: $(STAMP)
	$(BIN)/python -m pytest -q -m calibration tests/test_measure_domain.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
