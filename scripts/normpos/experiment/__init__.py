"""Experiments of the paper as Hydra configs: validation, the fairseq command, one run, the sweep app."""
