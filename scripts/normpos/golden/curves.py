"""Run one golden case and return its record: the curve fairseq logged (or the schedule's arithmetic) and, for
training cases, the SHA-256 of the final weights.

A training case is the pipeline's own command (``experiment.command.train_argv`` of the composed, validated
config) started by the pipeline's own launcher (``experiment.launch.Training``: one process, or one per rank),
in the environment the runner gives it (``run_one.child_env``: the config's ``train.numerics``). Logged values
are kept as the strings fairseq printed, so that the comparison is exact.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from normpos.experiment import command, launch, run_one
from normpos.experiment.fairseq_log import LINE
from normpos.experiment.schema import ExperimentCfg, validate

from .cases import Case
from .corpus import REPO, GoldenError

# what each training record keeps of fairseq's per-update line (wpb/bsz: the batches themselves)
TRAIN_KEYS = ("num_updates", "loss", "nll_loss", "gnorm", "lr", "wpb", "bsz")
EPOCHS, UPDATES_PER_EPOCH = 5, 10  # schedule cases


def quiet() -> None:
    """Hydra's and fairseq's deprecation chatter would bury the one line each case prints."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("hydra").setLevel(logging.WARNING)


def composed(overrides: Sequence[str]) -> ExperimentCfg:
    """``configs/train.yaml`` composed with ``overrides`` by Hydra, validated."""
    from hydra import compose, initialize_config_dir

    # version_base 1.1: Hydra's version base is process-wide, and fairseq (schedule cases build its scheduler
    # in this process) still calls hydra.experimental.initialize, which versions >= 1.2 refuse
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        return validate(compose("train", overrides=list(overrides)))


def config(case: Case, data_bin: Path, extra: Sequence[str] = ()) -> ExperimentCfg:
    """The case's config: ``experiment=golden`` + its overrides + ``extra``."""
    return composed(["experiment=golden", f"dataset.data_bin={data_bin}", *case.overrides, *extra])


def portable_command(argv: List[str], data_bin: Path, workdir: Path) -> str:
    """The command for the record, with this machine's folders as placeholders."""
    return (shlex.join(["python", *argv[1:]]).replace(str(workdir), "$WORKDIR").replace(str(data_bin), "$DATA_BIN"))


def weights_sha256(checkpoint: Path) -> str:
    """SHA-256 over every parameter and buffer of the saved model (names, dtypes, shapes and bytes, by name)."""
    import torch
    from normpos_fairseq.checkpoint_compat import load_checkpoint

    state = load_checkpoint(checkpoint)["model"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
            tensor = tensor.view(torch.int16)
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def train_records(cfg: ExperimentCfg, workdir: Path, env: Optional[Mapping[str, str]] = None) -> List[dict]:
    """Train ``cfg`` into ``workdir`` with the pipeline's command and launcher; fairseq's per-interval records
    (``train_inner``), values as the strings it printed. Raises GoldenError when fairseq fails."""
    argv = command.train_argv(cfg, workdir)
    workdir.mkdir(parents=True, exist_ok=True)  # ranks > 0 log there
    training = launch.Training(argv, run_one.child_env(cfg, 0, env), processes=command.local_processes(cfg),
                               log_dir=workdir)
    records: List[dict] = []
    tail: List[str] = []
    try:
        for line in training.lines:
            tail = (tail + [line.rstrip()])[-5:]
            match = LINE.search(line)
            if match and match.group(1) == "train_inner":
                records.append(json.loads(match.group(2)))
    finally:
        code = training.wait()
    if code != 0:
        raise GoldenError(f"fairseq-train exited {code}: {' / '.join(tail[-3:])}")
    return records


def run_train(case: Case, data_bin: Path, workdir: Path, extra: Sequence[str] = (),
              env: Optional[Mapping[str, str]] = None) -> dict:
    """Train the case into ``workdir`` (which must not hold a checkpoint); its record."""
    cfg = config(case, data_bin, extra)
    try:
        records = train_records(cfg, workdir, env)
    except GoldenError as err:
        raise GoldenError(f"golden case {case.name}: {err}") from None
    return train_record(case, cfg, data_bin, workdir, records)


def train_record(case: Case, cfg: ExperimentCfg, data_bin: Path, workdir: Path, records: List[dict]) -> dict:
    return {"case": case.name, "overrides": list(case.overrides),
            "command": portable_command(command.train_argv(cfg, workdir), data_bin, workdir),
            "curve": [{key: str(raw.get(key)) for key in TRAIN_KEYS} for raw in records],
            "weights_sha256": weights_sha256(workdir / "checkpoints" / "checkpoint_last.pt")}


def run_trains_in_one_process(cases: Sequence[Case], data_bin: Path, workdir: Path) -> dict:
    """The records of the one-process training cases among ``cases`` (data-parallel ones start their own ranks:
    :func:`run_train`), their fairseq-train command lines run one after another by one child process
    (normpos.fairseq_batch) instead of one process each: the same commands, in the environment the runner gives
    each case (refused unless every case's is the same), and a process start-up (~4 s) saved per case. Each
    record is what :func:`run_train` gives for the case."""
    from normpos.fairseq_batch import run_batch

    configs = {case.name: config(case, data_bin) for case in cases}
    cases = [case for case in cases if command.local_processes(configs[case.name]) == 1]
    cfgs = {case.name: configs[case.name] for case in cases}
    env = run_one.child_env(cfgs[cases[0].name], 0)
    for name, cfg in cfgs.items():
        if run_one.child_env(cfg, 0) != env:
            raise GoldenError(f"golden case {name} needs another environment than {cases[0].name}")
    argvs = {name: command.train_argv(cfg, workdir / name) for name, cfg in cfgs.items()}
    # each command from its tool's name on: after "python -m normpos.fairseq_run"
    results = run_batch([argv[argv.index("train"):] for argv in argvs.values()], workdir / "commands", env)
    out = {}
    for case, (code, log) in zip(cases, results):
        if code != 0:
            tail = [line for line in log.splitlines() if line.strip()][-3:]
            raise GoldenError(f"golden case {case.name}: fairseq-train exited {code}: {' / '.join(tail)}")
        records = [json.loads(m.group(2)) for m in map(LINE.search, log.splitlines())
                   if m and m.group(1) == "train_inner"]
        out[case.name] = train_record(case, cfgs[case.name], data_bin, workdir / case.name, records)
    return out


def run_schedule(case: Case, data_bin: Path) -> dict:
    """The lr fairseq's scheduler (built from the pipeline's command line) gives, called in the trainer's
    order: ``step_begin_epoch(e)``, ``step_update(n)`` after each update, ``step(e)`` at the epoch's end."""
    from normpos.fairseq_run import optimizer_and_scheduler

    cfg = config(case, data_bin)
    argv = command.train_argv(cfg, Path("unused"))
    _, scheduler = optimizer_and_scheduler(argv[4:])  # after "python -m normpos.fairseq_run train"
    curve, updates = [], 0
    for epoch in range(1, EPOCHS + 1):
        scheduler.step_begin_epoch(epoch)
        for _ in range(UPDATES_PER_EPOCH):
            updates += 1
            curve.append({"epoch": epoch, "num_updates": updates, "lr": repr(float(scheduler.step_update(updates)))})
        scheduler.step(epoch, None)
    return {"case": case.name, "overrides": list(case.overrides),
            "command": portable_command(argv, data_bin, Path("unused")), "curve": curve}


def run_case(case: Case, data_bin: Path, workdir: Path) -> dict:
    return run_train(case, data_bin, workdir) if case.kind == "train" else run_schedule(case, data_bin)


def differences(expected: dict, got: dict) -> List[str]:
    """What changed between two records of one case, in words (empty when equal): the first differing
    record of the curve, how many differ, and the weights."""
    words = []
    old, new = expected.get("curve", []), got.get("curve", [])
    changed = [i for i in range(max(len(old), len(new))) if i >= len(old) or i >= len(new) or old[i] != new[i]]
    if changed:
        i = changed[0]
        if i >= len(old) or i >= len(new):
            words.append(f"curve length {len(old)} -> {len(new)}")
        else:
            fields = ", ".join(f"{k} {old[i].get(k)} -> {new[i].get(k)}" for k in new[i] if old[i].get(k) != new[i].get(k))
            words.append(f"{len(changed)} of {len(new)} records differ, first at record {i + 1}: {fields}")
    if expected.get("weights_sha256") != got.get("weights_sha256"):
        words.append(f"final weights {str(expected.get('weights_sha256'))[:12]} -> {str(got.get('weights_sha256'))[:12]}")
    return words
