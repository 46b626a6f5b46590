#!/usr/bin/env bash
# The dataset an experiment config trains on, for the Makefile's DATASET default: its own
# `override /dataset:` line, else that of the experiment it builds on (its first default, e.g. schemes_demo
# on demo), else configs/train.yaml's default. An unknown experiment is one line naming the valid ones, exit 2:
# without this, sed's "can't read" and Hydra's list came before any useful word, and table paths read
# results/runs//NAME.
set -u
dir=configs/experiment
name=${1:-}
if [ ! -f "$dir/$name.yaml" ]; then
  valid=$(ls "$dir" | sed -n 's|\.yaml$||p' | tr '\n' ' ')
  echo "normpos: error: unknown experiment '$name' (EXPERIMENT=...); valid: ${valid% }" >&2
  exit 2
fi
while [ -f "$dir/$name.yaml" ]; do
  dataset=$(sed -n 's|^  - override /dataset: *||p' "$dir/$name.yaml")
  if [ -n "$dataset" ]; then echo "$dataset"; exit 0; fi
  # the first entry of `defaults:` that is not _self_ or an override: another experiment it includes
  name=$(sed -n '/^defaults:/,/^[^ ]/s|^  - \([A-Za-z0-9_]*\) *$|\1|p' "$dir/$name.yaml" | grep -vx _self_ | head -1)
  [ -n "$name" ] || break
done
sed -n 's|^  - dataset: *||p' configs/train.yaml
