"""``make gpu-proof``: one command that proves the pipeline on a CUDA GPU within a time budget (issue 13).

A GPU is lent rarely and briefly (ten minutes a command), to a machine without internet that has torch but
not fairseq or Hydra. So the proof is one prepared command that, within ``--budget`` seconds:

0. makes fairseq, Hydra and the MT tools importable from the wheels in ``.whl/`` when they are not
   (``wheels.py``; ``../shared/tools/gpu-wheelhouse .whl`` builds them), and takes Multi30k from
   ``data/multi30k/bpe8000`` or prepares it from ``--source`` (``data.py``);
a. benchmarks our Post-LN and Pre-LN against fairseq's built-in Transformer (IWSLT shape) in fp32, fp16 and
   bf16 with ``normpos.bench_models``: tokens/s, ratio ours / built-in (target >= 0.98), peak GPU memory; the
   fastest precision is used from then on (``bench.py``);
b. measures the packing gain: aggregate updates/s of 1, 2, 4 and 8 concurrent IWSLT-size ``fairseq-train``
   runs (``python -m normpos.fairseq_run train``, the grid's own command), and picks the packing and the
   update budget for (c) (``packing.py``, ``plan.py``);
c. trains the Multi30k grid at the IWSLT size (Xiong et al. 2020 sec. 3.2: Post-LN, Adam, lr {5e-4, 1e-3}
   x warm-up {1, 500, 4000}; sec. 4: Pre-LN without warm-up; ``configs/experiment/gpu_proof.yaml``), one
   seed, packed with Hydra's joblib launcher, every run with the same number of updates; the sweep scores
   each on the test set (``normpos.scoring``), then ``normpos.report`` draws the table and figures
   (``grid.py``);
d. writes ``results/multi30k/<gpu>/`` (and a copy into ``$OUT`` when set): at most 8 files of at most
   16 MiB (``package.py``, ``machine.py``).

Everything else (runs, checkpoints, logs) stays in the scratch folder ``.gpu/<gpu>/`` (git-ignored), which
a new proof replaces.

The device command (the device tool runs ``bash -c COMMAND`` in a copy of the repository): carry ``.whl``
(``../shared/tools/gpu-wheelhouse .whl joblib tqdm click PyYAML regex mock``: 24 MB; the extras are
fairseq's and sacremoses' own dependencies, in case the image lacks them) and ``data/multi30k/bpe8000``
(``make data-multi30k``: 7.5 MB), give it ``timeout_s`` 600, and fill in the commit, since the copy has no
``.git``:

    NORMPOS_COMMIT=<git rev-parse --short HEAD> make gpu-proof PY=python3 BUDGET=540

(without make: ``PYTHONPATH=$PWD/plugins:$PWD/scripts python3 -m normpos.gpu_proof --budget 540``). The
files come back from ``$OUT``; commit them as ``results/multi30k/<gpu>/``.

On CPU the same code path runs at a tiny size (``tests/test_gpu_proof.py``):
``python -m normpos.gpu_proof --budget 150 --tiny --packings 1 2``.
"""


class ProofError(Exception):
    """A step of the proof that cannot go on, reported as one line ``normpos: error: ...``."""
