"""Binarize subword text for fairseq: ``fairseq-preprocess`` with one joined dictionary.

``--joined-dictionary`` gives source and target the same dictionary (dict.SRC.txt == dict.TGT.txt), which
``--share-all-embeddings`` needs; the paper ties the output layer to the embedding (paper notes 1.1).
fairseq's own IWSLT14 README binarizes without it (two dictionaries); WMT14 in fairseq's scaling_nmt
recipe joins them. The command runs in a child process: fairseq_cli.preprocess configures the root
logger at import and would take over this process's logging.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from normpos.data.errors import DataError
from normpos.files import atomic_output


def preprocess_command(src: str, tgt: str, text_dir: Path, dest: Path, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "fairseq_cli.preprocess",
        "--source-lang", src, "--target-lang", tgt,
        "--trainpref", str(text_dir / "train"), "--validpref", str(text_dir / "valid"),
        "--testpref", str(text_dir / "test"),
        "--destdir", str(dest), "--joined-dictionary", "--workers", str(workers),
    ]


def binarize(src: str, tgt: str, text_dir: Path, dest: Path, workers: int) -> None:
    """Write fairseq's binary dataset for {train,valid,test}.{src,tgt} in ``text_dir`` to ``dest``.

    ``dest`` appears only when fairseq-preprocess succeeded; its log lines are passed on as progress.
    """
    with atomic_output(dest) as tmp:
        cmd = preprocess_command(src, tgt, text_dir, tmp, workers)
        last = "no output"
        # One torch thread per process: binarizing does no tensor math worth threads, and with
        # --workers processes each starting a full torch thread pool the cores are oversubscribed.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            for line in proc.stdout:
                print(f"  fairseq-preprocess: {line.rstrip()}", file=sys.stderr)
                last = line.strip() or last
        if proc.returncode != 0:
            raise DataError(f"fairseq-preprocess failed (exit {proc.returncode}): {last}")
