"""The per-line steps on their own: clean-corpus-n rules, parallel map order, segment extraction."""

import pytest

from normpos.data.clean import CleanRule, check_parallel, clean_corpus, keep
from normpos.data.errors import DataError
from normpos.data.textfiles import count_lines, read_lines
from normpos.files import atomic_output, write_lines
from normpos.data.parallel import map_lines
from normpos.data.sgm import segments

IWSLT = CleanRule(1, 175, 1.5)


def test_clean_rules_of_clean_corpus_n():
    assert keep("a b", "c d e", IWSLT)  # 3/2 = 1.5 is not above the ratio
    assert not keep("a b", "c d e f", IWSLT)  # 2.0 > 1.5
    assert not keep("", "a", IWSLT)
    assert not keep(" ".join(["w"] * 176), " ".join(["w"] * 176), IWSLT)
    assert keep(" ".join(["w"] * 175), " ".join(["w"] * 175), IWSLT)
    assert not keep("x" * 1001, "y" * 1001, IWSLT)  # max-word-length 1000
    assert keep("x" * 1000, "y" * 1000, IWSLT)


def test_clean_corpus_normalizes_and_keeps_line_numbers(tmp_path):
    write_lines(tmp_path / "c.de", ["ein  Haus ", "", "a|b c", "eins zwei drei vier", "gut"])
    write_lines(tmp_path / "c.en", ["a house", "x", "ab c", "one", "good"])
    n_in, n_out = clean_corpus(tmp_path / "c.de", tmp_path / "c.en", tmp_path / "o.de", tmp_path / "o.en", IWSLT,
                               lines_retained=tmp_path / "kept")
    assert (n_in, n_out) == (5, 3)
    assert list(read_lines(tmp_path / "o.de")) == ["ein Haus", "ab c", "gut"]  # spaces squeezed, | deleted
    assert list(read_lines(tmp_path / "kept")) == ["1", "3", "5"]


def test_factored_corpus_keeps_its_bars(tmp_path):
    # clean-corpus-n decides from the first pair: a | there means factors, which are kept.
    write_lines(tmp_path / "c.de", ["a|X b|Y", "c|Z"])
    write_lines(tmp_path / "c.en", ["d|X e|Y", "f|Z"])
    clean_corpus(tmp_path / "c.de", tmp_path / "c.en", tmp_path / "o.de", tmp_path / "o.en", IWSLT)
    assert list(read_lines(tmp_path / "o.de")) == ["a|X b|Y", "c|Z"]


def test_mismatched_line_counts_name_files_and_counts(tmp_path):
    write_lines(tmp_path / "c.de", ["a", "b", "c"])
    write_lines(tmp_path / "c.en", ["a", "b"])
    with pytest.raises(DataError) as e:
        clean_corpus(tmp_path / "c.de", tmp_path / "c.en", tmp_path / "o.de", tmp_path / "o.en", IWSLT)
    assert str(e.value) == f"parallel files differ in length: {tmp_path / 'c.de'} has 3 lines, {tmp_path / 'c.en'} has 2"
    assert not (tmp_path / "o.de").exists() and not (tmp_path / "o.en").exists()
    assert check_parallel(tmp_path / "c.de", tmp_path / "c.de") == 3


def test_lone_carriage_return_does_not_split_a_line(tmp_path):
    (tmp_path / "f").write_bytes(b"a\rb\nc\n")
    assert list(read_lines(tmp_path / "f")) == ["a\rb", "c"] and count_lines(tmp_path / "f") == 2


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_parallel_map_keeps_order_across_batches():
    lines = [f"line {i}" for i in range(10_007)]
    assert list(map_lines(str.upper, lines, workers=2)) == [x.upper() for x in lines]


def test_segments_follow_the_recipes_sed(tmp_path):
    (tmp_path / "x.sgm").write_text(
        '<doc docid="1">\n<seg id="1"> It’s  two  spaces </seg>\n<p>\n<seg id="2">Last</seg>\n</doc>\n',
        encoding="utf-8")
    assert list(segments(tmp_path / "x.sgm")) == ["It's  two  spaces", "Last"]
    assert list(segments(tmp_path / "x.sgm", replace_rsquo=False))[0] == "It’s  two  spaces"
