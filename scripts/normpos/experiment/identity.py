"""What a run *is*: the identity that decides whether an existing run directory may be reused.

Two configurations are the same run when every value that reaches ``fairseq-train`` is the same, except
- the training budget (``--max-update``, ``--max-epoch``): raising it continues the same run from its last
  checkpoint, as a user who asks for more updates expects; lowering it keeps the longer run (the table says
  which budget each row had);
- the seed, which has its own folder level (``seed-<n>/``);
- where and how fairseq writes and logs (save dir, log format and interval, data-loader workers, the
  interpreter's path), which do not change what is trained.
The identity is hashed; the short hash joins the readable slug in the run directory's name, so a config
that differs anywhere else (clip norm, betas, max_tokens, model sizes, ...) never lands in an existing run.

The data's identity (sha256 of the binarized dictionaries) is recorded beside it: a run trained on other
data is refused in one line rather than silently reused or silently continued.
"""

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HASH_CHARS = 8
# flag -> takes a value; left out of the identity (see the module docstring)
NOT_IDENTITY = {"--save-dir": True, "--max-update": True, "--max-epoch": True, "--seed": True,
                "--num-workers": True, "--log-interval": True, "--log-format": True, "--no-progress-bar": False,
                "--tensorboard-logdir": True}


def training_identity(argv: List[str]) -> List[str]:
    """The fairseq-train argv without the interpreter, the budget, the seed and the logging/IO flags."""
    args = list(argv)
    start = args.index("train") + 1 if "train" in args else 0  # [python, -m, normpos.fairseq_run, train, ...]
    out, i = [], start
    while i < len(args):
        flag = args[i]
        if flag in NOT_IDENTITY:
            i += 2 if NOT_IDENTITY[flag] else 1
            continue
        out.append(flag)
        i += 1
    return out


def identity_hash(argv: List[str]) -> str:
    text = json.dumps(training_identity(argv))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_fingerprint(data_bin: str) -> Optional[str]:
    """sha256 over the binarized data's dictionaries (they change whenever tokenization or BPE does)."""
    dicts = sorted(Path(data_bin).glob("dict.*.txt"))
    if not dicts:
        return None
    digest = hashlib.sha256()
    for path in dicts:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def budget(max_update: int, max_epoch: int) -> Dict[str, int]:
    return {"max_update": int(max_update or 0), "max_epoch": int(max_epoch or 0)}


def _more(asked: int, had: int) -> bool:
    """Is the asked limit beyond the one trained to? 0 means no limit."""
    if asked == had:
        return False
    return asked == 0 or (had != 0 and asked > had)


def compare_budget(asked: Dict[str, int], had: Dict[str, int]) -> Tuple[str, str]:
    """('same' | 'more' | 'less', words) comparing the budget asked now with the one a finished run had."""
    if asked == had:
        return "same", ""
    more = [k for k in asked if _more(asked[k], had.get(k, 0))]
    if more:
        return "more", ", ".join(f"{k} {had.get(k, 0)} -> {asked[k]}" for k in more)
    return "less", ", ".join(f"{k} {had.get(k, 0)} (asked {asked[k]})" for k in asked if asked[k] != had.get(k, 0))


def budget_words(b: Dict[str, int]) -> str:
    parts = [f"{b['max_update']} updates" if b.get("max_update") else "",
             f"{b['max_epoch']} epochs" if b.get("max_epoch") else ""]
    return " / ".join(p for p in parts if p) or "no limit"
