"""Read fairseq's ``--log-format json`` lines: per-interval training stats and per-epoch summaries.

fairseq logs e.g. ``2026-11-25 12:00:00 | INFO | train_inner | {"epoch": 1, "update": 0.5, "loss": "9.8", ...}``
and ``... | INFO | valid | {"epoch": 1, "valid_loss": "8.1", "valid_bleu": "3.2", ...}``; values are strings.
When logging was configured before fairseq_cli.train set its format (our wrapper imports fairseq first), the
same records read ``INFO:train_inner:{...}``: both forms are accepted. ``update`` is the fractional epoch.
"""

import json
import math
import re
from typing import Optional, Tuple

LINE = re.compile(r"(?:\|\s*|INFO:)(train_inner|train|valid)(?:\s*\|\s*|:)(\{.*\})\s*$")
# what fairseq prints when training blew up (fp16 minimum loss scale; fp32 non-finite gradients or loss)
DIVERGENCE_MARKERS = ("Minimum loss scale reached", "gradients are Nan/Inf", "FloatingPointError",
                      "loss is nan", "loss is inf")

# how Python prints an OSError in a traceback or a log line (a full disk, a read-only folder)
OS_ERROR = re.compile(r"\[Errno \d+\] [^:'\"\n]+")


def parse_line(line: str) -> Optional[Tuple[str, dict]]:
    """(kind, stats) for a fairseq json stats line, else None. Numbers are converted to float."""
    match = LINE.search(line)
    if not match:
        return None
    try:
        raw = json.loads(match.group(2))
    except json.JSONDecodeError:
        return None
    stats = {}
    for key, value in raw.items():
        try:
            stats[key] = float(value)
        except (TypeError, ValueError):
            stats[key] = value
    return match.group(1), stats


def epoch_record(train: dict, valid: dict, progress: Optional[float] = None) -> dict:
    """One metrics.jsonl row from a ``valid`` summary and the latest ``train`` summary before it.

    ``epoch`` is fairseq's (1-based) epoch; ``epoch_progress`` the epochs done when validating (fractional
    when validating inside an epoch, ``--validate-interval-updates``)."""
    def get(d, key):
        value = d.get(key)
        return value if isinstance(value, float) else None

    return {
        "epoch": int(valid.get("epoch", train.get("epoch", 0))),
        "epoch_progress": progress if progress is not None else float(valid.get("epoch", 0)),
        "num_updates": int(valid.get("valid_num_updates", train.get("train_num_updates", 0)) or 0),
        "train_loss": get(train, "train_loss"),
        "valid_loss": get(valid, "valid_loss"),
        # without label smoothing: comparable with a cross-entropy computed from the data (normpos.frontier)
        "valid_nll_loss": get(valid, "valid_nll_loss"),
        "valid_bleu": get(valid, "valid_bleu"),
        "lr": get(train, "train_lr"),
        "updates_per_s": get(train, "train_ups"),  # fairseq's own measure, over the last log interval / epoch
    }


def is_finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)
