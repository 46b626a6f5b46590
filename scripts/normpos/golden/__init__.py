"""Golden training curves: the numbers a code change must not move without saying why.

Megatron-LM's functional tests commit the per-iteration loss each test model must reproduce; this is the same at
CPU scale. Every case trains a tiny model (``configs/experiment/golden.yaml``) for a few dozen updates through
the pipeline's own fairseq-train command, under pinned CPU numerics (``normpos.numerics``), and records each
update's loss, nll_loss, gnorm and lr as fairseq logged them, plus a SHA-256 of the final weights (every bit).
Cases (``cases.py``): one per registered normalization scheme, the N-gram decoder window, data parallelism over
two CPU ranks, and one per learning-rate schedule (pure arithmetic: the lr fairseq's scheduler gives at each
update and epoch, no training).

    python -m normpos.golden check        # compare with tests/golden/*.json; exit 1 on any difference
    python -m normpos.golden regenerate   # write tests/golden/*.json anew and print what changed (make golden)

The expected values are exact: with the pin, the same commit gives the same bits on any AVX2 host. A commit
that changes them says why.
"""
