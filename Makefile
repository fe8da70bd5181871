# StyleBlend in Jittor — every command a student or CI needs. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY ?= $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PY=python3 (or any interpreter with the dependencies): use that environment as it is, no .venv (clusters, GPU images)
SETUP := $(if $(filter $(VENV)/bin/python,$(PY)),$(STAMP))

SET ?= B
DATA ?= data/$(SET)
STYLES ?=
MODEL ?=
RECIPE ?=
RESULTS ?= result
CHECKPOINTS ?= checkpoints
OUTPUTS ?= outputs
GPUS ?=

.PHONY: help setup warmup test demo reproduce reproduce-merge reproduce-list lab data gpu-setup bench clean-outputs

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned dependencies (+ test extras)

# Jittor compiles its kernels on first use; warmup compiles those of every notebook once per machine, in one plain
# process, so notebook kernels never compile (docs/first-run.md). It skips what this machine already compiled.
warmup: $(SETUP)  ## compile the Jittor kernels the notebooks need, once per machine (demo, reproduce and test run it first)
	$(PY) -m styleblend warmup $(SELECT) $(if $(MODEL),--model $(MODEL)) $(if $(RECIPE),--config $(RECIPE))

test: $(SETUP)  ## pytest (unit, parity, method) and nbval over every notebook in smoke mode, in one run
	$(MAKE) --no-print-directory warmup SET=demo DATA=data/demo STYLES= MODEL= RECIPE=
	STYLEBLEND_SMOKE=1 $(PY) -m pytest -q --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks

demo: $(SETUP)  ## the whole chain, every notebook, on the embedded tiny model and the committed demo styles
	$(MAKE) reproduce SET=demo

# reproduce = one job per style (reproduce-style-<id>), then one merged report. `make -jN reproduce GPUS=0,1,..`
# runs N styles at once, each holding one free GPU of GPUS; -k: a failed style does not stop the others, and the
# merge (which fails when a style did not finish) always runs. Slurm runs the same targets (scripts/slurm/).
SELECT = --set $(SET) --data $(DATA) $(if $(STYLES),--styles "$(STYLES)")
REPORT = --outputs $(OUTPUTS) $(if $(MODEL),--model $(MODEL))

reproduce: warmup  ## run notebooks 00→06 with papermill for STYLES of SET (MODEL= a real SD 2.1; empty = tiny model, smoke sizes; RECIPE= a recipe YAML; -jN GPUS=0,1,.. = N styles at once)
	@styles=$$($(PY) -m styleblend styles $(SELECT)) && \
	  { $(MAKE) -k --no-print-directory $$(printf 'reproduce-style-%s ' $$styles); \
	    $(MAKE) --no-print-directory reproduce-merge; }

reproduce-style-%:
	$(PY) -m styleblend notebooks --set $(SET) --data $(DATA) --results $(RESULTS) --checkpoints $(CHECKPOINTS) \
	  $(REPORT) --styles $* --no-merge $(if $(GPUS),--gpus $(GPUS)) $(if $(RECIPE),--config $(RECIPE))

reproduce-merge:  ## join outputs/reports/<style>.csv into outputs/report.md + .csv (after a Slurm run)
	$(PY) -m styleblend merge-reports $(SELECT) $(REPORT) --results $(RESULTS)

reproduce-list:  ## print the style ids of SET/STYLES in run order (Slurm array task i runs the i-th)
	@$(PY) -m styleblend styles $(SELECT)

lab: $(SETUP)  ## JupyterLab on the notebooks
	$(PY) -m jupyter lab notebooks

data: $(SETUP)  ## lay out downloaded B images: make data B_IMAGES=/path/to/B
	@test -n "$(B_IMAGES)" || { echo "usage: make data B_IMAGES=/path/to/B (folders <style>/images/*.png)"; exit 2; }
	$(PY) -m styleblend data --from $(B_IMAGES) --data $(DATA)

gpu-setup:  ## once per CUDA 13 / cuDNN 9 GPU machine: patch the installed Jittor so it builds there
	$(PY) -m styleblend.gpu_setup

BENCH_RESULTS ?= bench-results.jsonl
bench: $(SETUP)  ## GPU benchmarks, ours vs diffusers, and their table (docs/performance.md); BENCH_RESULTS=file.jsonl
	JITTOR_PYTHON=$(PY) TORCH_PYTHON=$(PY) bash bench/run.sh $(BENCH_RESULTS)
