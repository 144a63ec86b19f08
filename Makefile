# attnlab: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
ARGS ?=
# make evaluate's lengths: a variable, since the commas would split a $(or ...) argument
LENS ?= [16,32,64,128]

.PHONY: help setup train test test-fast gpu-check sweep report tensorboard benchmark evaluate figures screenshots lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: keeps a GPU build you installed, else takes the local CPU build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed  ## create .venv and install attnlab with its dependencies

train: setup  ## train one model (ARGS="data=halfswap model.pos_enc=sinusoidal")
	$(PY) scripts/train.py $(ARGS)

# Two workers (one per core here); a test file stays on one worker, so module fixtures run once. Files
# are handed out in collection order (tests/conftest.py: LONGEST_FIRST), not by how many tests they hold.
PYTEST := $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

test: setup  ## run the whole test suite, slow science tests included
	$(PYTEST) $(ARGS)

test-fast: setup  ## run the tests, skipping the slow ones
	$(PYTEST) -m "not slow" $(ARGS)

gpu-check: setup  ## on a CUDA machine: the GPU tests (fp32, bf16-mixed, fused == explicit) and the GPU benchmark
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: torch sees no CUDA device')"
	$(PY) -m pytest -m gpu tests/test_gpu.py $(ARGS)
	$(PY) scripts/benchmark.py --device cuda --out docs/benchmark_gpu.md

sweep: setup  ## the seeds' study: python scripts/train.py -m experiment=limitations (EXP=... for another)
	$(PY) scripts/train.py -m experiment=$(or $(EXP),limitations) $(ARGS)

# The newest sweep folder with a finished job (make report, make tensorboard; a refused or failed sweep is passed
# over): the last started, by its multirun.yaml, which a sweep writes once as it starts (a folder's own time moves
# with every report written into it, and a continuation's). Without a trailing slash.
# Names with white space are passed over (make splits words at it): give such a sweep as SWEEP=.
NEWEST_SWEEP = $(patsubst %/multirun.yaml,%,$(shell ls -t outputs/multiruns/*/multirun.yaml 2>/dev/null | \
	while IFS= read -r f; do case "$$f" in (*[[:space:]]*) continue;; esac; \
	find "$${f%/multirun.yaml}" -maxdepth 2 -name metrics.json | grep -q . && { echo "$$f"; break; }; done))
# SWEEP as given, never expanded by make ($(value)): a name holding `$(...)` is a name
SWEEP_DIR = $(or $(value SWEEP),$(NEWEST_SWEEP))
PICKED = echo "make $@: $$ATTNLAB_SWEEP, the newest sweep with a finished job (SWEEP=<sweep folder> for another)"

# Folder names reach the shell through the environment, never as recipe text: a folder named `x$(cmd)` in
# double quotes would run cmd.
report tensorboard: export ATTNLAB_SWEEP = $(SWEEP_DIR)
tensorboard: export ATTNLAB_LOGDIR = $(or $(value LOGDIR),$(SWEEP_DIR)/tensorboard)
evaluate: export ATTNLAB_RUN = $(value RUN)

NO_SWEEP = { echo "make $@: no sweep with a finished job under outputs/multiruns/ (make sweep, or SWEEP=<sweep folder>)" >&2; exit 1; }

report: setup  ## tables and plots of a sweep (SWEEP=outputs/multiruns/<sweep>; default: the newest)
	@test -n "$$ATTNLAB_SWEEP" || $(NO_SWEEP)
	$(if $(value SWEEP),,@$(PICKED))
	$(PY) scripts/report.py "$$ATTNLAB_SWEEP"

tensorboard: setup  ## TensorBoard on the newest sweep's study view (SWEEP=<sweep> for another; LOGDIR=outputs for all)
	$(if $(value LOGDIR),,@test -n "$$ATTNLAB_SWEEP" || $(NO_SWEEP))
	$(if $(value LOGDIR)$(value SWEEP),,@$(PICKED))
	$(VENV)/bin/tensorboard --logdir "$$ATTNLAB_LOGDIR"

benchmark: setup  ## hand-written loop vs Lightning template vs attnlab; its sections into docs/benchmark.md (ARGS="--only parts")
	$(PY) scripts/benchmark.py --out docs/benchmark.md $(ARGS)

evaluate: setup  ## score a run on other lengths (RUN=outputs/runs/<run> LENS=[16,32,64,128])
	@test -n "$$ATTNLAB_RUN" || { echo "make $@: RUN is not set: make evaluate RUN=<run folder, as printed>" >&2; exit 1; }
	$(PY) scripts/evaluate.py run_dir="$$ATTNLAB_RUN" eval.seq_lens="$(LENS)"

figures: setup  ## regenerate the README's figures and tables under docs/ (one run, the limitations and length studies)
	rm -rf outputs/docs/halfswap_rope
	$(PY) scripts/train.py data=halfswap model.pos_enc=rope hydra.run.dir=outputs/docs/halfswap_rope
	$(PY) scripts/plot_attention.py outputs/docs/halfswap_rope docs/attention_halfswap_rope.png
	rm -rf outputs/docs/limitations
	$(PY) scripts/train.py -m experiment=limitations hydra.sweep.dir=outputs/docs/limitations
	cp outputs/docs/limitations/acc_by_task_pos_enc.png docs/limitations_acc.png
	cp outputs/docs/limitations/summary.md docs/limitations_summary.md
	rm -rf outputs/docs/length_generalization
	$(PY) scripts/train.py -m experiment=length_generalization hydra.sweep.dir=outputs/docs/length_generalization
	cp outputs/docs/length_generalization/length_generalization.png docs/length_generalization.png
	cp outputs/docs/length_generalization/summary.md docs/length_generalization_summary.md

screenshots: setup  ## PNGs of TensorBoard's tabs for the limitations study (after make figures), into docs/ (needs chromium)
	$(PY) scripts/screenshots.py $(or $(SWEEP),outputs/docs/limitations) docs --width 1600 --height 1000 --runs 'data=halfswap,.*seed=0'
	mkdir -p docs/study
	$(PY) scripts/screenshots.py $(or $(SWEEP),outputs/docs/limitations)/tensorboard docs/study --width 1600 --height 1000

lint: setup  ## ruff check + format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:  ## remove outputs/ (asks first; FORCE=1 skips the question)
	@if [ "$(FORCE)" = 1 ]; then ans=y; else read -p "Delete everything under outputs/? [y/N] " ans; fi; \
	if [ "$$ans" = y ]; then find outputs -mindepth 1 ! -name .gitkeep -delete && echo "outputs/ cleaned"; else echo "kept outputs/"; fi
