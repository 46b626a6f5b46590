"""Scoring: our tokenized BLEU is fairseq-score's, our sacreBLEU is the sacrebleu command line's (score and
signature), compound splitting is compound_split_bleu.sh's perl rule, and ``score_run`` decodes a tiny
trained model end to end (best and averaged checkpoints, skip on rescore, diverged runs not decoded)."""

import gzip
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from conftest import shared_data
from normpos.scoring import bleu
from normpos.scoring.errors import ScoringError
from normpos.scoring.score_run import score_run

# fairseq-score's own entry point, run on several file pairs in one process (its import takes ~10 s)
FAIRSEQ_SCORE = """
import sys
from fairseq_cli import score
for sys_file, ref_file in zip(sys.argv[1::2], sys.argv[2::2]):
    sys.argv = ["fairseq-score", "--sys", sys_file, "--ref", ref_file]
    score.cli_main()
"""


def fairseq_score(*pairs) -> list:
    """BLEU4 result lines that fairseq-score prints for each (sys, ref) pair."""
    argv = [str(p) for pair in pairs for p in pair]
    proc = subprocess.run([sys.executable, "-c", FAIRSEQ_SCORE, *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return re.findall(r"^BLEU4 = .*$", proc.stdout, re.M)


def perturb(lines, seed=0):
    """A plausible system output: words dropped, neighbours swapped, an <unk> now and then."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = [w for w in line.split() if rng.random() > 0.12]
        if len(words) > 2 and rng.random() < 0.3:
            words[0], words[1] = words[1], words[0]
        if rng.random() < 0.05:
            words.append("<unk>")
        out.append(" ".join(words))
    return out


def scramble(lines, seed=0):
    """A weaker system (BLEU ~50 against the reference): words dropped and neighbours swapped throughout."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = [w for w in line.split() if rng.random() > 0.12]
        for i in range(len(words) - 1):
            if rng.random() < 0.15:
                words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


def write(path: Path, lines) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def iwslt_pair(tmp_path_factory):
    """1,500 lines of fairseq's tokenized IWSLT14 test.en as reference, a perturbed copy as hypothesis."""
    refs = shared_data("iwslt14", "fairseq-prepared-partial", "tmp", "test.en").read_text(encoding="utf-8")
    refs = refs.splitlines()[:1500]
    hyps = perturb(refs)
    hyps[7] = ""  # an empty output line must be scored as fairseq scores it
    folder = tmp_path_factory.mktemp("bleu")
    return write(folder / "hyp.txt", hyps), write(folder / "ref.txt", refs)


def read(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_tokenized_and_compound_split_bleu_equal_fairseq_score(iwslt_pair, tmp_path):
    hyp, ref = iwslt_pair
    if shutil.which("perl") is None:
        pytest.skip("perl is absent: compound_split_bleu.sh's rule is checked against perl itself")
    # compound_split_bleu.sh's own rule, run by perl, makes the files fairseq-score compares
    rule = r"s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g"
    split = []
    for name, src in (("hyp", hyp), ("ref", ref)):
        out = tmp_path / f"{name}.split"
        with open(src, "rb") as fin, open(out, "wb") as fout:
            subprocess.run(["perl", "-ple", rule], stdin=fin, stdout=fout, check=True)
        split.append(out)
    plain_said, split_said = fairseq_score((hyp, ref), tuple(split))

    ours = bleu.tokenized_bleu(read(hyp), read(ref))
    assert ours.text == plain_said
    assert 20 < ours.score < 80 and f"BLEU4 = {ours.score:.2f}," in plain_said
    assert [bleu.compound_split(line) for line in read(ref)] == read(split[1])
    split_ours = bleu.compound_split_bleu(read(hyp), read(ref))
    assert split_ours.text == split_said
    assert split_ours.score != ours.score  # IWSLT14 test has hyphenated words: the rule changes the count
    assert bleu.compound_split("a well-known x-ray - fine") == "a well ##AT##-##AT## known x ##AT##-##AT## ray - fine"


def perl_compound_split(src: Path, out: Path) -> Path:
    """compound_split_bleu.sh's (and get_ende_bleu.sh's) own rule, run by perl."""
    with open(src, "rb") as fin, open(out, "wb") as fout:
        subprocess.run(["perl", "-ple", r"s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g"], stdin=fin, stdout=fout, check=True)
    return out


def test_compound_split_bleu_is_get_ende_bleu_on_aggressively_tokenized_wmt14(tmp_path):
    """Our WMT14 text is Moses-tokenized with -a (hyphens become @-@). The expected score is derived without
    our code: the same newstest2014 lines tokenized *without* -a (tensor2tensor's get_ende_bleu.sh), the perl
    rule, fairseq-score. Applying the rule to the -a text instead inflates it by more than half a point."""
    from sacremoses import MosesTokenizer

    from normpos.data.sgm import segments

    if shutil.which("perl") is None:
        pytest.skip("perl is absent: the compound-splitting rule is checked against perl itself")
    refs = list(segments(shared_data("wmt14", "test-full", "newstest2014-deen-ref.de.sgm")))[:300]
    hyps = scramble(refs)
    moses = MosesTokenizer(lang="de")

    def tokenize(lines, aggressive):
        return [moses.tokenize(line, aggressive_dash_splits=aggressive, escape=True, return_str=True) for line in lines]

    plain = {name: write(tmp_path / f"{name}.tok", tokenize(lines, False))
             for name, lines in (("hyp", hyps), ("ref", refs))}
    split = [perl_compound_split(plain[name], tmp_path / f"{name}.atat") for name in ("hyp", "ref")]
    (expected,) = fairseq_score(tuple(split))

    hyps_a, refs_a = tokenize(hyps, True), tokenize(refs, True)
    assert sum("@-@" in line for line in refs_a) > 30  # the sample has hyphenated compounds
    ours = bleu.compound_split_bleu(hyps_a, refs_a)
    assert ours.text == expected
    # the rule alone on -a text: "x @-@ y" -> "x @ ##AT##-##AT## @ y", two always-matching tokens per hyphen
    naive = bleu.tokenized_bleu(*[[bleu.COMPOUND.sub(r"\1 ##AT##-##AT## \2", line) for line in side]
                                  for side in (hyps_a, refs_a)])
    assert naive.score - ours.score > 0.5


def test_tokenized_bleu_refuses_misaligned_files():
    with pytest.raises(ScoringError, match="2 hypotheses but 1 references"):
        bleu.tokenized_bleu(["a b", "c"], ["a b"])


@pytest.mark.parametrize("lowercase", [True, False])
def test_sacrebleu_equals_the_command_line(iwslt_pair, tmp_path, lowercase):
    """Detokenized hypotheses against cased raw text, as score_run does: score and signature as the CLI."""
    _, ref = iwslt_pair
    raw = write(tmp_path / "raw.txt", [line[:1].upper() + line[1:] for line in bleu.detokenize(read(ref), "en")])
    hyp = write(tmp_path / "hyp.detok.txt", bleu.detokenize(perturb(read(ref), seed=1), "en"))
    ours = bleu.sacre_bleu(read(hyp), read(raw), lowercase=lowercase)
    cmd = [sys.executable, "-m", "sacrebleu", str(raw), "-i", str(hyp), "-m", "bleu", "-w", "6", "--format", "json"]
    proc = subprocess.run(cmd + (["-lc"] if lowercase else []), capture_output=True, text=True, check=True)
    cli = json.loads(proc.stdout)
    assert round(ours.score, 6) == cli["score"]
    assert ours.signature == cli["signature"]
    assert ("case:lc" in ours.signature) is lowercase
    assert "&apos;" not in hyp.read_text(encoding="utf-8")  # the Moses escapes were undone

    chrf = bleu.chrf_plus_plus(read(hyp), read(raw), lowercase=lowercase)
    cmd = [sys.executable, "-m", "sacrebleu", str(raw), "-i", str(hyp), "-m", "chrf", "--chrf-word-order", "2",
           "-w", "6", "--format", "json"]
    proc = subprocess.run(cmd + (["--chrf-lowercase"] if lowercase else []), capture_output=True, text=True, check=True)
    cli = json.loads(proc.stdout)
    assert cli["name"] == "chrF2++" and round(chrf.score, 6) == cli["score"] and chrf.signature == cli["signature"]


def test_iwslt14_references_keeping_right_quotes_are_stated_next_to_sacrebleu():
    """prepare-iwslt14.sh maps ’ to ' before tokenizing the test text; the published references keep it."""
    from normpos.data import iwslt14
    from normpos.scoring.score_run import apostrophe_note

    raw = list(iwslt14.test_segments(iwslt14.test_xml_files(shared_data("iwslt14", "de-en"), "en"),
                                     replace_rsquo=False))
    tok = read(shared_data("iwslt14", "fairseq-prepared-partial", "tmp", "test.en"))
    hyps = bleu.detokenize(perturb(tok, seed=3), "en")  # outputs of a model trained on ' text
    note = apostrophe_note(hyps, tok, raw, lowercase=True)
    assert note["sacrebleu_reference_note"].startswith("196 of 6750 untokenized references keep \u2019 (U+2019)")
    normalized = [line.replace("\u2019", "'") for line in raw]
    assert note["sacrebleu_apostrophe_normalized"] == sacrebleu.corpus_bleu(hyps, [normalized], lowercase=True).score
    assert note["sacrebleu_apostrophe_normalized"] > sacrebleu.corpus_bleu(hyps, [raw], lowercase=True).score
    assert apostrophe_note(hyps, tok, normalized, lowercase=True) == {}  # nothing to say when they agree


# ---- score_run end to end on a tiny trained model -------------------------------------------------------

TINY = ["--arch", "normpos_iwslt_de_en_pre_ln", "--encoder-layers", "2", "--decoder-layers", "2",
        "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
N_TEST = 40
EPOCHS = 15


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_process():
    """fairseq subprocesses with one torch thread: a 2-layer d=16 model gains nothing from more, and on a
    busy 2-core machine oversubscribed threads made the tiny training 15x slower."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def run_tool(tool, *argv):
    proc = subprocess.run([sys.executable, "-m", "normpos.fairseq_run", tool, *map(str, argv)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def tiny_corpus(folder: Path) -> Path:
    """train 300 / valid 40 / test 40 pairs of tokenized lowercased Multi30k, and the test's raw English
    references in ref/test.en (the test is skipped, with the reason, when the data is not staged)."""
    tok = shared_data("multi30k", "task1", "tok")
    raw = shared_data("multi30k", "task1", "raw", "test_2016_flickr.en.gz")
    (folder / "ref").mkdir()
    for lang in ("de", "en"):
        train = (tok / f"train.lc.norm.tok.{lang}").read_text(encoding="utf-8").splitlines()
        test = (tok / f"test_2016_flickr.lc.norm.tok.{lang}").read_text(encoding="utf-8").splitlines()[:N_TEST]
        splits = {"train": train[:300], "valid": train[300:340], "test": test}
        if lang == "en":
            with gzip.open(raw, "rt", encoding="utf-8") as f:
                write(folder / "ref" / "test.en", f.read().splitlines()[:N_TEST])
        for split, lines in splits.items():
            write(folder / f"{split}.{lang}", lines)
    run_tool("preprocess", "--source-lang", "de", "--target-lang", "en", "--joined-dictionary",
             "--trainpref", folder / "train", "--validpref", folder / "valid", "--testpref", folder / "test",
             "--destdir", folder / "bin", "--workers", "1")
    return folder / "bin"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run directory template: binarized data, references, and checkpoints of a 2-layer d=16 model."""
    root = tmp_path_factory.mktemp("score_run")
    data_bin = tiny_corpus(root)
    # 15 epochs of 7 updates: enough for "a man in a ..." outputs with a few 4-gram matches (BLEU ~1)
    run_tool("train", data_bin, *TINY, "--optimizer", "adam", "--lr", "1e-2", "--lr-scheduler", "fixed",
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "1000",
             "--max-epoch", str(EPOCHS), "--keep-last-epochs", "2", "--save-dir", root / "checkpoints", "--seed", "1",
             "--no-progress-bar", "--num-workers", "0", "--log-interval", "100")
    return root


@pytest.fixture
def untrained(tmp_path):
    """The same layout without data or model, for the checks that stop before decoding."""
    for folder in ("bin", "ref", "checkpoints"):
        (tmp_path / "untrained" / folder).mkdir(parents=True)
    write(tmp_path / "untrained" / "ref" / "test.en", ["a reference ."])
    return tmp_path / "untrained"


def make_run(trained: Path, run_dir: Path, status="finished", **overrides) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoints").symlink_to(trained / "checkpoints")
    run = {"dataset": "multi30k", "experiment": "test", "config": "pre_ln", "label": "Pre-LN", "seed": 1,
           "data_bin": str(trained / "bin"), "ref_dir": str(trained / "ref"), "target_lang": "en",
           "beam": 5, "lenpen": 1.2, "avg_last_n": 0, "compound_split": False, "paper": None, **overrides}
    (run_dir / "run.json").write_text(json.dumps(run))
    reason = "loss is nan" if status != "finished" else ""
    (run_dir / "status.json").write_text(json.dumps({"status": status, "reason": reason, "num_updates": 7 * EPOCHS,
                                                     "epochs": EPOCHS, "wall_seconds": 10}))
    return run_dir


@pytest.mark.slow
def test_score_run_end_to_end(trained, tmp_path):
    run = make_run(trained, tmp_path / "seed-1")
    action, record = score_run(run)
    assert action == "scored" and record["scored"] and not record["averaged"]
    assert record["checkpoint"] == "checkpoint_best.pt" and record["n_sentences"] == N_TEST
    assert (record["beam"], record["lenpen"]) == (5, 1.2)
    # our tokenized BLEU is the one fairseq-generate printed for the same decode
    assert record["test_tok_bleu"] > 0  # some 4-gram matches, so the comparison below is not 0 == 0
    assert record["fairseq_generate_said"].startswith(f"BLEU4 = {record['test_tok_bleu']:.2f},")
    assert record["test_tok_bleu_detail"] == record["fairseq_generate_said"]
    # sacreBLEU: the written detokenized hypotheses against the raw references, lowercased (the data is)
    hyps = read(run / "test.hyp.detok.txt")
    refs = read(trained / "ref" / "test.en")
    assert len(hyps) == N_TEST and "@@" not in "".join(read(run / "test.hyp.tok.txt"))
    assert record["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score)
    assert "case:lc" in record["sacrebleu_signature"] and record["lowercase"] is True
    # chrF++ (corpus_chrf has no lowercase option: the text is lowercased for it)
    lowered = sacrebleu.corpus_chrf([h.lower() for h in hyps], [[r.lower() for r in refs]], word_order=2)
    assert record["chrf"] == pytest.approx(lowered.score) and "nw:2|" in record["chrf_signature"]
    assert "compound_split_bleu" not in record
    assert set(record["inputs"]) == {"checkpoints", "data", "refs", "settings"}
    assert record["inputs"]["checkpoints"].keys() == {"checkpoint_best.pt"}

    # same inputs: nothing is decoded again and score.json is untouched
    before = (run / "score.json").stat().st_mtime_ns
    assert score_run(run)[0] == "skipped"
    assert (run / "score.json").stat().st_mtime_ns == before

    # a score.json from an older scoring version (no chrF++): the saved decode is scored again, not decoded
    old = dict(record, inputs={**record["inputs"], "settings": {**record["inputs"]["settings"], "scoring_version": 1}})
    del old["chrf"]
    (run / "score.json").write_text(json.dumps(old))
    decoded = (run / "test.hyp.tok.txt").stat().st_mtime_ns
    action, again = score_run(run)
    assert action == "rescored (saved decode)" and again == record
    assert (run / "test.hyp.tok.txt").stat().st_mtime_ns == decoded

    # other inputs (average of the last 2 epochs, other lenpen, compound split): rescored
    run_json = json.loads((run / "run.json").read_text())
    run_json.update(avg_last_n=2, lenpen=0.6, compound_split=True)
    (run / "run.json").write_text(json.dumps(run_json))
    action, record = score_run(run)
    assert action == "scored" and record["averaged"] and record["lenpen"] == 0.6
    last_two = [f"checkpoint{EPOCHS - 1}.pt", f"checkpoint{EPOCHS}.pt"]
    assert record["checkpoint"] == last_two and list(record["inputs"]["checkpoints"]) == last_two
    assert "compound-split" in record["compound_split_bleu_detail"]
    assert not list(run.glob(".scoring-*")), "the averaged checkpoint is removed after decoding"


def test_diverged_and_broken_runs_are_not_decoded(untrained, tmp_path):
    run = make_run(untrained, tmp_path / "diverged", status="diverged")
    action, record = score_run(run)
    assert action == "not decoded" and record == json.loads((run / "score.json").read_text())
    assert record["scored"] is False and "diverged" in record["reason"] and "loss is nan" in record["reason"]
    assert not (run / "test.hyp.detok.txt").exists()
    assert score_run(run)[0] == "skipped"

    bad = make_run(untrained, tmp_path / "bad", avg_last_n=50)
    with pytest.raises(ScoringError, match="average the last 50 epoch checkpoints"):
        score_run(bad)


def test_cli_root_scores_what_it_can_and_reports_one_line_errors(untrained, tmp_path):
    root = tmp_path / "runs"
    make_run(untrained, root / "a" / "seed-1", status="failed")
    make_run(untrained, root / "b" / "seed-1", ref_dir=str(tmp_path / "nowhere"))
    unfinished = make_run(untrained, root / "c" / "seed-1")
    (unfinished / "status.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "normpos.scoring", "--root", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "not decoded: the run failed" in proc.stdout
    assert "c/seed-1: not finished yet" in proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("normpos: error: ") and "nowhere/test.en is missing" in errors[0]
    missing = subprocess.run([sys.executable, "-m", "normpos.scoring", "--root", str(tmp_path / "none")],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"normpos: error: {tmp_path / 'none'} is not a folder of runs"
