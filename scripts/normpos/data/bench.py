"""``bench-prep``: throughput of our tokenize + BPE path against a plain serial loop, and projected prep times.

Corpus: real text scaled to IWSLT14's training size. The raw ``<seg>`` text of the five IWSLT14 dev/test
sets (6,750 lines per language, from ../shared/data) is repeated to 174,443 lines per language, the
number of raw training lines prepare-iwslt14.sh reads ("Input sentences: 174443"). BPE uses the real
IWSLT14 ``code`` (10,000 merges) that fairseq's recipe produced.

- ours: ``parallel.transform_file`` on all cores, file to file: Moses tokenization + lowercasing, then
  ``apply_bpe`` (prepare.py's path);
- baseline: one process, one loop, the same tokenizer and BPE objects, file to file (what a plain
  script does). Both write the same bytes; the run checks that.

Projections: IWSLT14 = tokenize + BPE of its 2 x 174,443 lines at our measured rate + BPE learning
(10,000 merges, measured on the benchmark corpus) + cleaning + fairseq-preprocess (measured on the
benchmark corpus). The repeated corpus has far fewer word types than the real training text, so the
learning time is a lower bound. WMT14 = its 2 x 4.5M lines at our rate for WMT's steps (punctuation
normalization + aggressive-hyphen tokenization, measured on newstest2013/2014 text) + BPE application
and binarizing at the measured per-token rates; learning 40,000 merges on WMT14 is not projected
(it cannot be measured without the corpus; subword-nmt's merge loop is serial).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

from normpos.data import iwslt14, wmt14
from normpos.data.binarize import binarize
from normpos.data.clean import clean_corpus
from normpos.data.errors import DataError
from normpos.data.textfiles import count_lines, cpu_count, open_text, read_lines, shared_data_dir
from normpos.files import write_lines
from normpos.data.manifest import file_counts
from normpos.data.parallel import transform_file
from normpos.data.sgm import segments
from normpos.data.subword import Encoder, SubwordSpec, learn
from normpos.data.tokenize import MosesLine

IWSLT14_TRAIN_LINES = 174_443  # raw lines per language read by prepare-iwslt14.sh
IWSLT14_EVAL_LINES = 6_750  # the test set; valid comes out of train
WMT14_TRAIN_LINES = 4_500_000  # "about 4.5M sentence pairs" (Vaswani et al. 2017; Xiong et al. 2020 sec. 4)
WMT14_EVAL_LINES = 3_000 + 3_003
LANGS = ("de", "en")


def _repeat(lines: list[str], n: int):
    return itertools.islice(itertools.cycle(lines), n)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _serial(raw: Path, out: Path, lang: str, code_dir: Path) -> None:
    tok, bpe = MosesLine(iwslt14.moses_spec(lang)), Encoder("bpe", code_dir)
    with open_text(out, "w") as f:
        for line in read_lines(raw):
            f.write(bpe(tok(line)) + "\n")


def run_bench(lines: int | None = None, workers: int | None = None) -> dict:
    workers = workers or cpu_count()
    n = lines or IWSLT14_TRAIN_LINES
    shared = shared_data_dir()
    xml_dir, code_dir = shared / "iwslt14" / "de-en", shared / "iwslt14" / "fairseq-prepared-partial"
    if not (code_dir / "code").is_file():
        raise DataError(f"bench needs the staged IWSLT14 data: {code_dir / 'code'} is missing "
                        "(set NORMPOS_SHARED_DATA to the shared/data folder)")
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="normpos-bench-") as tmp:
        tmp = Path(tmp)
        for lang in LANGS:
            real = list(iwslt14.test_segments(iwslt14.test_xml_files(xml_dir, lang), replace_rsquo=False))
            write_lines(tmp / f"raw.{lang}", _repeat(real, n))
        say(f"benchmark corpus: {n:,} lines per language (IWSLT14 dev/test text repeated), {workers} workers")

        t_steps = {"tokenize": 0.0, "bpe": 0.0}

        def ours():
            for lang in LANGS:
                t_steps["tokenize"] += _timed(lambda: transform_file(
                    MosesLine(iwslt14.moses_spec(lang)), tmp / f"raw.{lang}", tmp / f"tok.{lang}", workers,
                    f"ours: tokenize {lang}"))
                t_steps["bpe"] += _timed(lambda: transform_file(
                    Encoder("bpe", code_dir), tmp / f"tok.{lang}", tmp / f"ours.{lang}", workers, f"ours: bpe {lang}"))

        def serial():
            for lang in LANGS:
                _serial(tmp / f"raw.{lang}", tmp / f"serial.{lang}", lang, code_dir)

        t_ours = _timed(ours)
        say(f"ours: {t_ours:.1f} s; running the serial baseline")
        t_serial = _timed(serial)
        for lang in LANGS:
            if (tmp / f"ours.{lang}").read_bytes() != (tmp / f"serial.{lang}").read_bytes():
                raise AssertionError(f"parallel and serial outputs differ for {lang}")
        sentences = 2 * n
        words = sum(file_counts(tmp / f"tok.{lang}")["tokens"] for lang in LANGS)

        say("measuring the other IWSLT14 steps on the benchmark corpus: clean, learn BPE, binarize")
        t_clean = _timed(lambda: clean_corpus(tmp / "tok.de", tmp / "tok.en", tmp / "clean.de", tmp / "clean.en",
                                              iwslt14.CLEAN))
        learn_dir = tmp / "learn"
        learn_dir.mkdir()
        t_learn = _timed(lambda: learn(SubwordSpec("bpe", 10000), [tmp / "clean.de", tmp / "clean.en"],
                                       learn_dir, workers))
        bin_text = tmp / "bintext"
        bin_text.mkdir()
        for lang in LANGS:
            (bin_text / f"train.{lang}").symlink_to(tmp / f"ours.{lang}")
            for split in ("valid", "test"):
                write_lines(bin_text / f"{split}.{lang}", itertools.islice(read_lines(tmp / f"ours.{lang}"), 1000))
        t_bin = _timed(lambda: binarize("de", "en", bin_text, tmp / "bin", workers))

        say("measuring WMT14's tokenization (normalize + -a) on newstest2013/2014 text")
        wmt_lines = min(n, 60_000)
        wmt_real = {"en": list(segments(shared / "wmt14" / "test-full" / "newstest2014-deen-src.en.sgm"))
                    + list(segments(shared / "wmt13" / "newstest2013" / "newstest2013-src.en.sgm")),
                    "de": list(segments(shared / "wmt14" / "test-full" / "newstest2014-deen-ref.de.sgm"))
                    + list(segments(shared / "wmt13" / "newstest2013" / "newstest2013-src.de.sgm"))}
        t_wmt_tok, wmt_tokens = 0.0, 0
        for lang in ("en", "de"):
            write_lines(tmp / f"wmt.{lang}", _repeat(wmt_real[lang], wmt_lines))
            t_wmt_tok += _timed(lambda: transform_file(MosesLine(wmt14.train_spec(lang)), tmp / f"wmt.{lang}",
                                                       tmp / f"wmt.tok.{lang}", workers, f"wmt tokenize {lang}"))
            wmt_tokens += file_counts(tmp / f"wmt.tok.{lang}")["tokens"]
        assert count_lines(tmp / "wmt.tok.en") == wmt_lines

    rate_ours, rate_serial = sentences / t_ours, sentences / t_serial
    iwslt_lines = 2 * (IWSLT14_TRAIN_LINES + IWSLT14_EVAL_LINES)
    iwslt = {"tokenize+bpe": iwslt_lines / rate_ours, "clean": t_clean * IWSLT14_TRAIN_LINES / n,
             "learn bpe (lower bound)": t_learn, "binarize": t_bin * IWSLT14_TRAIN_LINES / n}
    # WMT14 lines are longer than TED lines: BPE and binarizing are scaled by words, not lines.
    wmt_all = 2 * (WMT14_TRAIN_LINES + WMT14_EVAL_LINES)
    wmt_words = wmt_all * wmt_tokens / (2 * wmt_lines)
    wmt = {"normalize+tokenize": wmt_all * t_wmt_tok / (2 * wmt_lines),
           "apply bpe": t_steps["bpe"] * wmt_words / words,
           "clean": t_clean * wmt_words / words,
           "binarize": t_bin * wmt_words / words}
    result = {"load_average": os.getloadavg(), "workers": workers, "sentences": sentences, "ours_s": t_ours, "serial_s": t_serial,
              "ours_steps_s": t_steps,
              "ours_sent_per_s": rate_ours, "serial_sent_per_s": rate_serial, "speedup": rate_ours / rate_serial,
              "iwslt14_projection_s": iwslt, "wmt14_projection_s": wmt}
    _report(result)
    return result


def _fmt(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 600 else f"{seconds / 60:,.1f} min"


def _report(r: dict) -> None:
    print(f"tokenize+lowercase+BPE on {r['sentences']:,} sentences (IWSLT14 train size, both languages), "
          f"{r['workers']} workers:")
    print(f"  ours (parallel, streaming): {r['ours_sent_per_s']:,.0f} sentences/s ({r['ours_s']:.1f} s)")
    print(f"  serial baseline:            {r['serial_sent_per_s']:,.0f} sentences/s ({r['serial_s']:.1f} s)")
    print(f"  speedup: {r['speedup']:.2f}x (identical output); load average during the run "
          f"{'/'.join(f'{x:.1f}' for x in r['load_average'])} on {cpu_count()} cores")
    for name, key in (("IWSLT14", "iwslt14_projection_s"), ("WMT14", "wmt14_projection_s")):
        parts = r[key]
        total = sum(parts.values())
        detail = ", ".join(f"{k} {_fmt(v)}" for k, v in parts.items())
        extra = " + learning 40K BPE merges (not projected)" if name == "WMT14" else ""
        print(f"projected full {name} preparation on this machine: {_fmt(total)}{extra} ({detail})")
