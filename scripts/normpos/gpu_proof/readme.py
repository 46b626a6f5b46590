"""The README.md of a proof's results folder, written from its record (``proof.json``): how it was made,
the time each part took, and the numbers of (a), (b) and (c), each with the file that holds it."""

from __future__ import annotations

from normpos.gpu_proof.bench import OURS

BUILT_IN = {"normpos_iwslt_de_en_post_ln": "fairseq transformer_iwslt_de_en (Post-LN)",
            "normpos_iwslt_de_en_pre_ln": "fairseq transformer_iwslt_de_en + normalize_before (Pre-LN)"}


def _num(value, digits=1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _machine(m: dict) -> str:
    if m.get("gpu"):
        return (f"{m['gpu']} ({m.get('gpu_memory_gib')} GiB, driver {m.get('driver')}), CUDA {m.get('cuda')}, "
                f"torch {m.get('torch')}, {m.get('cpu_count')} CPUs, Python {m.get('python')}, fairseq {m.get('fairseq')}")
    return f"{m.get('cpu')} CPU ({m.get('cpu_count')} cores), torch {m.get('torch')}, Python {m.get('python')}"


def _parts(proof: dict) -> list:
    lines = ["| part | planned s | used s | outcome |", "|---|---:|---:|---|"]
    for name, part in proof["parts"].items():
        lines.append(f"| {name} | {_num(part.get('planned_s'), 0)} | {_num(part.get('used_s'), 0)} | {part['outcome']} |")
    return lines


def _bench(bench: dict) -> list:
    lines = ["| precision | model | tokens/s | ratio ours / built-in | peak GPU MiB |", "|---|---|---:|---:|---:|"]
    for precision, result in bench["precisions"].items():
        if "models" not in result:
            lines.append(f"| {precision} | – | – | – | {result['error']} |")
            continue
        for ours in OURS:
            for name in (BUILT_IN[ours], ours):
                model = result["models"][name]
                ratio = f"{result['ratios'][ours]:.3f}" if name == ours else ""
                lines.append(f"| {precision} | {name} | {_num(model['tokens_per_s'], 0)} | {ratio} | "
                             f"{_num(model.get('peak_mib'), 0)} |")
    first = next((r for r in bench["precisions"].values() if "models" in r), None)
    if first:
        lines.append("")
        lines.append(f"{first['updates_per_round']} updates of {first['max_tokens']} tokens per round, median of "
                     f"up to {first['rounds']} interleaved rounds; target ratio >= {first['target_ratio']}.")
    lines.append(f"Training precision for (b) and (c): **{bench['training_precision']}** ({bench['why']}).")
    return lines


def _packing(packing: dict) -> list:
    lines = ["| runs at a time | updates/s in all | per run | gain over 1 run | startup s | outcome |",
             "|---:|---:|---:|---:|---:|---|"]
    single = next((t["aggregate_updates_per_s"] for t in packing["trials"]
                   if t["concurrent"] == 1 and t["status"] == "measured"), None)
    for t in packing["trials"]:
        if t["status"] != "measured":
            lines.append(f"| {t['concurrent']} | – | – | – | – | {t['status']}: {t['reason']} |")
            continue
        gain = f"{t['aggregate_updates_per_s'] / single:.2f}x" if single else "–"
        lines.append(f"| {t['concurrent']} | {t['aggregate_updates_per_s']:.2f} | {t['per_run_updates_per_s']:.2f} | "
                     f"{gain} | {t['startup_seconds']:.0f} | measured over {t['window_seconds']:.0f} s |")
    chosen = packing.get("chosen")
    if chosen:
        lines += ["", f"Chosen: **{chosen['concurrent']} at a time** ({chosen['waves']} round(s) of the 7 runs), the "
                      f"packing that gives each run the most updates in the grid's time (updates by packing: "
                      f"{chosen['updates_in_time_by_packing']}); **{chosen['max_update']} updates per run**: {chosen['rule']}."]
    return lines


def _grid(grid: dict) -> list:
    lines = ["| configuration | outcome | updates | epochs | best valid loss | test BLEU (tok.) | sacreBLEU |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in grid.get("runs", []):
        outcome = row["status"] + (f" ({row['reason']})" if row.get("reason") else "")
        lines.append(f"| {row['label']} | {outcome} | {row['num_updates'] if row['num_updates'] is not None else '–'} | "
                     f"{row['epochs'] if row['epochs'] is not None else '–'} | {_num(row['best_valid_loss'], 3)} | "
                     f"{_num(row['test_tok_bleu'], 2)} | {_num(row['sacrebleu'], 2)} |")
    return lines


def render(proof: dict) -> str:
    m = proof["machine"]
    lines = [f"# GPU proof on {m.get('gpu') or m.get('cpu') + ' CPU'} (`make gpu-proof`)", "",
             f"`{proof['command']}`, {m['date_utc']} UTC, commit {m['commit']}; {_machine(m)}.",
             f"It took {proof['seconds']:.0f} s of a budget of {proof['budget']:.0f} s. " + proof["verdict"], "",
             "What it does (scripts/normpos/gpu_proof): (a) ours against fairseq's built-in Transformer, IWSLT "
             "shape, per precision; (b) aggregate training speed of concurrent runs; (c) the Multi30k grid at the "
             "IWSLT model size (Xiong et al. 2020 sec. 3.2: Post-LN, Adam, lr {5e-4, 1e-3} x warm-up {1, 500, 4000}; "
             "sec. 4: Pre-LN without warm-up), one seed, every run with the same number of updates, test BLEU on "
             "Multi30k test2016 (beam 5, lenpen 1.2, best checkpoint by valid loss). One seed and a few minutes "
             "of training: a proof that the pipeline runs and what it costs, not a measurement of the paper's "
             "numbers.", "", "## Time", "", *_parts(proof)]
    if proof.get("bench"):
        lines += ["", "## a. Benchmark (`bench.json`)", "", *_bench(proof["bench"])]
    if proof.get("packing"):
        lines += ["", "## b. Packing (`packing.json`)", "", *_packing(proof["packing"])]
    if proof.get("grid"):
        grid = proof["grid"]
        lines += ["", "## c. Grid (`table.md`, `curves.png`, `speedup.png`; run folders in `runs.tar.gz`)", "",
                  f"Precision {grid['precision']}; report: {grid.get('report')}.", "", *_grid(grid)]
    lines += ["", "## Files", "", "`runs.tar.gz` holds the scratch folder without checkpoints: `runs/` (each run's "
              "run.json, command.sh, train.log, metrics.jsonl, status.json, score.json, hypotheses), `packing/` "
              "(each trial's fairseq logs), `bench/`, `grid/` (the sweeps' output), `report/` (LaTeX/CSV tables, "
              "PDF figures, speedup.json) and `proof.json` (this record)."]
    return "\n".join(lines) + "\n"
