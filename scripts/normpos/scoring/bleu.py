r"""The scores a translation paper may print, each computed by the library that defines it.

- **Tokenized BLEU**: what IWSLT papers print and what ``fairseq-generate`` and ``fairseq-score`` compute:
  4-gram BLEU over the whitespace-split words of the Moses-tokenized, subword-removed text, no smoothing.
  It is computed with fairseq's own scorer (its C ``libbleu`` and a fresh ``Dictionary``), the code path of
  ``fairseq_cli/score.py``, so it equals ``fairseq-score`` exactly, including fairseq's rule that a
  reference ``<unk>`` never matches (sacreBLEU with ``tokenize="none"`` would let it match).
- **sacreBLEU**: on detokenized hypotheses (sacremoses, the Python port of Moses' ``detokenizer.perl``)
  against the untokenized references, reported with its signature. When the training text was lowercased
  (IWSLT14 and Multi30k here) the comparison must be lowercased too, and the signature then says ``case:lc``.
- **chrF++** (Popović 2017; sacreBLEU's ``CHRF(word_order=2)``, signature ``chrF2++``): character 6-grams
  plus word 1-2-grams, on the same detokenized text and references as sacreBLEU, lowercased likewise.
- **Compound-split BLEU** (WMT14 En-De; Vaswani et al. 2017; fairseq ``examples/scaling_nmt``): the rule of
  tensor2tensor's ``get_ende_bleu.sh`` and fairseq's ``compound_split_bleu.sh``, ``(\S)-(\S)`` ->
  ``\1 ##AT##-##AT## \2`` on hypotheses and references, then tokenized BLEU. The convention (t2t's script,
  whose numbers the Transformer papers print) applies it to text Moses-tokenized *without* ``-a``. Our WMT14
  recipe tokenizes with ``-a`` (``prepare-wmt14en2de.sh``), where every such hyphen is already the token
  ``@-@``; the rule would turn ``x @-@ y`` into ``x @ ##AT##-##AT## @ y``, two extra tokens that always match
  and inflate the score (by more than half a point on newstest2014: tests/test_scoring.py). So ``@-@`` is
  first joined back (``x @-@ y`` -> ``x-y``, exactly what tokenizing without ``-a`` leaves, since ``-a`` only
  splits a hyphen between two letters or digits), then the rule is applied. It is higher than plain
  tokenized BLEU and is always labelled as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from normpos.scoring.errors import ScoringError

ORDER = 4  # BLEU-4, as every paper compared here reports
COMPOUND = re.compile(r"(\S)-(\S)")  # compound_split_bleu.sh: perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'
# tokenizer.perl -a: s/([\p{IsAlnum}])\-(?=[\p{IsAlnum}])/$1 \@-\@ /g, undone between the two tokens it split
AGGRESSIVE_HYPHEN = re.compile(r"(?<=\S) @-@ (?=\S)")


@dataclass(frozen=True)
class TokenizedBleu:
    score: float
    precisions: tuple  # 1- to 4-gram precision, percent
    brevity_penalty: float
    sys_len: int
    ref_len: int
    text: str  # fairseq's result string, as fairseq-score prints it


@dataclass(frozen=True)
class SacreBleu:
    """A sacreBLEU metric's result (BLEU or chrF++): the score, its signature, and sacreBLEU's own line."""

    score: float
    signature: str  # e.g. nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0
    text: str


def _same_length(hyps: Sequence[str], refs: Sequence[str]) -> None:
    # fairseq-score zips the two files and silently drops the tail of the longer one; refuse instead.
    if len(hyps) != len(refs):
        raise ScoringError(f"{len(hyps)} hypotheses but {len(refs)} references: the files do not line up")


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str]) -> TokenizedBleu:
    """fairseq-score's BLEU of tokenized hypotheses against tokenized references, one pair per line."""
    from fairseq.data.dictionary import Dictionary
    from fairseq.scoring.bleu import BleuConfig, Scorer

    _same_length(hyps, refs)
    vocab = Dictionary()
    scorer = Scorer(BleuConfig(pad=vocab.pad(), eos=vocab.eos(), unk=vocab.unk()))
    for hyp, ref in zip(hyps, refs):
        hyp_ids = vocab.encode_line(hyp)
        ref_ids = vocab.encode_line(ref)
        scorer.add(ref_ids, hyp_ids)
    if scorer.stat.predlen == 0:  # fairseq divides by the hypothesis length; an all-empty output scores 0
        return TokenizedBleu(0.0, (0.0,) * ORDER, 0.0, 0, int(scorer.stat.reflen), "BLEU4 = 0.00 (empty output)")
    return TokenizedBleu(
        score=scorer.score(ORDER),
        precisions=tuple(100 * p for p in scorer.precision()[:ORDER]),
        brevity_penalty=scorer.brevity(),
        sys_len=int(scorer.stat.predlen),
        ref_len=int(scorer.stat.reflen),
        text=scorer.result_string(ORDER),
    )


def compound_split(line: str) -> str:
    """The line as get_ende_bleu.sh scores it: ``-a`` hyphens joined back, then the ``##AT##`` rule."""
    return COMPOUND.sub(r"\1 ##AT##-##AT## \2", AGGRESSIVE_HYPHEN.sub("-", line))


def compound_split_bleu(hyps: Sequence[str], refs: Sequence[str]) -> TokenizedBleu:
    """Tokenized BLEU after the compound-splitting rule on both sides (WMT14 En-De convention; see above)."""
    return tokenized_bleu([compound_split(h) for h in hyps], [compound_split(r) for r in refs])


def detokenize(lines: Sequence[str], lang: str) -> list:
    """Moses-detokenize tokenized text (undoing the ``&apos;``-style escapes too), one sentence per line."""
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang=lang)
    return [detok.detokenize(line.split()) for line in lines]


def sacre_bleu(hyps: Sequence[str], refs: Sequence[str], lowercase: bool) -> SacreBleu:
    """sacreBLEU (13a tokenization, default smoothing) of detokenized hypotheses against raw references."""
    from sacrebleu.metrics import BLEU

    _same_length(hyps, refs)
    metric = BLEU(lowercase=lowercase)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return SacreBleu(score=result.score, signature=str(metric.get_signature()), text=str(result))


def chrf_plus_plus(hyps: Sequence[str], refs: Sequence[str], lowercase: bool) -> SacreBleu:
    """chrF++ (sacreBLEU's CHRF with word_order=2) of detokenized hypotheses against raw references."""
    from sacrebleu.metrics import CHRF

    _same_length(hyps, refs)
    metric = CHRF(word_order=2, lowercase=lowercase)
    result = metric.corpus_score(list(hyps), [list(refs)])
    return SacreBleu(score=result.score, signature=str(metric.get_signature()), text=str(result))
