"""The subword model, one value picks it: joint BPE with subword-nmt (the recipes) or sentencepiece.

- ``bpe``: ``learn_bpe.py -s N < train.src+train.tgt > code``, then ``apply_bpe.py -c code`` on every
  split, exactly fairseq's prepare-*.sh (N merges: 10,000 for IWSLT14, 40,000 for WMT14). subword-nmt's
  defaults are kept (min frequency 2, ``@@`` separator); the file's ``#version: 0.2`` header is subword-nmt's.
- ``sentencepiece``: one joint model of N pieces trained on the same tokenized (and, where the recipe
  says so, lowercased) training text, so that switching the value changes only the segmentation and
  nothing else in the pipeline; model type ``unigram`` (sentencepiece's default and its own algorithm).
  fairseq reads the pieces as words; decode with ``--post-process sentencepiece``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from normpos.files import atomic_output, concat_files

KINDS = ("bpe", "sentencepiece")
# Folder-name prefix per kind: data/<dataset>/bpe10000, data/<dataset>/spm10000.
PREFIX = {"bpe": "bpe", "sentencepiece": "spm"}
MODEL_FILES = {"bpe": ("code",), "sentencepiece": ("spm.model", "spm.vocab")}
# sentencepiece holds its training sentences in memory; a random sample of this many keeps WMT14
# (9M sentences, both sides) bounded at roughly 1 GB while IWSLT14 and Multi30k are used whole.
SPM_MAX_SENTENCES = 4_000_000
SPM_SEED = 1


@dataclass(frozen=True)
class SubwordSpec:
    kind: str
    size: int  # BPE merge operations, or sentencepiece vocabulary size

    @property
    def tag(self) -> str:
        return f"{PREFIX[self.kind]}{self.size}"


def learn(spec: SubwordSpec, train_files: list[Path], out_dir: Path, workers: int) -> None:
    """Learn the joint model on the concatenated training sides; write MODEL_FILES[kind] into ``out_dir``."""
    if spec.kind == "bpe":
        from subword_nmt.learn_bpe import learn_bpe

        joint = out_dir / "train.joint.tmp"  # prepare-iwslt14.sh's $tmp/train.en-de
        concat_files(train_files, joint)
        try:
            with atomic_output(out_dir / "code") as tmp, open(joint, encoding="utf-8") as fin, \
                    open(tmp, "w", encoding="utf-8") as fout:
                # num_workers only parallelises the word count; the merge loop is serial in subword-nmt.
                learn_bpe(fin, fout, spec.size, num_workers=workers)
        finally:
            joint.unlink(missing_ok=True)
        return

    import sentencepiece as spm

    spm.set_random_generator_seed(SPM_SEED)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".spm-") as tmp:
        spm.SentencePieceTrainer.train(
            input=[str(p) for p in train_files], model_prefix=f"{tmp}/spm", vocab_size=spec.size,
            model_type="unigram", character_coverage=1.0, input_sentence_size=SPM_MAX_SENTENCES,
            shuffle_input_sentence=True, num_threads=workers,
        )
        # spm.model last: its presence is what marks the step as done.
        for name in ("spm.vocab", "spm.model"):
            os.replace(Path(tmp, name), out_dir / name)
    print(f"sentencepiece model written to {out_dir / 'spm.model'}", file=sys.stderr)


class Encoder:
    """Picklable ``line -> subword line`` for the learned model; loads it once per worker process."""

    def __init__(self, kind: str, model_dir: Path):
        self.kind, self.model_dir = kind, Path(model_dir)
        self._model = None

    def __getstate__(self):
        return {"kind": self.kind, "model_dir": self.model_dir}

    def __setstate__(self, state):
        self.__init__(**state)

    def __call__(self, line: str) -> str:
        if self._model is None:
            self._model = self._load()
        if self.kind == "bpe":
            return self._model.process_line(line)
        return " ".join(self._model.encode(line, out_type=str))

    def _load(self):
        if self.kind == "bpe":
            from subword_nmt.apply_bpe import BPE

            with open(self.model_dir / "code", encoding="utf-8") as f:
                return BPE(f)
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(self.model_dir / "spm.model"))
