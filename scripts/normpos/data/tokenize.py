"""Moses preprocessing of one line, as the recipes' perl pipelines do it, with sacremoses.

fairseq's recipes pipe text through Moses perl scripts; each maps to a sacremoses call here:

- ``normalize-punctuation.perl $l`` (WMT14 train only): ``MosesPunctNormalizer(l, perl_parity=True)``;
  ``perl_parity`` keeps the perl script's ``’`` -> ``"`` mapping, which sacremoses changes by default;
- ``remove-non-printing-char.perl`` (WMT14 train only): every ``\\p{C}`` character becomes a space; this is
  the whole perl script (sacremoses' ``remove_control_chars`` deletes them instead, which joins words);
- ``tokenizer.perl -l $l [-a]``: ``MosesTokenizer(l).tokenize(escape=True, aggressive_dash_splits=a)``;
  the perl script's default escaping of ``& | < > ' " [ ]`` is kept, as in fairseq's data;
- ``lowercase.perl`` (IWSLT14, Multi30k): ``str.lower()``. It is applied here, right after tokenization,
  although the IWSLT recipe lowercases after clean-corpus-n: cleaning only counts space-separated words,
  which lowercasing does not change, so the order does not matter and one pass over the text is saved.

One rule is added to sacremoses (see :class:`PerlTokenizer`): since mosesdecoder PR #204 (2018),
tokenizer.perl splits the period off the last word of a line unconditionally ("art." -> "art ."), and
fairseq's recipes clone the current perl script; sacremoses keeps the old behaviour on purpose
(sacremoses issues #21 and #97). Without the rule 31 of the 13,500 IWSLT14 test lines differ from
fairseq's own prepared files; with it none do (tests/test_data_iwslt14.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import regex
from sacremoses import MosesPunctNormalizer, MosesTokenizer


@dataclass(frozen=True)
class MosesSpec:
    """Which Moses steps to run on a line, in the recipe's order."""

    lang: str
    aggressive_dash_splits: bool = False  # tokenizer.perl -a (WMT14)
    normalize_punctuation: bool = False  # normalize-punctuation.perl + remove-non-printing-char.perl (WMT14)
    lowercase: bool = False  # lowercase.perl (IWSLT14, Multi30k)


_NON_PRINTING = regex.compile(r"\p{C}")


class PerlTokenizer(MosesTokenizer):
    r"""sacremoses' Moses tokenizer with tokenizer.perl's current last-word rule (mosesdecoder PR #204).

    In the perl script, a last word matching ``^(\S+)\.$`` is split before any non-breaking-prefix
    test ("split last words independently as they are unlikely to be non-breaking prefixes"); at this
    stage multi-dots are still ``DOTMULTI`` markers, so "..." is not affected, as in perl.
    """

    def handles_nonbreaking_prefixes(self, text: str) -> str:
        text = super().handles_nonbreaking_prefixes(text)
        head, _, last = text.rpartition(" ")
        if len(last) > 1 and last.endswith("."):
            return f"{head} {last[:-1]} ." if head else f"{last[:-1]} ."
        return text


class MosesLine:
    """Picklable callable ``line -> processed line``; builds its sacremoses objects on first use per process."""

    def __init__(self, spec: MosesSpec):
        self.spec = spec
        self._tok = self._norm = None

    def __getstate__(self):
        return {"spec": self.spec}

    def __setstate__(self, state):
        self.__init__(state["spec"])

    def __call__(self, line: str) -> str:
        spec = self.spec
        if self._tok is None:
            self._tok = PerlTokenizer(lang=spec.lang)
            if spec.normalize_punctuation:
                self._norm = MosesPunctNormalizer(lang=spec.lang, perl_parity=True)
        if spec.normalize_punctuation:
            line = _NON_PRINTING.sub(" ", self._norm.normalize(line))
        out = self._tok.tokenize(line, aggressive_dash_splits=spec.aggressive_dash_splits, return_str=True,
                                 escape=True)
        return out.lower() if spec.lowercase else out
