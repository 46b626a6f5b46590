"""The bar a run must clear to count as *training*: the valid set's cross-entropy under the target unigram model.

A model that knows only how often each target token occurs in the training data (and nothing about the source
sentence or the words before) predicts every position with the same distribution p(t). Its cross-entropy on
the valid set, in bits per target token, is what a translation model must beat by a clear margin before it
can be said to have learned anything beyond word frequencies (Post-LN without warm-up stalls just there).

To compare like with like with fairseq's ``valid_nll_loss`` (base 2, per target token, every token of the
binarized target including the end-of-sentence symbol, no padding, no label smoothing), the counts are read
from the same binarized files fairseq trains on, through fairseq's own reader, eos included:

    p(t) = (c_train(t) + 1) / (N_train + V)        (add-one over the target dictionary of V symbols)
    H    = -1/N_valid * sum over valid target tokens of log2 p(t)

Add-one keeps the few valid tokens never seen in training finite; with Multi30k's ~380k training tokens it
moves H by less than 0.01 bit.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path


class DataMissing(Exception):
    """The binarized split is not where the config says."""


def token_counts(data_bin: str, split: str, src: str, tgt: str) -> Counter:
    """Counts of every target token id in ``split`` (eos included), read by fairseq's indexed-dataset reader."""
    from fairseq.data import Dictionary, data_utils

    prefix = Path(data_bin) / f"{split}.{src}-{tgt}.{tgt}"
    dictionary = Dictionary.load(str(Path(data_bin) / f"dict.{tgt}.txt"))
    dataset = data_utils.load_indexed_dataset(str(prefix), dictionary)
    if dataset is None:
        raise DataMissing(f"{prefix}.bin/.idx not found (prepare the dataset first)")
    counts: Counter = Counter()
    for i in range(len(dataset)):
        counts.update(dataset[i].tolist())
    return counts


def unigram_cross_entropy(data_bin: str, src: str, tgt: str, split: str = "valid") -> dict:
    """H (bits per target token) of ``split`` under the add-one unigram model of the training targets."""
    from fairseq.data import Dictionary

    vocab = len(Dictionary.load(str(Path(data_bin) / f"dict.{tgt}.txt")))
    train, valid = token_counts(data_bin, "train", src, tgt), token_counts(data_bin, split, src, tgt)
    n_train, n_valid = sum(train.values()), sum(valid.values())
    bits = -sum(c * math.log2((train[t] + 1) / (n_train + vocab)) for t, c in valid.items()) / n_valid
    return {"bits": bits, "split": split, "target_lang": tgt, "train_tokens": n_train, f"{split}_tokens": n_valid,
            "vocab": vocab, "unseen_in_train": sum(c for t, c in valid.items() if not train[t]),
            "smoothing": "add-one over the target dictionary", "data_bin": str(data_bin)}
