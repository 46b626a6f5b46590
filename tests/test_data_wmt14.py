"""WMT14 En-De: newstest extraction against published checksums, and the recipe end to end.

The training corpora (Europarl v7, Common Crawl, News Commentary v9) are not available offline; the
end-to-end tests give the pipeline archives with the official member paths that hold real news text
(newstest2013), so the fetch/unpack/normalize/tokenize/BPE/clean/binarize path runs for real.
"""

import json
import re

import pytest

from conftest import shared_data
from normpos.data import wmt14
from normpos.data.errors import DataError
from normpos.data.textfiles import hash_file, read_lines, text_hash
from normpos.data.prepare import prepare
from normpos.data.sgm import segments
from normpos.data.tokenize import MosesLine
from test_data_download import leftovers, make_tgz


def test_newstest2014_full_extraction_matches_published_md5():
    full = shared_data("wmt14", "test-full")
    de = list(segments(full / "newstest2014-deen-ref.de.sgm", replace_rsquo=False))
    assert len(de) == 3003
    # PROVENANCE.md section 3: MLPerf/NVIDIA references expect newstest2014.de with this md5.
    assert text_hash(de) == "f6c3818b477e4a25cad68b61cc883c17"
    assert list(segments(full / "newstest2014-deen-src.de.sgm", replace_rsquo=False)) == de
    en = list(segments(full / "newstest2014-deen-src.en.sgm", replace_rsquo=False))
    assert text_hash(en) == "f2dc7375e8425d2d08971b8b89fdcd4e"
    # tensorflow/models' newstest2014.en is the same text with whitespace runs collapsed.
    assert text_hash(" ".join(x.split()) for x in en) == "dabf51a9c02b2235632f3cee75c72d49"
    assert (wmt14.TEXT_HASH[("full", "de")][1], wmt14.TEXT_HASH[("full", "en")][1]) == (
        "f6c3818b477e4a25cad68b61cc883c17", "f2dc7375e8425d2d08971b8b89fdcd4e")


def test_newstest2013_extraction_equals_the_official_plain_text():
    folder = shared_data("wmt13", "newstest2013")
    expected = {"de": "d7ea35ab91ff3709e03ad9cb6bf5b4f2cc775cd2d72efd5254c4aec5e69663ca",
                "en": "ace268a1d9724ca76f6d8e5c720ffdc08f01bdce45630ed8b269dc7918e1c16e"}
    for lang, sha in expected.items():
        lines = list(segments(folder / f"newstest2013-src.{lang}.sgm", replace_rsquo=False))
        assert len(lines) == 3000
        assert text_hash(lines, "sha256") == sha == hash_file(folder / f"newstest2013.{lang}")["sha256"]
        assert wmt14.TEXT_HASH[("newstest2013", lang)] == ("sha256", sha)


def test_newstest2014_filtered_has_2737_segments():
    folder = shared_data("wmt14", "newstest2014-official-submissions")
    for name in ("newstest2014-deen-src.en.sgm", "newstest2014-deen-ref.de.sgm"):
        assert len(list(segments(folder / name))) == 2737


def test_test_set_urls_and_md5_are_sacrebleus():
    from sacrebleu.dataset import DATASETS

    for key, resource in (("wmt13", wmt14.NEWSTEST2013), ("wmt14/full", wmt14.NEWSTEST2014["full"]),
                          ("wmt14", wmt14.NEWSTEST2014["filtered"])):
        assert DATASETS[key].data == [resource.url] and DATASETS[key].md5 == [resource.identity.md5]
        members = set(resource.members)
        pairs = DATASETS[key].langpairs
        assert members <= {p for pair in pairs.values() for p in pair}, key


def test_train_side_uses_perl_parity_normalization():
    en = MosesLine(wmt14.train_spec("en"))
    # normalize-punctuation.perl maps a free-standing ’ to " (sacremoses' default gives '), keeps It’s
    # as It's; tokenizer.perl -a splits hyphens as @-@ and escapes quotes.
    assert en("“well-known” ’quote’ It’s") == "&quot; well @-@ known &quot; &quot; quote &quot; It &apos;s"
    # remove-non-printing-char.perl turns a control character into a space, it does not join the words.
    assert en("a\u200bb") == "a b"
    # The test side gets only the ’ fix and -a tokenization, as in prepare-wmt14en2de.sh.
    assert MosesLine(wmt14.eval_spec("en"))("“well-known”") == "“ well @-@ known ”"


def _train_archives(folder, lines: dict, short_en: int = 0):
    """The three training archives with their official member paths, holding slices of real text."""
    cuts = {"europarl": (0, 600), "commoncrawl": (600, 1200), "nc": (1200, 1800)}
    for resource, (a, b) in zip(wmt14.TRAIN, cuts.values()):
        members = {}
        for member in resource.members:
            lang = member.rsplit(".", 1)[1]
            chunk = lines[lang][a:b]
            if short_en and lang == "en" and resource is wmt14.TRAIN[-1]:
                chunk = chunk[:-short_en]
            members[member] = "".join(x + "\n" for x in chunk).encode("utf-8")
        make_tgz(folder / resource.filename, members)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    plain = shared_data("wmt13", "newstest2013")
    lines = {lang: list(read_lines(plain / f"newstest2013.{lang}")) for lang in ("de", "en")}
    folder = _train_archives(tmp_path_factory.mktemp("wmt-src"), lines)
    return [str(folder), str(plain)]


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("wmt-out")
    full = str(shared_data("wmt14", "test-full"))
    return prepare(wmt14.RECIPE, sources=[*sources, full], out_root=out, workers=2, vocab=500)


def test_pipeline_end_to_end(prepared):
    folder = prepared
    assert folder.name == "bpe500"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["options"]["test"] == "full" and (m["options"]["source_lang"], m["options"]["target_lang"]) == ("en", "de")
    # Direction en->de, as fairseq-preprocess names the binary files.
    assert (folder / "bin" / "train.en-de.en.bin").is_file() and (folder / "bin" / "test.en-de.de.idx").is_file()
    assert m["counts"]["valid"]["en"]["subword"]["lines"] == 3000
    assert m["counts"]["test"]["de"]["subword"]["lines"] == 3003
    assert text_hash(read_lines(folder / "ref" / "test.de")) == "f6c3818b477e4a25cad68b61cc883c17"
    # Training text: normalized, aggressive hyphen splitting, cased (no lowercasing for WMT14).
    train_tok = (folder.parent / "work" / "train.en").read_text(encoding="utf-8")
    assert " @-@ " in train_tok and re.search(r"\b[A-Z]", train_tok)
    clean = m["steps"]["clean_after_subword"]
    assert clean["input_pairs"] == 1800 and clean["output_pairs"] == m["counts"]["train"]["en"]["subword"]["lines"]
    assert clean["rule"] == {"min_words": 1, "max_words": 250, "ratio": 1.5}
    # Europarl and Common Crawl have third-party sha256 values: a mismatch is recorded, not refused.
    europarl = next(s for s in m["sources"] if s["name"] == "training-parallel-europarl-v7.tgz")
    assert europarl["checks"]["sha256"].startswith("MISMATCH")
    assert not list(folder.parent.glob(".*partial"))


def test_other_options_go_to_their_own_folder_and_reuse_the_tokenized_train(prepared, sources, capsys):
    # sentencepiece instead of BPE, and the filtered newstest2014 (2,737 segments).
    filtered = str(shared_data("wmt14", "newstest2014-official-submissions"))
    folder = prepare(wmt14.RECIPE, sources=[*sources, filtered], out_root=prepared.parent.parent, workers=2,
                     subword_kind="sentencepiece", vocab=300, test="filtered")
    assert folder.name == "spm300-filtered" and (prepared / "manifest.json").is_file()
    assert "done already, reusing train.en" in capsys.readouterr().err
    m = json.loads((folder / "manifest.json").read_text())
    assert m["counts"]["test"]["en"]["subword"]["lines"] == 2737 and m["options"]["test"] == "filtered"
    assert (folder / "spm.model").is_file() and "\u2581" in (folder / "valid.de").read_text(encoding="utf-8")
    assert not (folder / "code").exists()


def test_force_rebuilds_a_folder_made_otherwise_and_a_killed_run_resumes(prepared, sources, capsys, monkeypatch):
    import normpos.data.prepare as prepare_module

    root = prepared.parent.parent
    manifest = prepared / "manifest.json"
    m = json.loads(manifest.read_text())
    m["options"]["vocab"] = 400
    manifest.write_text(json.dumps(m))
    args = dict(sources=[*sources, str(shared_data("wmt14", "test-full"))], out_root=root, workers=2, vocab=500)
    with pytest.raises(DataError, match=r"other options \(vocab: 400 -> 500\).*--force"):
        prepare(wmt14.RECIPE, **args)

    def killed(*_, **__):
        raise DataError("killed while binarizing")
    monkeypatch.setattr(prepare_module, "binarize", killed)
    with pytest.raises(DataError, match="killed"):
        prepare(wmt14.RECIPE, force=True, **args)
    # The old folder is untouched until the new one is complete; the finished steps are kept.
    assert json.loads(manifest.read_text())["options"]["vocab"] == 400
    assert (root / "wmt14" / ".bpe500.partial" / "code").is_file()
    monkeypatch.undo()
    capsys.readouterr()
    assert prepare(wmt14.RECIPE, force=True, **args) == prepared
    assert "done already, reusing code" in capsys.readouterr().err
    assert json.loads(manifest.read_text())["options"]["vocab"] == 500
    assert (prepared / "bin" / "dict.en.txt").is_file() and not (root / "wmt14" / ".bpe500.partial").exists()


def test_misaligned_corpus_names_files_and_counts(tmp_path):
    plain = shared_data("wmt13", "newstest2013")
    lines = {lang: list(read_lines(plain / f"newstest2013.{lang}")) for lang in ("de", "en")}
    (tmp_path / "src").mkdir()
    folder = _train_archives(tmp_path / "src", lines, short_en=1)
    sources = [str(folder), str(plain), str(shared_data("wmt14", "test-full"))]
    with pytest.raises(DataError, match=r"news-commentary-v9.de-en.en has 599 lines, .*news-commentary-v9.de-en.de has 600"):
        prepare(wmt14.RECIPE, sources=sources, out_root=tmp_path / "data", workers=2, vocab=500)
    work = tmp_path / "data" / "wmt14" / "work"
    assert [p for p in leftovers(work) if p != "stamp.json"] == []
