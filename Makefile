# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torchsort builds a CUDA extension whenever `nvcc` is on PATH; with a CPU torch that fails,
# so it is built with a PATH that has no nvcc on it.
NO_NVCC_PATH := $(shell for d in $$(echo "$$PATH" | tr ':' ' '); do [ -x "$$d/nvcc" ] || printf '%s:' "$$d"; done)

.PHONY: setup demo test lint bench sweep clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=68" wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -c "import torchsort" 2>/dev/null || \
		PATH="$(NO_NVCC_PATH)" $(PY) -m pip install --quiet --no-build-isolation torchsort
	$(PY) -m pip install --quiet -e ".[dev]"
	test -d $(VENV)/torchvision/torchvision || $(PY) -m pip install --quiet --no-deps \
		--target $(VENV)/torchvision torchvision==0.28.0  # tests/vision.py says why apart
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cipm inspect resnet20
	$(PY) examples/seed_barriers.py --epochs 8 --out out/seed_barriers.png
	$(PY) examples/prune_digits.py
	$(PY) examples/canonical_heatmaps.py --out out/heatmaps
	$(PY) examples/transfer_blocks.py --out out/transfer_blocks.png
	$(PY) examples/continual_blocks.py --out out/continual_blocks.png

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check cipm tests benchmarks examples
	$(VENV)/bin/ruff format --check cipm tests benchmarks examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/trace.py
	$(PY) benchmarks/statistics.py
	$(PY) benchmarks/align.py
	$(PY) benchmarks/prune.py
	$(PY) benchmarks/export.py

# every torchvision classification model and the Hugging Face families (about an hour here)
sweep: $(STAMP)
	$(PY) benchmarks/zoo_sweep.py --resume

clean:
	rm -rf $(VENV) build *.egg-info
