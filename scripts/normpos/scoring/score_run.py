"""Score one run directory on the test set: decode with the paper's settings, then every BLEU in bleu.py.

Inputs (the sweep runner writes them; see ``run.json``): the checkpoint (``checkpoint_best.pt``, or the
element-wise average of the last ``avg_last_n`` epoch checkpoints ``checkpoint<E>.pt``, Vaswani et al. 2017),
the binarized data folder, the untokenized references, and the decoding settings ``beam`` / ``lenpen``
(Xiong et al. 2020, App. A.1: IWSLT14 beam 5, lenpen 1.2; WMT14: beam 4, lenpen 0.6). Decoding is
``fairseq-generate`` with our plugin (``normpos.fairseq_run``) and ``--remove-bpe`` for the run's subword
model (``run.json["subword"]``: ``bpe`` = subword-nmt ``@@ ``, or ``sentencepiece``).

Outputs, in the run directory: ``test.hyp.detok.txt`` (detokenized hypotheses, what sacreBLEU and chrF++
score), ``test.hyp.tok.txt`` / ``test.ref.tok.txt`` (what tokenized BLEU scores; ``fairseq-score --sys ...
--ref ...`` reproduces it), and ``score.json``, written last and atomically, so that its presence means a
finished scoring. ``score.json["inputs"]`` fingerprints everything the numbers depend on (sha256 of the
checkpoints, the binarized test data and dictionaries, the references, and the settings); a second call with
the same fingerprint does nothing. When only what the metrics depend on changed (a new ``SCORING_VERSION``,
the references, sacreBLEU), the saved decode is scored again without decoding. Runs that diverged or failed
are not decoded: their ``score.json`` says why.

IWSLT14's untokenized test references are the published ``<seg>`` text, which keeps ``’`` (U+2019) where
prepare-iwslt14.sh turned it into ``'`` before tokenizing (196 lines of TEDX.dev2012): the tokenized
references say ``'``, the sacreBLEU references ``’``. sacreBLEU is computed against the references as
published; ``score.json`` says next to it how many reference lines keep a ``’`` that the tokenized ones do not
(``sacrebleu_reference_note``), and gives the score with ``’`` read as ``'`` on both sides
(``sacrebleu_apostrophe_normalized``), so the effect of that choice is visible.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

from normpos import numerics
from normpos.data.textfiles import hash_file, read_lines
from normpos.files import write_json, write_lines
from normpos.scoring import bleu
from normpos.scoring.errors import ScoringError

# Bump when a change here changes the numbers, so that every run is rescored once (from its saved decode).
# 2: chrF++; compound-split BLEU joins -a hyphens first (bleu.py); the ’ note and normalized sacreBLEU.
SCORING_VERSION = 2
SUBSET = "test"
# fairseq --remove-bpe value per subword model (fairseq.data.data_utils.post_process)
REMOVE_BPE = {"bpe": "subword_nmt", "sentencepiece": "sentencepiece"}
# Tokens per decoding batch: plenty for a GPU, bounded for the 2-core CPU demo.
MAX_TOKENS = 6000
DECODED_STATUS = "finished"
HYP_DETOK, HYP_TOK, REF_TOK, SCORE = "test.hyp.detok.txt", "test.hyp.tok.txt", "test.ref.tok.txt", "score.json"
EPOCH_CHECKPOINT = re.compile(r"^checkpoint(\d+)\.pt$")
# The settings that change what fairseq-generate outputs; the others only change how it is scored.
DECODE_SETTINGS = ("beam", "lenpen", "max_len_b", "subword", "target_lang", "avg_last_n")
# What score.json says about the decode itself, kept when only the metrics are computed again.
DECODE_RECORD = ("scored", "checkpoint", "averaged", "n_sentences", "beam", "lenpen", "fairseq_generate_said",
                 "command")
RIGHT_QUOTE = "\u2019"  # ’, which prepare-iwslt14.sh maps to ' in the test text it tokenizes


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise ScoringError(f"{path} is missing") from None
    except json.JSONDecodeError as err:
        raise ScoringError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ScoringError(f"{path} must hold a JSON object")
    return value


def sha256(path: Path) -> str:
    return hash_file(path)["sha256"]


def _required(run: dict, key: str, where: Path):
    if run.get(key) is None:
        raise ScoringError(f"{where}/run.json has no {key!r}")
    return run[key]


def checkpoints(run_dir: Path, run: dict) -> list:
    """The checkpoint files to decode with: the best one, or the last ``avg_last_n`` epoch checkpoints."""
    folder = run_dir / "checkpoints"
    n = int(run.get("avg_last_n") or 0)
    if n <= 0:
        best = folder / run.get("score_checkpoint", "checkpoint_best.pt")
        if not best.is_file():
            raise ScoringError(f"{best} is missing: nothing to decode")
        return [best]
    epochs = sorted((int(m.group(1)), p) for p in folder.glob("checkpoint*.pt")
                    if (m := EPOCH_CHECKPOINT.match(p.name)))
    if len(epochs) < n:
        raise ScoringError(f"{run_dir}/run.json asks to average the last {n} epoch checkpoints "
                           f"but {folder} has {len(epochs)} (checkpoint<E>.pt)")
    return [p for _, p in epochs[-n:]]


def reference_file(run: dict, run_dir: Path) -> Path:
    """The untokenized test references: ``ref_dir`` is a folder with ``test.<target_lang>``, or the file itself."""
    ref = Path(_required(run, "ref_dir", run_dir))
    if not ref.is_file():
        ref = ref / f"{SUBSET}.{_required(run, 'target_lang', run_dir)}"
    if not ref.is_file():
        raise ScoringError(f"untokenized reference {ref} is missing (prepare the data first, e.g. make data-multi30k)")
    return ref


def settings(run: dict, run_dir: Path) -> dict:
    subword = run.get("subword") or "bpe"
    if subword not in REMOVE_BPE:
        raise ScoringError(f"{run_dir}/run.json: subword {subword!r} is not one of {', '.join(REMOVE_BPE)}")
    lowercase = run.get("lowercase")  # None: decided from the test targets (see decide_lowercase)
    return {
        "beam": int(_required(run, "beam", run_dir)),
        "lenpen": float(_required(run, "lenpen", run_dir)),
        "max_len_b": int(run.get("max_len_b") or 200),  # fairseq-generate's default
        "subword": subword,
        "target_lang": _required(run, "target_lang", run_dir),
        "avg_last_n": int(run.get("avg_last_n") or 0),
        "compound_split": bool(run.get("compound_split", False)),
        "lowercase": None if lowercase is None else bool(lowercase),
        "scoring_version": SCORING_VERSION,
        "versions": library_versions(),
    }


def library_versions() -> dict:
    """fairseq (decoding, tokenized BLEU), sacreBLEU and sacremoses: a new version may change the numbers.
    Read from the installed distributions (fairseq's is ve-fairseq here), not by importing fairseq, so that
    a skipped rescoring takes a second."""
    owners = packages_distributions()
    found = {}
    for module in ("fairseq", "sacrebleu", "sacremoses"):
        dists = owners.get(module) or [module]
        try:
            found[module] = f"{dists[0]} {version(dists[0])}"
        except PackageNotFoundError:
            raise ScoringError(f"{module} is not installed (run make setup)") from None
    return found


def fingerprint(ckpts: list, data_bin: Path, ref: Path, config: dict) -> dict:
    """sha256 of every input the scores depend on; file names, not paths, so a moved tree is not rescored."""
    data = sorted(p for p in data_bin.iterdir() if p.name.startswith((f"{SUBSET}.", "dict.")))
    if not any(p.name.startswith(f"{SUBSET}.") for p in data):
        raise ScoringError(f"{data_bin} has no binarized {SUBSET} split ({SUBSET}.*.bin)")
    return {
        "checkpoints": {p.name: sha256(p) for p in ckpts},
        "data": {p.name: sha256(p) for p in data},
        "refs": {ref.name: sha256(ref)},
        "settings": config,
    }


def generate_options(config: dict) -> list:
    """fairseq-generate's options for the test split with a run's decoding settings (``settings``): what scoring
    decodes with, and what the decoding benchmark (normpos.bench_decode) decodes with too."""
    return ["--gen-subset", SUBSET, "--beam", str(config["beam"]), "--lenpen", str(config["lenpen"]),
            "--max-len-b", str(config.get("max_len_b", 200)),
            "--remove-bpe", REMOVE_BPE[config["subword"]], "--max-tokens", str(MAX_TOKENS)]


def recorded_numerics(run: dict) -> tuple:
    """(mode, threads) a run trained with, from its run.json: decoding pins the same (threads None: the caller's)."""
    record = run.get("numerics") or {}
    threads = (record.get("settings") or {}).get("OMP_NUM_THREADS") if record.get("mode", "pinned") == "pinned" else None
    return record.get("mode", "pinned"), int(threads) if threads else None


def decoding_env(run: dict) -> dict:
    """fairseq-generate's environment for a run (its run.json): the CPU numerics and threads it trained with, so
    that scoring and the decoding benchmark decode the same floats."""
    mode, threads = recorded_numerics(run)
    return numerics.environment(numerics.with_threads(os.environ, threads), mode)


def decode(data_bin: Path, checkpoint: Path, config: dict, workdir: Path, env: dict) -> tuple:
    """fairseq-generate on the test split. Returns the hypotheses and references (fairseq's T- lines) in
    corpus order, tokenized and subword-removed; the BLEU line fairseq printed (the cross-check of our
    tokenized BLEU); and the decoding options, for the record."""
    args = generate_options(config)
    cmd = [sys.executable, "-m", "normpos.fairseq_run", "generate", str(data_bin), "--path", str(checkpoint),
           *args, "--results-path", str(workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)  # decoding_env: the run's numerics
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["(no message)"]
        raise ScoringError(f"fairseq-generate failed on {checkpoint.name}: {tail[0]}")
    out = (workdir / f"generate-{SUBSET}.txt").read_text(encoding="utf-8")
    hyps = {int(i): text for i, text in re.findall(r"^H-(\d+)\t[^\t]*\t(.*)$", out, re.M)}
    refs = {int(i): text for i, text in re.findall(r"^T-(\d+)\t(.*)$", out, re.M)}
    if not hyps or hyps.keys() != refs.keys() or sorted(hyps) != list(range(len(hyps))):
        raise ScoringError(f"fairseq-generate output for {checkpoint.name} does not hold one hypothesis "
                           f"per test sentence ({len(hyps)} hypotheses, {len(refs)} references)")
    said = re.search(r"^Generate \S+ with beam=\d+: (.*)$", out, re.M)
    return ([hyps[i] for i in range(len(hyps))], [refs[i] for i in range(len(refs))],
            said.group(1) if said else None, args)


def decide_lowercase(config: dict, tok_refs: list) -> tuple:
    """Lowercase sacreBLEU when the model was trained on lowercased text: its test targets have no capital."""
    if config["lowercase"] is not None:
        return config["lowercase"], "run.json"
    cased = any(ch.isupper() for line in tok_refs for ch in line)
    return (not cased), "the tokenized test targets " + ("have capitals" if cased else "are all lower-case")


def bleu_fields(hyps: list, tok_refs: list, detok: list, raw_refs: list, config: dict) -> dict:
    """Every BLEU of one decode, each with the detail that says what it is."""
    lowercase, lowercase_from = decide_lowercase(config, tok_refs)
    tok = bleu.tokenized_bleu(hyps, tok_refs)
    sacre = bleu.sacre_bleu(detok, raw_refs, lowercase)
    chrf = bleu.chrf_plus_plus(detok, raw_refs, lowercase)
    fields = {
        "test_tok_bleu": tok.score,
        "test_tok_bleu_detail": tok.text,
        "tokenized_bleu_is": f"fairseq's BLEU (fairseq-score) of {HYP_TOK} against {REF_TOK} "
                             "(fairseq-generate's T- lines): Moses-tokenized, subword removed",
        "sacrebleu": sacre.score,
        "sacrebleu_signature": sacre.signature,
        "sacrebleu_detail": sacre.text,
        "chrf": chrf.score,
        "chrf_signature": chrf.signature,
        "chrf_detail": chrf.text,
        "lowercase": lowercase,
        "lowercase_from": lowercase_from,
    }
    fields.update(apostrophe_note(detok, tok_refs, raw_refs, lowercase))
    if config["compound_split"]:
        split = bleu.compound_split_bleu(hyps, tok_refs)
        fields["compound_split_bleu"] = split.score
        fields["compound_split_bleu_detail"] = (f"compound-split tokenized BLEU, -a hyphens joined first "
                                                f"(get_ende_bleu.sh's convention): {split.text}")
    return fields


def apostrophe_note(detok: list, tok_refs: list, raw_refs: list, lowercase: bool) -> dict:
    """When the untokenized references keep ’ where the tokenized ones have ' (IWSLT14's published test text,
    see the module docstring): how many lines, and sacreBLEU with ’ read as ' on both sides."""
    kept = sum(RIGHT_QUOTE in raw and RIGHT_QUOTE not in tok for raw, tok in zip(raw_refs, tok_refs))
    if not kept:
        return {}
    normalized = bleu.sacre_bleu([h.replace(RIGHT_QUOTE, "'") for h in detok],
                                 [r.replace(RIGHT_QUOTE, "'") for r in raw_refs], lowercase)
    return {
        "sacrebleu_reference_note": f"{kept} of {len(raw_refs)} untokenized references keep \u2019 (U+2019) where "
                                    "the tokenized references have ' (the recipe normalized its test text before "
                                    "tokenizing); sacreBLEU is against the references as published",
        "sacrebleu_apostrophe_normalized": normalized.score,
    }


def decode_inputs(inputs: dict) -> dict:
    """The part of a fingerprint that decides what fairseq-generate outputs (not how it is scored)."""
    settings = inputs.get("settings") or {}
    return {"checkpoints": inputs.get("checkpoints"), "data": inputs.get("data"),
            "settings": {k: settings.get(k) for k in DECODE_SETTINGS},
            "fairseq": (settings.get("versions") or {}).get("fairseq")}


def saved_decode(run_dir: Path, record: dict, inputs: dict):
    """(hypotheses, tokenized references) of an earlier decode with the same decode inputs, else None."""
    files = [run_dir / HYP_TOK, run_dir / REF_TOK]
    if not (record.get("scored") and record.get("inputs") and all(f.is_file() for f in files)):
        return None
    if decode_inputs(record["inputs"]) != decode_inputs(inputs):
        return None
    hyps, tok_refs = (list(read_lines(f)) for f in files)
    if len(hyps) != record.get("n_sentences") or len(tok_refs) != len(hyps):
        return None  # not the files that record was made from
    return hyps, tok_refs


def not_decoded(run_dir: Path, status: dict) -> tuple:
    record = {"scored": False, "run_status": status.get("status"),
              "reason": f"not decoded: the run {status.get('status')} ({status.get('reason') or 'no reason given'})"}
    if (run_dir / SCORE).exists() and read_json(run_dir / SCORE) == record:
        return "skipped", record
    write_json(run_dir / SCORE, record)
    return "not decoded", record


def score_run(run_dir: Path, force: bool = False) -> tuple:
    """Score ``run_dir``; returns (what was done: scored | rescored (saved decode) | skipped | not decoded,
    the score.json record)."""
    run_dir = Path(run_dir)
    run = read_json(run_dir / "run.json")
    if not (run_dir / "status.json").exists():
        raise ScoringError(f"{run_dir} has no status.json: the run has not finished (resume the sweep first)")
    status = read_json(run_dir / "status.json")
    if status.get("status") != DECODED_STATUS:
        return not_decoded(run_dir, status)

    data_bin = Path(_required(run, "data_bin", run_dir))
    if not data_bin.is_dir():
        raise ScoringError(f"data folder {data_bin} does not exist (prepare it first, e.g. make data-multi30k)")
    ref = reference_file(run, run_dir)
    ckpts = checkpoints(run_dir, run)
    config = settings(run, run_dir)
    inputs = fingerprint(ckpts, data_bin, ref, config)
    score_path = run_dir / SCORE
    earlier = read_json(score_path) if score_path.exists() else {}
    if not force and (run_dir / HYP_DETOK).exists() and earlier.get("scored") and earlier.get("inputs") == inputs:
        return "skipped", earlier
    saved = None if force else saved_decode(run_dir, earlier, inputs)
    if saved is not None:
        hyps, tok_refs = saved
        kept = {k: earlier[k] for k in DECODE_RECORD if k in earlier}
        record = {**kept, **scores(run_dir, ref, hyps, tok_refs, config), "inputs": inputs}
        write_json(score_path, record)
        return "rescored (saved decode)", record

    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".scoring-") as tmp:
        workdir = Path(tmp)
        checkpoint = ckpts[0]
        if len(ckpts) > 1:
            from normpos.average_checkpoints import average_checkpoints

            try:
                checkpoint = average_checkpoints(ckpts, workdir / "averaged.pt")
            except (ValueError, FileNotFoundError) as err:
                raise ScoringError(f"averaging {len(ckpts)} checkpoints failed: {err}") from None
        hyps, tok_refs, fairseq_said, args = decode(data_bin, checkpoint, config, workdir, decoding_env(run))

    path_label = str(ckpts[0]) if len(ckpts) == 1 else f"<average of {', '.join(str(p) for p in ckpts)}>"
    record = {
        "scored": True,
        **scores(run_dir, ref, hyps, tok_refs, config),
        "checkpoint": [p.name for p in ckpts] if len(ckpts) > 1 else ckpts[0].name,
        "averaged": len(ckpts) > 1,
        "n_sentences": len(hyps),
        "beam": config["beam"],
        "lenpen": config["lenpen"],
        "fairseq_generate_said": fairseq_said,
        "command": shlex.join(["python", "-m", "normpos.fairseq_run", "generate", str(data_bin),
                               "--path", path_label, *args]),
        "inputs": inputs,
    }
    write_lines(run_dir / HYP_TOK, hyps)
    write_lines(run_dir / REF_TOK, tok_refs)
    write_json(score_path, record)  # last: its presence means the files above are complete
    return "scored", record


def scores(run_dir: Path, ref: Path, hyps: list, tok_refs: list, config: dict) -> dict:
    """Every metric of one decode (bleu_fields); writes the detokenized hypotheses they are computed on."""
    raw_refs = list(read_lines(ref))
    if len(raw_refs) != len(hyps):
        raise ScoringError(f"{ref} has {len(raw_refs)} lines but the binarized test set {len(hyps)} sentences")
    detok = bleu.detokenize(hyps, config["target_lang"])
    write_lines(run_dir / HYP_DETOK, detok)
    return bleu_fields(hyps, tok_refs, detok, raw_refs, config)


def run_dirs_under(root: Path) -> list:
    """Every run directory (one holding run.json) below ``root``, in path order."""
    root = Path(root)
    if not root.is_dir():
        raise ScoringError(f"{root} is not a folder of runs")
    return sorted(p.parent for p in root.rglob("run.json"))

