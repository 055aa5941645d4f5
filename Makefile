# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each creates the virtual environment on first use. torch is installed first, as a pair with the
# torchvision built against it (timm and the image transforms need both to load together):
# x86_64 takes torch 2.14.1 + torchvision 0.29.1 (a CUDA build that also runs on the CPU; the
# pair lies on this kind of machine's disk), aarch64 the CPU pair torch 2.9.1 + torchvision 0.24.1.
# PyPI's torchvision does not load beside the CPU-only torch 2.13.0 that this machine also keeps.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tlroutes-installed
export OMP_NUM_THREADS ?= 2
ARCH   := $(shell uname -m)
TORCH_PAIR := $(if $(filter aarch64 arm64,$(ARCH)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)

.PHONY: demo test calibration lint setup browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null \
		|| $(BIN)/python -m pip install --quiet $(TORCH_PAIR) \
		|| $(BIN)/python -m pip install --quiet "torch>=2.2,<3" torchvision
	$(BIN)/python -m pip install --quiet -e ".[dev,data,vision,text,lora,ray,tensorboard,mlflow,torchjd,export]"
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

# The suite runs in pytest-xdist workers, one per core (at most 8: each holds torch in memory),
# each on one thread (tests/conftest.py), so the workers do not oversubscribe the cores.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 8 ] && n=8; echo $$n)

test: $(STAMP) browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal
	$(BIN)/ruff check src tests benchmarks

# Every test marked `calibration` (the full multi-trial calibrations; `make test` runs quick ones).
calibration: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m calibration

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
