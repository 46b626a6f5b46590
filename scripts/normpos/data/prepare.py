"""The driver every dataset shares: fetch -> tokenized text -> subword model -> subword text -> fairseq binary.

A dataset module supplies a :class:`Recipe` (its sources and how its tokenized splits are made); this
module does the rest the same way for all of them. Folders under ``<out-root>/<dataset>/``:

- ``orig/``: downloads and unpacked archives (a cache; kept);
- ``work/``: the tokenized training text, which does not depend on the subword options and is reused
  when another subword model is prepared (a cache; stamped with the recipe version and the identities
  of the training sources, and discarded when those change);
- ``.<variant>.partial/``: the folder being built; a killed run resumes from its finished files;
- ``<variant>/`` (e.g. ``bpe10000``): the result, renamed into place when complete (see manifest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from normpos.data import manifest, subword
from normpos.data.binarize import binarize, preprocess_command
from normpos.data.clean import CleanRule, clean_corpus
from normpos.data.download import Resource, copy_file, fetch
from normpos.data.errors import DataError
from normpos.data.textfiles import cpu_count
from normpos.files import write_json, write_text
from normpos.data.parallel import transform_file, transform_lines
from normpos.data.subword import SubwordSpec
from normpos.data.tokenize import MosesLine, MosesSpec

# Bump when a change to this package changes the prepared data, so old folders are not reused.
RECIPE_VERSION = 1
SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("valid", "test")


def log(message: str) -> None:
    print(f"[normpos.data] {message}", file=sys.stderr, flush=True)


@dataclass
class Text:
    """Where a recipe left its tokenized splits and untokenized eval references: split -> lang -> path."""

    tok: dict
    ref: dict


@dataclass
class Context:
    options: dict
    fetched: dict  # resource filename -> Fetched
    work: Path
    out: Path
    workers: int

    def step(self, outputs: list[Path], run: Callable[[], object], what: str) -> None:
        """Run ``run`` unless every output already exists (outputs are only ever created complete)."""
        if all(Path(p).exists() for p in outputs):
            log(f"{what}: done already, reusing {', '.join(Path(p).name for p in outputs)}")
            return
        log(what)
        start = time.perf_counter()
        run()
        log(f"{what}: {time.perf_counter() - start:.1f} s")

    def tokenize(self, lines: Iterable[str], spec: MosesSpec, out: Path, total: int | None = None) -> None:
        """Moses-process ``lines`` into ``out`` on all cores, streaming."""
        transform_lines(MosesLine(spec), lines, out, self.workers, f"tokenize {out.name}", total)

    def tokenize_file(self, src: Path, spec: MosesSpec, out: Path) -> None:
        transform_file(MosesLine(spec), src, out, self.workers, f"tokenize {out.name}")

    @staticmethod
    def stats_file(folder: Path, key: str) -> Path:
        """Where a step keeps its numbers (e.g. pairs in/out of cleaning) for the manifest.

        A step lists this file among its outputs, so the numbers survive when the step is reused.
        """
        return Path(folder) / f"{key}.stats.json"

    @staticmethod
    def write_stats(path: Path, values: dict) -> None:
        write_json(path, values)

    def stats(self) -> dict:
        return {p.name[: -len(".stats.json")]: json.loads(p.read_text())
                for folder in (self.work, self.out) for p in sorted(folder.glob("*.stats.json"))}


class Recipe:
    """What a dataset module defines. Subclasses set the attributes and implement the two methods."""

    name: str
    src: str
    tgt: str
    default_vocab: dict = {"bpe": 10000, "sentencepiece": 10000}
    # WMT14 cleans the training text after BPE (prepare-wmt14en2de.sh); the others before it.
    clean_after_subword: CleanRule | None = None
    lowercase: bool = True  # lowercase.perl in the recipe (IWSLT14, Multi30k); WMT14 keeps case

    def extra_options(self, **kwargs) -> dict:
        return {}

    def variant_suffix(self, options: dict) -> str:
        return ""

    def resources(self, options: dict) -> list[Resource]:
        raise NotImplementedError

    def train_resources(self, options: dict) -> list[str]:
        """Filenames of the resources the shared ``work/`` text is made from."""
        raise NotImplementedError

    def default_sources(self) -> list[str]:
        return []

    def build_text(self, ctx: Context) -> Text:
        raise NotImplementedError


def _stamped_dir(path: Path, stamp: dict) -> Path:
    """A folder whose files were made under ``stamp``; emptied first when they were made under another."""
    stamp_file = path / "stamp.json"
    text = json.dumps(stamp, indent=2, sort_keys=True) + "\n"
    if path.exists() and not (stamp_file.is_file() and stamp_file.read_text() == text):
        log(f"discarding {path}: its intermediate files were made from other sources or options")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if not stamp_file.is_file():
        write_text(stamp_file, text)
    return path


def _fetch_all(recipe: Recipe, options: dict, sources: list[str], cache: Path, allow_unverified: bool) -> dict:
    """Fetch every resource; when several cannot be had, say so in one line (not one per rerun)."""
    resources = recipe.resources(options)
    fetched, failed = {}, []
    for r in resources:
        try:
            fetched[r.filename] = fetch(r, sources, cache, allow_unverified, single=len(resources) == 1)
        except DataError as e:
            failed.append((r.filename, str(e)))
    if len(failed) == 1:
        raise DataError(failed[0][1])
    if failed:
        names = ", ".join(name for name, _ in failed)
        raise DataError(f"{len(failed)} source files unavailable ({names}); the first: {failed[0][1]}")
    return fetched


def prepare(recipe: Recipe, *, subword_kind: str = "bpe", vocab: int | None = None, sources: list[str] = (),
            out_root: Path = Path("data"), workers: int | None = None, force: bool = False,
            allow_unverified: bool = False, **extra) -> Path:
    """Prepare ``recipe``'s dataset with these options; return the finished folder (see module docstring)."""
    if subword_kind not in subword.KINDS:
        raise DataError(f"unknown subword model {subword_kind!r}; choose one of {', '.join(subword.KINDS)}")
    workers = workers or cpu_count()
    spec = SubwordSpec(subword_kind, vocab or recipe.default_vocab[subword_kind])
    if spec.size < 1:
        raise DataError(f"--vocab must be positive, got {spec.size}")
    options = {"dataset": recipe.name, "source_lang": recipe.src, "target_lang": recipe.tgt,
               "subword": spec.kind, "vocab": spec.size, **recipe.extra_options(**extra),
               "recipe_version": RECIPE_VERSION}
    root = Path(out_root) / recipe.name
    final = root / f"{spec.tag}{recipe.variant_suffix(options)}"
    cache = root / "orig"

    if manifest.reuse(final, options, force):
        if sources:  # the user named the inputs: they must be the ones this folder was made from
            fetched = _fetch_all(recipe, options, list(sources), cache, allow_unverified)
            manifest.check_sources(final, manifest.source_fingerprint([f.record for f in fetched.values()]))
        log(f"{final} is up to date (same options); nothing to do")
        return final

    fetched = _fetch_all(recipe, options, list(sources) or recipe.default_sources(), cache, allow_unverified)
    records = [f.record for f in fetched.values()]
    train_fp = manifest.source_fingerprint([fetched[n].record for n in recipe.train_resources(options)])
    work = _stamped_dir(root / "work", {"recipe_version": RECIPE_VERSION, "train_sources": train_fp})
    partial = _stamped_dir(root / f".{final.name}.partial", {
        "options": options, "sources": manifest.source_fingerprint(records), "tools": manifest.tool_versions()})
    ctx = Context(options, fetched, work, partial, workers)

    text = recipe.build_text(ctx)
    _subword_and_binarize(recipe, ctx, spec, text)
    _publish(recipe, ctx, spec, text, records, final)
    return final


def _subword_and_binarize(recipe: Recipe, ctx: Context, spec: SubwordSpec, text: Text) -> None:
    out, src, tgt = ctx.out, recipe.src, recipe.tgt
    model = [out / name for name in subword.MODEL_FILES[spec.kind]]
    ctx.step(model, lambda: subword.learn(spec, [text.tok["train"][src], text.tok["train"][tgt]], out, ctx.workers),
             f"learning {spec.kind} ({spec.size}) on the tokenized training text")
    encoder = subword.Encoder(spec.kind, out)
    post_clean = recipe.clean_after_subword
    cleaned = post_clean and all((out / f"train.{lang}").exists() for lang in (src, tgt))
    for split in SPLITS:
        # WMT14's train is written as .train.unclean.* and cleaned below; once cleaned it is done.
        name = f".{split}.unclean" if (split == "train" and post_clean) else split
        for lang in (src, tgt):
            if name != split and cleaned:
                continue
            dst = out / f"{name}.{lang}"
            ctx.step([dst], lambda: transform_file(encoder, text.tok[split][lang], dst, ctx.workers,
                                                   f"{spec.kind} {split}.{lang}"),
                     f"applying {spec.kind} to {split}.{lang}")
    if post_clean:
        stats = ctx.stats_file(out, "clean_after_subword")

        def clean_train():
            n_in, n_out = clean_corpus(out / f".train.unclean.{src}", out / f".train.unclean.{tgt}",
                                       out / f"train.{src}", out / f"train.{tgt}", post_clean)
            ctx.write_stats(stats, {"rule": post_clean.__dict__, "input_pairs": n_in, "output_pairs": n_out})
            for lang in (src, tgt):
                (out / f".train.unclean.{lang}").unlink()
        ctx.step([out / f"train.{src}", out / f"train.{tgt}", stats], clean_train,
                 f"cleaning the subword training text (clean-corpus-n {post_clean})")

    for split in EVAL_SPLITS:
        for lang in (src, tgt):
            for kind, paths in (("tok", text.tok), ("ref", text.ref)):
                dst = out / kind / f"{split}.{lang}"
                if Path(paths[split][lang]) != dst and not dst.exists():
                    copy_file(paths[split][lang], dst)

    ctx.step([out / "bin"], lambda: binarize(src, tgt, out, out / "bin", ctx.workers), "binarizing for fairseq")


def _publish(recipe: Recipe, ctx: Context, spec: SubwordSpec, text: Text, records: list[dict],
             final: Path) -> None:
    out, langs = ctx.out, (recipe.src, recipe.tgt)
    counts = {split: {lang: {"tokenized": manifest.file_counts(text.tok[split][lang]),
                             "subword": manifest.file_counts(out / f"{split}.{lang}")}
                      for lang in langs} for split in SPLITS}
    for split in SPLITS:
        n = {counts[split][lang]["subword"]["lines"] for lang in langs}
        if len(n) != 1:
            raise DataError(f"{out}: {split}.{langs[0]} and {split}.{langs[1]} differ in length ({sorted(n)})")
    files = [f"{s}.{lang}" for s in SPLITS for lang in langs] + list(subword.MODEL_FILES[spec.kind])
    files += [f"{kind}/{s}.{lang}" for kind in ("tok", "ref") for s in EVAL_SPLITS for lang in langs]
    with open(out / "bin" / f"dict.{recipe.src}.txt", encoding="utf-8") as f:
        dict_size = sum(1 for _ in f)
    manifest.write(out, {
        "dataset": recipe.name,
        "folder": final.name,
        "options": ctx.options,
        "sources": records,
        "tools": manifest.tool_versions(),
        "steps": ctx.stats(),
        "counts": counts,
        "dictionary": {"joined": True, "entries": dict_size,
                       "note": "lines of dict.*.txt: the subword types of train, plus fairseq's madeupword "
                               "padding to a multiple of 8 with its 4 special symbols (which the file omits)"},
        "files": manifest.file_hashes(out, files),
        # As one would rerun it in the finished folder (it ran in the .partial folder before the rename).
        "fairseq_preprocess": preprocess_command(recipe.src, recipe.tgt, final, final / "bin", ctx.workers),
        # What scoring needs to know (issue 5): how to undo the subwords, and what the references are.
        "scoring": {
            "fairseq_post_process": {"bpe": "subword_nmt", "sentencepiece": "sentencepiece"}[spec.kind],
            "lowercased": recipe.lowercase,
            "tokenized_references": "tok/{valid,test}.<lang> (Moses-tokenized%s)" % (
                ", lowercased" if recipe.lowercase else ""),
            "untokenized_references": "ref/{valid,test}.<lang> (as published; use sacrebleu -lc when lowercased)",
        },
    })
    for p in [out / "stamp.json", *out.glob("*.stats.json")]:
        p.unlink()  # build bookkeeping; the manifest has it all
    # Leftovers of runs killed mid-step (temporary names start with "."; subword.learn's joint file).
    for p in [*out.rglob(".*"), out / "train.joint.tmp"]:
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if final.exists():  # only with --force: manifest.reuse refused otherwise
        shutil.rmtree(final)
    os.replace(out, final)
    log(f"prepared {recipe.name}: {final}")
