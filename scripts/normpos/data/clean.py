"""Moses ``clean-corpus-n.perl -ratio R CORPUS L1 L2 OUT MIN MAX [LINES_RETAINED]`` on a parallel corpus.

The rules, in the perl script's order (mosesdecoder scripts/training/clean-corpus-n.perl):
1. ``|`` is deleted from both sides unless the first line pair contains one (then it is a factored corpus);
2. whitespace runs become one space, leading/trailing space is dropped (this normalised text is written);
3. a pair is dropped if either side is empty, has more than MAX or fewer than MIN space-separated words,
   if words(l1)/words(l2) or words(l2)/words(l1) exceeds the ratio, or if a side has a run of more than
   1000 characters without space or ``|`` (max-word-length);
4. the corpus must have the same number of lines on both sides (the perl script dies otherwise).
IWSLT14 and Multi30k use MIN=1 MAX=175 ratio 1.5 (prepare-iwslt14.sh); WMT14 uses MIN=1 MAX=250
ratio 1.5 after BPE (prepare-wmt14en2de.sh).
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from normpos.data.errors import DataError
from normpos.data.textfiles import count_lines, open_text, read_lines
from normpos.files import atomic_output

# Perl's \s on a UTF-8 string is the Unicode White_Space set; Python's \s differs on a few control
# characters (\x1c-\x1f count as space in Python only), so the set is written out.
_PERL_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACES = re.compile(f"[{_PERL_SPACE}]+")
MAX_WORD_LENGTH = 1000
_LONG_WORD = re.compile(f"[^{_PERL_SPACE}|]{{{MAX_WORD_LENGTH + 1}}}")


@dataclass(frozen=True)
class CleanRule:
    min_words: int = 1
    max_words: int = 175
    ratio: float = 1.5


def _normalise(line: str, factored: bool) -> str:
    if not factored:
        line = line.replace("|", "")
    return _SPACES.sub(" ", line).strip(" ")


def check_parallel(src: Path, tgt: Path) -> int:
    """Line count of a parallel pair of files; DataError naming both files and counts if they differ."""
    n_src, n_tgt = count_lines(src), count_lines(tgt)
    if n_src != n_tgt:
        raise DataError(f"parallel files differ in length: {src} has {n_src} lines, {tgt} has {n_tgt}")
    return n_src


def keep(src: str, tgt: str, rule: CleanRule) -> bool:
    """Whether clean-corpus-n keeps a (normalised) pair."""
    if not src or not tgt:
        return False
    ns, nt = src.count(" ") + 1, tgt.count(" ") + 1
    if not (rule.min_words <= ns <= rule.max_words and rule.min_words <= nt <= rule.max_words):
        return False
    if ns / nt > rule.ratio or nt / ns > rule.ratio:
        return False
    return not (_LONG_WORD.search(src) or _LONG_WORD.search(tgt))


def clean_corpus(src: Path, tgt: Path, out_src: Path, out_tgt: Path, rule: CleanRule,
                 lines_retained: Path | None = None) -> tuple[int, int]:
    """Filter a parallel corpus; return (input pairs, output pairs). Outputs are written atomically.

    ``lines_retained`` gets the 1-based input line number of every kept pair (the perl script's optional
    7th argument), which lets the caller pick the matching untokenized lines for references.
    """
    check_parallel(src, tgt)
    n_in = n_out = 0
    factored = None
    with ExitStack() as stack:
        fs = stack.enter_context(open_text(stack.enter_context(atomic_output(out_src)), "w"))
        ft = stack.enter_context(open_text(stack.enter_context(atomic_output(out_tgt)), "w"))
        fr = (stack.enter_context(open(stack.enter_context(atomic_output(lines_retained)), "w"))
              if lines_retained else None)
        for s, t in zip(read_lines(src), read_lines(tgt)):
            n_in += 1
            if factored is None:
                factored = "|" in s or "|" in t
            s, t = _normalise(s, factored), _normalise(t, factored)
            if keep(s, t, rule):
                n_out += 1
                fs.write(s + "\n")
                ft.write(t + "\n")
                if fr:
                    fr.write(f"{n_in}\n")
    return n_in, n_out
