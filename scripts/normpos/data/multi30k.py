"""Multi30k task 1 De->En (train 29,000 / valid 1,014 / test2016 1,000), prepared with the IWSLT14 recipe.

Source: the official repository multi30k/dataset (Elliott et al. 2016, W16-3210), ``data/task1/raw/``:
``train``, ``val`` and ``test_2016_flickr`` in de and en, gzipped. The URL pins the commit staged and
checked in shared/data/PROVENANCE.md (section 4), and the files must have the sha256 listed there (the
decompressed text is byte-identical in three independent copies). Offline, the staged copy in
``../shared/data/multi30k/task1/raw`` is the default source. Note that its German val/test2016 are the
corrected versions: 61 + 150 lines differ from the original WMT16 release that older papers used.

Recipe (prepare-iwslt14.sh's steps, with Multi30k's plain text in place of the TED xml): Moses
tokenization (no aggressive hyphen splitting), lowercasing, clean-corpus-n 1-175 ratio 1.5 on train,
joint BPE learned on train. Every split is treated alike (the ``’`` -> ``'`` fix of the IWSLT test
xml does not apply: there is no xml here).

BPE size: 8,000 merges by default. After cleaning, train has 28,332 pairs (668 of 29,000 fail the 1.5
length ratio), 0.72M words and 26,823 joint word types, a sixth of IWSLT14's 160K pairs. Measured on
that text (first N merges of one subword-nmt run): 6,000 / 8,000 / 10,000 merges give a joint
vocabulary of 5,979 / 7,869 / 9,717 entries, 1.14 / 1.10 / 1.08 subwords per word, and 10% / 14% / 35%
of the entries seen fewer than 10 times in train. 8,000 is the largest size before that share jumps:
beyond it the extra merges mostly add whole rare words whose embeddings 29K sentences cannot train.
"""

from __future__ import annotations

from pathlib import Path

from normpos.data.clean import CleanRule, clean_corpus
from normpos.data.download import Identity, Resource
from normpos.data.textfiles import read_lines, shared_data_dir
from normpos.files import write_lines
from normpos.data.prepare import Context, Recipe, Text
from normpos.data.tokenize import MosesSpec

COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"  # multi30k/dataset master, PROVENANCE.md section 4
BASE_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{COMMIT}/data/task1/raw"
# Our split name -> the repository's file stem.
SPLIT_FILES = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
SHA256 = {  # of the .gz files (PROVENANCE.md section 4, each equal to the repository's git blob)
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}
CLEAN = CleanRule(min_words=1, max_words=175, ratio=1.5)  # prepare-iwslt14.sh


class Multi30k(Recipe):
    name, src, tgt = "multi30k", "de", "en"
    default_vocab = {"bpe": 8000, "sentencepiece": 8000}

    def resources(self, options):
        return [Resource(name, f"{BASE_URL}/{name}", Identity(sha256=sha)) for name, sha in SHA256.items()]

    def train_resources(self, options):
        return ["train.de.gz", "train.en.gz"]

    def default_sources(self):
        staged = shared_data_dir() / "multi30k" / "task1" / "raw"
        return [str(staged)] if staged.is_dir() else []

    def build_text(self, ctx: Context) -> Text:
        work, out = ctx.work, ctx.out
        raw = {split: {lang: ctx.fetched[f"{stem}.{lang}.gz"].path() for lang in (self.src, self.tgt)}
               for split, stem in SPLIT_FILES.items()}
        tok = {split: {} for split in SPLIT_FILES}
        ref = {split: {} for split in ("valid", "test")}
        for lang in (self.src, self.tgt):
            spec = MosesSpec(lang, lowercase=True)
            dst = work / f"train.tok.{lang}"
            ctx.step([dst], lambda: ctx.tokenize_file(raw["train"][lang], spec, dst), f"tokenizing train.{lang}")
            for split in ("valid", "test"):
                tok[split][lang] = out / "tok" / f"{split}.{lang}"
                ref[split][lang] = out / "ref" / f"{split}.{lang}"
                ctx.step([tok[split][lang]], lambda: ctx.tokenize_file(raw[split][lang], spec, tok[split][lang]),
                         f"tokenizing {split}.{lang}")
                ctx.step([ref[split][lang]], lambda: _decompress(raw[split][lang], ref[split][lang]),
                         f"untokenized reference {split}.{lang}")
        tok["train"] = {lang: work / f"train.{lang}" for lang in (self.src, self.tgt)}
        stats = ctx.stats_file(work, "clean")

        def clean():
            n_in, n_out = clean_corpus(work / f"train.tok.{self.src}", work / f"train.tok.{self.tgt}",
                                       tok["train"][self.src], tok["train"][self.tgt], CLEAN)
            ctx.write_stats(stats, {"rule": CLEAN.__dict__, "input_pairs": n_in, "output_pairs": n_out})
        ctx.step([*tok["train"].values(), stats], clean, f"cleaning train (clean-corpus-n {CLEAN})")
        return Text(tok, ref)


def _decompress(src: Path, dst: Path) -> None:
    write_lines(dst, read_lines(src))


RECIPE = Multi30k()
