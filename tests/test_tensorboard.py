"""``train.tensorboard=true``: each run writes fairseq's TensorBoard event files into its own folder
(``<run dir>/tensorboard/{train_inner,train,valid}``), holding the losses fairseq logged, so that
``tensorboard --logdir results/runs`` shows every run of a sweep side by side; the run's identity (its folder)
does not change with it. The event files are read with TensorBoard's own record format and protobuf
(tensorboardX's copy of ``event.proto``), not with our code."""

import json
import struct
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from normpos.experiment import command
from normpos.experiment.schema import validate
from test_experiment_runs import ENV, run_dirs, sweep_argv

pytestmark = pytest.mark.slow


def scalars(folder) -> dict:
    """{tag: {step: value}} of every scalar in the TFRecord event files of ``folder``: each record is a
    little-endian uint64 length, its masked CRC32, the serialized ``Event``, and the data's CRC32."""
    from tensorboardX.proto.event_pb2 import Event

    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def test_each_run_logs_fairseqs_numbers_into_its_own_tensorboard_folder(tiny_bin, tmp_path):
    overrides = ["variant=preln_constant", "train.max_update=6", "train.tensorboard=true", "seed=1,2",
                 "train.extra_args=[--validate-interval-updates,3]"]
    proc = subprocess.run(sweep_argv(tiny_bin, tmp_path, *overrides), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dirs = run_dirs(tmp_path)
    assert [d.name for d in dirs] == ["seed-1", "seed-2"]
    for run in dirs:
        assert "--tensorboard-logdir" in (run / "command.sh").read_text()
        assert sorted(p.name for p in (run / "tensorboard").iterdir()) == ["train", "train_inner", "valid"]
        logged = scalars(run / "tensorboard" / "valid")
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        # the valid losses fairseq printed (metrics.jsonl is parsed from its log), at the same updates
        assert {m["num_updates"]: m["valid_loss"] for m in metrics} == \
            pytest.approx({step: value for step, value in logged["loss"].items()}, abs=1e-3)
        assert sorted(logged["loss"]) == [3, 6]
        inner = scalars(run / "tensorboard" / "train_inner")
        assert sorted(inner["loss"]) == list(range(1, 7)) and "lr" in inner  # every update, log_interval 1
    first, second = (scalars(d / "tensorboard" / "valid")["loss"] for d in dirs)
    assert first != second  # two seeds, two curves: each run has its own folder


def test_tensorboard_is_not_part_of_the_runs_identity():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.1"):
        plain = validate(compose("train", overrides=["experiment=sec4_preln_vs_postln"]))
        logged = validate(compose("train", overrides=["experiment=sec4_preln_vs_postln", "train.tensorboard=true"]))
    assert command.config_name(plain) == command.config_name(logged)  # same run folder: a resume keeps its run
    argv = command.train_argv(logged, command.run_dir(logged))
    assert argv[argv.index("--tensorboard-logdir") + 1] == str(command.run_dir(logged) / "tensorboard")
    assert "--tensorboard-logdir" not in command.train_argv(plain, command.run_dir(plain))
