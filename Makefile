# Reference pipeline for Xiong et al. 2020 (Pre-LN vs Post-LN) on fairseq. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# PY may point at another interpreter that already has the dependencies (e.g. on a GPU machine):
#   make test PY=python3
PY ?= .venv/bin/python
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/scripts$(if $(PYTHONPATH),:$(PYTHONPATH),)
# The venv is rebuilt when a requirement file changes; skipped when PY is not the venv.
SETUP_STAMP := .venv/.installed
SETUP := $(if $(filter .venv/bin/python,$(PY)),$(SETUP_STAMP),)
PYTEST_ARGS ?=
# Test files run on PYTEST_WORKERS processes (pytest-xdist; a file's tests stay on one worker, so its fixtures are
# built once): 2 fits a 2-core machine and halves the suite's time there; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP)  ## create .venv with torch (CPU 2.13.0 unless TORCH=... TORCH_INDEX=...), fairseq and the rest

$(SETUP_STAMP): requirements/lock.txt requirements/test.txt pyproject.toml scripts/setup_venv.sh
	scripts/setup_venv.sh
	touch $@

test: $(SETUP)  ## run the test suite (sets up .venv first if needed)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Golden training curves (scripts/normpos/golden): every scheme, the N-gram window, data parallelism and every lr
# schedule on a tiny model, under pinned CPU numerics; tests/test_golden_curves.py checks them in `make test`
golden: $(SETUP)  ## rewrite tests/golden/ from this machine and print what changed ("unchanged" = this host reproduces them)
	$(PY) -m normpos.golden regenerate $(if $(CASES),--cases $(CASES),)

bench-numerics: $(SETUP)  ## updates/s of the CPU demo model with pinned vs native CPU numerics (the pin's cost)
	$(MAKE) --no-print-directory data-multi30k
	$(PY) -m normpos.bench_numerics $(BENCH_NUMERICS_ARGS)

bench: $(SETUP)  ## tokens/s of our Post-LN and Pre-LN vs fairseq's built-in transformer, same batches, one run
	$(PY) -m normpos.bench_models $(BENCH_ARGS)

# One command that proves the pipeline on a CUDA GPU within BUDGET seconds (scripts/normpos/gpu_proof): benchmark
# per precision, packing gain, the Multi30k grid at the IWSLT size -> results/multi30k/<gpu>/ (and $OUT when set).
# Installs .whl/ when fairseq is missing; prepares Multi30k from SOURCE when data/multi30k/bpe8000 is absent.
BUDGET ?= 540
gpu-proof: $(SETUP)  ## prove the pipeline on a GPU in BUDGET s (540): bench, packing, Multi30k grid -> results/multi30k/<gpu>
	$(PY) -m normpos.gpu_proof --budget $(BUDGET) $(if $(SOURCE),--source $(SOURCE),) $(GPU_PROOF_ARGS)

gradnorm: $(SETUP)  ## theory check at init (Fig. 3, Lemma 2, Thm 1): Post-/Pre-LN, depths 6-14, 10 seeds -> results/theory
	$(PY) -m normpos.theory $(THEORY_ARGS)

# Fig. 3(c,d) beyond the paper: every scheme of the plugin, paper's FFN init, depths 6-14, 3 seeds (~32 min on 2 cores).
# The folder's measurements.csv is the cache: only schemes missing from it are measured, then merged (SCHEMES=mine
# names just yours; normpos/theory/record.py)
comma := ,
ALL_SCHEMES = post_ln pre_ln deepnorm admin rezero tfixup ln_simple adanorm rmsnorm_post rmsnorm_pre scalenorm_fixnorm normformer xskip_ln rskip_ln b2t residual hybridnorm dyt peri_ln mix_ln ln_scaling
gradnorm-schemes: $(SETUP)  ## Fig. 3(c,d) for every normalization scheme, depths 6-14, 3 seeds -> results/theory/schemes [SCHEMES=new ones]
	$(PY) -m normpos.theory --schemes $(or $(subst $(comma), ,$(SCHEMES)),$(ALL_SCHEMES)) --seeds 3 --theory-depths --per-layer-depth 0 --out results/theory/schemes $(THEORY_ARGS)

# The same measurement with one thing changed, each in results/theory/checks/NAME (the main report lists them)
THEORY_CHECKS = results/theory/checks
gradnorm-checks: $(SETUP)  ## checks beside `gradnorm`: current fairseq's FFN init, 4 batches, dropout 0 and 0.3 (~25 min)
	$(PY) -m normpos.theory --inits torch_default --depths 6 10 14 --seeds 10 --theory-depths --per-layer-depth 6 --out $(THEORY_CHECKS)/current-fairseq-init --no-progress
	$(PY) -m normpos.theory --batches 4 --schemes post_ln --inits xavier --depths 6 --seeds 10 --theory-depths --per-layer-depth 0 --out $(THEORY_CHECKS)/batches-4 --no-progress
	$(PY) -m normpos.theory --dropout 0 --schemes post_ln pre_ln --inits xavier torch_default --depths 6 14 --seeds 5 --theory-depths --per-layer-depth 0 --out $(THEORY_CHECKS)/dropout-0 --no-progress
	$(PY) -m normpos.theory --dropout 0.3 --schemes post_ln --inits xavier --depths 6 14 --seeds 10 --theory-depths --per-layer-depth 0 --out $(THEORY_CHECKS)/dropout-0.3 --no-progress

# ---- data (data/README.md). SOURCE=URL_OR_PATH takes a downloaded archive or folder (offline use).
DATA_ARGS = $(if $(SOURCE),--source $(SOURCE),) $(DATA_OPTS)

data-multi30k: $(SETUP)  ## Multi30k De-En, joint BPE 8K -> data/multi30k/bpe8000 (offline from ../shared/data)
	$(PY) -m normpos.data prepare multi30k $(DATA_ARGS)

data-iwslt14: $(SETUP)  ## IWSLT14 De-En as fairseq's prepare-iwslt14.sh, joint BPE 10K -> data/iwslt14/bpe10000
	$(PY) -m normpos.data prepare iwslt14 $(DATA_ARGS)

data-wmt14: $(SETUP)  ## WMT14 En-De (Europarl v7, CommonCrawl, NC v9), joint BPE 40K -> data/wmt14/bpe40000
	$(PY) -m normpos.data prepare wmt14 $(DATA_ARGS)

bench-prep: $(SETUP)  ## sentences/s of our tokenize+BPE path vs a serial baseline; projected IWSLT14/WMT14 times
	$(PY) -m normpos.data bench

# ---- experiments (configs/experiment/*.yaml). A sweep is a Hydra multirun; ARGS adds overrides, e.g.
#   make sweep EXPERIMENT=sec3_postln_adam ARGS='seed=1 hydra/launcher=joblib hydra.launcher.n_jobs=4'
# DRY_RUN=1 lists the fairseq-train commands without running anything.
# On a machine with GPUs a sweep packs runs: J per GPU at once with Hydra's joblib launcher, J from
# JOBS_PER_GPU, else the measured best for this GPU model (make gpu-proof), else 2; a launcher chosen in
# ARGS (e.g. hydra/launcher=basic) is kept. normpos.experiment.devices decides and says why.
EXPERIMENT ?= demo
# the experiment's dataset (scripts/experiment_dataset.sh); CHECK_EXPERIMENT stops an unknown EXPERIMENT in one line
DATASET ?= $(shell scripts/experiment_dataset.sh $(EXPERIMENT) 2>/dev/null)
CHECK_EXPERIMENT = @scripts/experiment_dataset.sh $(EXPERIMENT) >/dev/null
RUN_ROOT ?= results/runs
JOBS_PER_GPU ?=
# LAUNCH: a target's own launcher overrides (make demo's runs side by side), before ARGS so a user's win
LAUNCH =
SWEEP_OVERRIDES = experiment=$(1) $(if $(2),dataset=$(2),) run.root=$(RUN_ROOT) $(if $(DRY_RUN),run.dry_run=true,) $(LAUNCH) $(ARGS)
SWEEP = packing=$$($(PY) -m normpos.experiment.devices launcher-args $(if $(JOBS_PER_GPU),--jobs-per-gpu $(JOBS_PER_GPU),) \
	-- $(SWEEP_OVERRIDES)) || exit $$?; $(PY) -m normpos.sweep -m $$packing $(SWEEP_OVERRIDES)
# REPORT_ARGS reaches both reports, e.g. REPORT_ARGS='--baseline SLUG' or '--no-significance' (table),
# '--x num_updates' (figures); `python -m normpos.report table --help` lists them
REPORT = $(PY) -m normpos.report $(1) --root $(RUN_ROOT)/$(2)/$(3) --out results/$(2)/$(3) $(REPORT_ARGS)
IWSLT_EXPERIMENTS = sec3_postln_adam sec3_postln_sgd sec4_preln_vs_postln sec4_radam appH_postln_small_lr
# the Multi30k grid at the IWSLT model size (what a single GPU reproduces in minutes)
MULTI30K_EXPERIMENTS = sec3_postln_adam sec4_preln_vs_postln

sweep: $(SETUP)  ## run one experiment's sweep: EXPERIMENT=name [DATASET=...] [ARGS=...] [DRY_RUN=1] [JOBS_PER_GPU=N]
	$(CHECK_EXPERIMENT)
	$(call SWEEP,$(EXPERIMENT),$(DATASET))

table: $(SETUP)  ## BLEU/chrF++ table with significance vs the baseline: EXPERIMENT=name [DATASET=...] [REPORT_ARGS=...]
	$(CHECK_EXPERIMENT)
	$(call REPORT,table,$(DATASET),$(EXPERIMENT))

figures: $(SETUP)  ## the paper's Fig. 2/4 analogues and the speed-up figure: EXPERIMENT=name [DATASET=...]
	$(CHECK_EXPERIMENT)
	$(call REPORT,figures,$(DATASET),$(EXPERIMENT))

define reproduce
	$(if $(DRY_RUN),,$(MAKE) --no-print-directory data-$(1))
	set -e; for e in $(2); do $(call SWEEP,$$e,$(1)); \
	  $(if $(DRY_RUN),,$(call REPORT,table,$(1),$$e); $(call REPORT,figures,$(1),$$e);) done
endef

reproduce-iwslt: $(SETUP)  ## IWSLT14: data, every IWSLT sweep of the paper, scoring, tables, figures [DRY_RUN=1]
	$(call reproduce,iwslt14,$(IWSLT_EXPERIMENTS))

schemes-demo: $(SETUP)  ## every normalization scheme without warm-up at lr 1e-3, Multi30k on CPU (~5 min a scheme): table, figures
	$(call reproduce,multi30k,schemes_demo)

reproduce-wmt: $(SETUP)  ## WMT14 En-De: data, the sec. 4 sweep (Transformer base), scoring, table, figures [DRY_RUN=1]
	$(call reproduce,wmt14,sec4_wmt_preln_vs_postln)

# PRESET=cpu: sec. 3.2 and sec. 4 trained to convergence on 2 CPU cores in <= 150 min (scripts/normpos/converge,
# configs/converge/cpu.yaml; tiny: the tests'); the GPU grids stay the default (PRESET is the frontier's
# variable too, so only a PRESET given on the command line or in the environment chooses here)
REPRODUCE_PRESET = $(if $(filter command line environment,$(origin PRESET)),$(PRESET),gpu)
REPRODUCE_ARGS ?=
ifeq ($(REPRODUCE_PRESET),gpu)
reproduce-multi30k: $(SETUP)  ## Multi30k: the paper's sec. 3/4 grids at the IWSLT model size (GPU), or PRESET=cpu: to convergence or 10 epochs, <= 150 min on 2 cores [DRY_RUN=1]
	$(call reproduce,multi30k,$(MULTI30K_EXPERIMENTS))
else
reproduce-multi30k: $(SETUP)
	$(if $(DRY_RUN)$(filter tiny,$(REPRODUCE_PRESET)),,$(MAKE) --no-print-directory data-multi30k)
	$(PY) -m normpos.converge --preset $(REPRODUCE_PRESET) --run-root $(RUN_ROOT) $(if $(DRY_RUN),--dry-run,) \
	  $(REPRODUCE_ARGS) $(if $(ARGS),-- $(ARGS),)
endif

# The stability frontier (scripts/normpos/frontier): per scheme x depth, the largest lr that trains without warm-up
# on a log grid, runs chosen from the outcomes so far (a column stops after 2 lrs in a row that do not train),
# its plan and projected time printed first. PRESET=cpu (2 cores, ~100 min), iwslt (GPUs), tiny (tests);
# SCHEMES=a,b DEPTHS=2,4 LRS=... restrict it; ARGS adds Hydra overrides for every run; DRY_RUN=1 lists commands.
PRESET ?= cpu
FRONTIER_ARGS ?=
frontier: $(SETUP)  ## largest lr without warm-up per scheme x depth: PRESET=cpu, iwslt or tiny [SCHEMES= DEPTHS= DRY_RUN=1]
	$(if $(DRY_RUN)$(filter tiny,$(PRESET)),,$(MAKE) --no-print-directory data-multi30k)
	$(PY) -m normpos.frontier --preset $(PRESET) --run-root $(RUN_ROOT) $(if $(SCHEMES),--schemes '$(SCHEMES)',) \
	  $(if $(DEPTHS),--depths '$(DEPTHS)',) $(if $(LRS),--lrs '$(LRS)',) $(if $(DRY_RUN),--dry-run,) $(FRONTIER_ARGS) \
	  $(if $(ARGS),-- $(ARGS),)

# N-gram masked decoder self-attention (Chelba et al. 2020) on the demo's setting: test BLEU of a model trained
# with each N (configs/experiment/ngram_demo.yaml), each compared with full attention (paired tests), then
# fairseq-generate's speed per N on the full-attention one
bench-decode: $(SETUP)  ## N-gram decoder self-attention, Multi30k on CPU: BLEU per N, decoding speed per N (~20 min)
	$(MAKE) --no-print-directory data-multi30k
	$(call SWEEP,ngram_demo,multi30k)
	$(call REPORT,table,multi30k,ngram_demo) --baseline pre_ln_adam_lr-1e-3_constant
	$(PY) -m normpos.bench_decode --runs $(RUN_ROOT)/multi30k/ngram_demo --out results/multi30k/ngram_demo/bench_decode.json $(BENCH_DECODE_ARGS)

# the demo's three runs side by side, one torch thread each (train.threads: 1 in configs/experiment/demo.yaml)
demo: LAUNCH = hydra/launcher=joblib hydra.launcher.n_jobs=3
demo: $(SETUP)  ## the whole pipeline on Multi30k on CPU (~4 min): Post-LN vs Pre-LN without warm-up, table, figures
	$(MAKE) --no-print-directory data-multi30k
	$(call SWEEP,demo,multi30k)
	$(call REPORT,table,multi30k,demo)
	$(call REPORT,figures,multi30k,demo)

# ---- a one-node Slurm cluster on this machine (scripts/slurm/cluster.sh: Slurm 22.05 from Debian, as root), for
# tests/test_launchers_slurm.py and for trying the Slurm path of `make sweep`; `eval "$$(scripts/slurm/cluster.sh env)"`
# points sinfo, sbatch, sacct at it
slurm-up:  ## start a local one-node Slurm (installs munge, slurm-wlm, slurmdbd, MariaDB when missing; a no-op when up)
	scripts/slurm/cluster.sh up

slurm-down:  ## cancel the local Slurm's jobs and stop the daemons slurm-up started (by pid)
	scripts/slurm/cluster.sh down

.PHONY: help setup test slurm-up slurm-down golden bench-numerics bench bench-decode gpu-proof gradnorm gradnorm-checks gradnorm-schemes data-multi30k data-iwslt14 data-wmt14 bench-prep sweep table figures \
	reproduce-iwslt reproduce-wmt reproduce-multi30k demo schemes-demo frontier
