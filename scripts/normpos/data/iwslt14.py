"""IWSLT14 De->En with the semantics of fairseq's examples/translation/prepare-iwslt14.sh.

Source: ``de-en.tgz`` from the URL the script uses, or a local copy / unpacked folder (``--source``).
Identity (shared/data/PROVENANCE.md section 1): size 19,982,877 bytes is checked strictly; the md5
10936dfd... and git blob aa8c3f40... each come from a single public source, so a mismatch there only
warns. The members the recipe reads are checked strictly: the ten dev/test xml files by sha256 (their
tokenized text reproduces fairseq's own prepared test set, tests/test_data_iwslt14.py) and
train.tags.de-en.{de,en} by the git blobs of the public unpacked copy.

Steps, as in the script (Xiong et al. 2020 App. A.1 uses this data: 160,239 / 7,283 / 6,750 pairs):
1. train.tags.de-en.{de,en}: drop lines containing ``<url>``, ``<talkid>`` or ``<keywords>``; delete the
   ``<title>``, ``</title>``, ``<description>``, ``</description>`` tags (their text stays, as in fairseq);
   Moses tokenization; clean-corpus-n 1-175 ratio 1.5; lowercase;
2. valid = every 23rd cleaned pair (line numbers 23, 46, ...), train = the rest;
3. test = dev2010, TEDX.dev2012, tst2010, tst2011, tst2012 concatenated (6,750 pairs): the ``<seg>`` text
   (sgm.py), ``’`` -> ``'``, Moses tokenization, lowercase;
4. joint BPE, 10,000 merges learned on train.de + train.en, applied to every split (prepare.py).
The untokenized references are the matching raw lines: for valid the tag-stripped train line of each
kept pair (via clean-corpus-n's retained line numbers), for test the published ``<seg>`` text.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path

from normpos.data.clean import CleanRule, clean_corpus
from normpos.data.download import Identity, Resource
from normpos.data.textfiles import read_lines
from normpos.files import write_lines
from normpos.data.prepare import Context, Recipe, Text
from normpos.data.sgm import segments
from normpos.data.tokenize import MosesSpec

URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
ARCHIVE = Identity(size=19982877, md5="10936dfdf616504ddbd844e91b94ef4a",
                   git_blob="aa8c3f40f8836f1d43701448f94fe7e230082b4c", weak=frozenset({"md5", "git_blob"}),
                   note="PROVENANCE.md section 1")
# prepare-iwslt14.sh's test concatenation order.
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
             "IWSLT14.TED.tst2012")
XML_SHA256 = {  # PROVENANCE.md section 1
    "IWSLT14.TED.dev2010.de-en.de.xml": "6bb2e8272bc49a4f19df2150a482a1b856fa6a2d6b289d3a80ac6b4ff66070fe",
    "IWSLT14.TED.dev2010.de-en.en.xml": "5c860ebb64d4ecdc65800c7ba59732d27cff8b296fa7eeafbcd4614a2c572700",
    "IWSLT14.TED.tst2010.de-en.de.xml": "5648c0a3a6e5eb3ab6fbdfbdeca69a20a1637a37361e337ab47418d71972880d",
    "IWSLT14.TED.tst2010.de-en.en.xml": "fa9ce190959320cb5a5a68358ad793e5863621f87a28e9f4312110ac5b842efc",
    "IWSLT14.TED.tst2011.de-en.de.xml": "a70163216273ab5622cbbb19fea6dfde42ab6d3ad70374444323e65f71837735",
    "IWSLT14.TED.tst2011.de-en.en.xml": "d350eac4cb6f0cf3e787c9e82b8074bdc7e58c4ca7d650c9b97de8a677068695",
    "IWSLT14.TED.tst2012.de-en.de.xml": "edf69bd9e41acd93e13d01f55a2906b7be0f69cd90a46e343294dfd3190db952",
    "IWSLT14.TED.tst2012.de-en.en.xml": "cd73e997ce078699863278daef06b9a226d1adbec4c3cac91a0894d7eab5c1f8",
    "IWSLT14.TEDX.dev2012.de-en.de.xml": "e818a77a43e18ec4726a698e5aa9c438e0cd4b82d4edd27286163bee44e85604",
    "IWSLT14.TEDX.dev2012.de-en.en.xml": "a5de03e0e18cf5ad4b2b4ba66f11510a8576fa1a7c172190860cabfd17bff99a",
}
TRAIN_BLOBS = {  # git blobs of the unpacked archive in fairseq PR #3553's tree (PROVENANCE.md section 1)
    "train.tags.de-en.de": "41272b9c39682b4203f9026013568659e43c4944",
    "train.tags.de-en.en": "d2f9bcf958aa81517677e1468fd35a3240229808",
}
MEMBERS = {f"de-en/{name}": Identity(sha256=sha) for name, sha in XML_SHA256.items()}
MEMBERS.update({f"de-en/{name}": Identity(git_blob=blob) for name, blob in TRAIN_BLOBS.items()})
RESOURCE = Resource("de-en.tgz", URL, ARCHIVE, MEMBERS)
CLEAN = CleanRule(min_words=1, max_words=175, ratio=1.5)
VALID_EVERY = 23
_DROP = ("<url>", "<talkid>", "<keywords>")
_STRIP = ("<title>", "</title>", "<description>", "</description>")


def train_raw_lines(path: Path) -> Iterator[str]:
    """The script's ``grep -v '<url>' | grep -v '<talkid>' | grep -v '<keywords>' | sed`` on a train file."""
    for line in read_lines(path):
        if any(tag in line for tag in _DROP):
            continue
        for tag in _STRIP:
            line = line.replace(tag, "")
        yield line


def test_xml_files(folder_or_paths, lang: str) -> list[Path]:
    """The five test xml files of one language, in the script's concatenation order."""
    if isinstance(folder_or_paths, dict):
        return [folder_or_paths[f"de-en/{s}.de-en.{lang}.xml"] for s in TEST_SETS]
    return [Path(folder_or_paths) / f"{s}.de-en.{lang}.xml" for s in TEST_SETS]


def test_segments(xml_files: list[Path], replace_rsquo: bool = True) -> Iterator[str]:
    return chain.from_iterable(segments(p, replace_rsquo=replace_rsquo) for p in xml_files)


def moses_spec(lang: str) -> MosesSpec:
    return MosesSpec(lang, lowercase=True)  # tokenizer.perl -l $l, then lowercase.perl


class Iwslt14(Recipe):
    name, src, tgt = "iwslt14", "de", "en"
    default_vocab = {"bpe": 10000, "sentencepiece": 10000}

    def resources(self, options):
        return [RESOURCE]

    def train_resources(self, options):
        return [RESOURCE.filename]

    def build_text(self, ctx: Context) -> Text:
        work, out, langs = ctx.work, ctx.out, (self.src, self.tgt)
        members = ctx.fetched[RESOURCE.filename].paths
        for lang in langs:
            raw, tok = work / f"train.tags.raw.{lang}", work / f"train.tags.tok.{lang}"
            ctx.step([raw], lambda: write_lines(raw, train_raw_lines(members[f"de-en/train.tags.de-en.{lang}"])),
                     f"stripping the tag lines of train.tags.de-en.{lang}")
            ctx.step([tok], lambda: ctx.tokenize_file(raw, moses_spec(lang), tok), f"tokenizing train.{lang}")

        clean = {lang: work / f"train.tags.clean.{lang}" for lang in langs}
        retained, stats = work / "train.tags.retained", ctx.stats_file(work, "clean")

        def run_clean():
            n_in, n_out = clean_corpus(work / f"train.tags.tok.{self.src}", work / f"train.tags.tok.{self.tgt}",
                                       clean[self.src], clean[self.tgt], CLEAN, lines_retained=retained)
            ctx.write_stats(stats, {"rule": CLEAN.__dict__, "input_pairs": n_in, "output_pairs": n_out})
        ctx.step([*clean.values(), retained, stats], run_clean, f"cleaning train (clean-corpus-n {CLEAN})")

        tok = {"train": {}, "valid": {}, "test": {}}
        ref = {"valid": {}, "test": {}}
        for lang in langs:
            tok["train"][lang], tok["valid"][lang] = work / f"train.{lang}", work / f"valid.{lang}"
            ref["valid"][lang] = work / f"ref-valid.{lang}"
            ctx.step([tok["train"][lang], tok["valid"][lang], ref["valid"][lang]],
                     lambda: _split_valid(clean[lang], retained, work / f"train.tags.raw.{lang}", tok["train"][lang],
                                          tok["valid"][lang], ref["valid"][lang]),
                     f"splitting valid (every {VALID_EVERY}th pair) from train.{lang}")
            xml = test_xml_files(members, lang)
            tok["test"][lang], ref["test"][lang] = out / "tok" / f"test.{lang}", out / "ref" / f"test.{lang}"
            ctx.step([tok["test"][lang]], lambda: ctx.tokenize(test_segments(xml), moses_spec(lang), tok["test"][lang]),
                     f"tokenizing test.{lang}")
            ctx.step([ref["test"][lang]], lambda: write_lines(ref["test"][lang], test_segments(xml, replace_rsquo=False)),
                     f"untokenized reference test.{lang}")
        return Text(tok, ref)


def _split_valid(clean: Path, retained: Path, raw: Path, train: Path, valid: Path, ref_valid: Path) -> None:
    """awk 'NR%23==0' -> valid, 'NR%23!=0' -> train; the raw line of each valid pair -> ref_valid."""
    valid_raw_numbers = {int(n) for i, n in enumerate(read_lines(retained), 1) if i % VALID_EVERY == 0}
    write_lines(ref_valid, (line for i, line in enumerate(read_lines(raw), 1) if i in valid_raw_numbers))
    write_lines(valid, (line for i, line in enumerate(read_lines(clean), 1) if i % VALID_EVERY == 0))
    write_lines(train, (line for i, line in enumerate(read_lines(clean), 1) if i % VALID_EVERY != 0))


RECIPE = Iwslt14()
