# peakllm: two commands.
#   make workbook   -- set up .venv, execute every notebook on its defaults into runs/default/
#   make test       -- set up .venv, run the unit tests and nbval over every notebook
# Everything runs on the CPU, offline, on the embedded default (data/).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.peakllm-installed
REQS   ?= requirements/test.txt
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: workbook test setup interactive clean sweep report student

$(STAMP): $(REQS) requirements/constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Compiled bytecode makes every later import faster (peft/bitsandbytes 2-3x).
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pip install --quiet --compile --disable-pip-version-check -r $(REQS)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pip install --quiet --compile --disable-pip-version-check --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (peakllm)" >/dev/null
	touch $@

setup: $(STAMP)

workbook: $(STAMP)
	$(PY) -m peakllm workbook

test: $(STAMP)
	$(PY) -m pytest

sweep: $(STAMP)  ## make sweep SWEEP=sweeps/sparsity.yaml [ARGS=--retry-failed]
	$(PY) -m peakllm sweep $(SWEEP) $(ARGS)

report: $(STAMP)  ## one HTML page of every paper-vs-ours table and plot (runs/default after make workbook)
	$(PY) -m peakllm report

student: $(STAMP)  ## make student OUT=handout: notebooks without solutions or outputs
	$(PY) -m peakllm student $(OUT)

interactive:  ## the test environment plus JupyterLab (not used by make test)
	$(MAKE) setup REQS=requirements/interactive.txt STAMP=$(VENV)/.peakllm-interactive
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs/ .pytest_cache
