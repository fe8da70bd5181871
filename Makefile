# StyleBlend in Jittor — every command a student or CI needs. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SET ?= B
DATA ?= data/$(SET)
STYLES ?=
MODEL ?=
RESULTS ?= result
CHECKPOINTS ?= checkpoints
OUTPUTS ?= outputs
GPUS ?=
export STYLEBLEND_QUIET ?= 1

.PHONY: help setup test demo reproduce lab data gpu-setup bench clean-outputs

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned dependencies (+ test extras)

test: $(STAMP)  ## pytest (unit, parity, method) and nbval over every notebook in smoke mode, in one run
	STYLEBLEND_SMOKE=1 $(PY) -m pytest -q --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks

demo: $(STAMP)  ## the whole chain, every notebook, on the embedded tiny model and the committed demo styles
	$(MAKE) reproduce SET=demo

reproduce: $(STAMP)  ## run notebooks 00→06 with papermill for STYLES of SET (MODEL= a real SD 2.1; empty = tiny model, smoke sizes)
	$(PY) -m styleblend.cli notebooks --set $(SET) --data $(DATA) --results $(RESULTS) \
	  --checkpoints $(CHECKPOINTS) --outputs $(OUTPUTS) $(if $(STYLES),--styles "$(STYLES)") \
	  $(if $(MODEL),--model $(MODEL)) $(if $(GPUS),--gpus $(GPUS))

lab: $(STAMP)  ## JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks

data: $(STAMP)  ## lay out downloaded B images: make data B_IMAGES=/path/to/B
	@test -n "$(B_IMAGES)" || { echo "usage: make data B_IMAGES=/path/to/B (folders <style>/images/*.png)"; exit 2; }
	$(PY) -m styleblend.cli data --from $(B_IMAGES) --data $(DATA)

gpu-setup:  ## once per CUDA 13 / cuDNN 9 GPU machine: patch the installed Jittor so it builds there
	$(PY) -m styleblend.gpu_setup

bench: $(STAMP)  ## GPU benchmarks, ours vs diffusers, one JSON line each (see docs/performance.md)
	for dtype in float32 float16; do for impl in jittor diffusers; do \
	  STYLEBLEND_DEVICE=cuda $(PY) bench/unet_step.py --impl $$impl --dtype $$dtype; done; done
	STYLEBLEND_DEVICE=cuda $(PY) bench/probe_ops.py
