"""When the file system refuses a write (a full disk, a read-only folder): one line, and the sweep goes on.

Style guide rule 5 (a killed or failed step loses nothing) applied to the disk itself. Two places:

- ``RunRootWritable``, a Hydra callback (``hydra.callbacks`` in configs/train.yaml): before Hydra creates its
  own folders under ``run.root`` (``${run.root}/.hydra/...``, where a failure is a Hydra traceback), check that a
  small file can be written there; if not, one line ``normpos: error: ...`` and exit status 2.
- ``record_failure``, the sweep app's guard around one run: an OSError from our own writes (the run's lock,
  run.json, config.yaml, train.log, metrics.jsonl, status.json) or from repairing a checkpoint ends that run
  as ``failed`` with the reason (in status.json and the sweep's log when they can still be written), in one
  line, and the next run of the sweep is tried. fairseq's own failed checkpoint writes end the training
  process, which the runner records as failed in the usual way; its checkpoint_last.pt, copied in place, may
  be truncated then, and the next try resumes from the newest good checkpoint
  (``checkpoints.repair_resume_point``).
"""

import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback

from normpos.files import write_json

from . import sweep_log
from .checkpoints import remove_partial_writes
from .run_one import FINAL, read_status


def _reason(err: OSError) -> str:
    # str(err) keeps errno, message and file: "[Errno 28] No space left on device: '.../status.json'"
    return f"{type(err).__name__}: {err}"


def record_failure(directory: Path, err: OSError) -> str:
    """Record the run in ``directory`` as failed because of ``err``; print one line; return ``"failed"``."""
    reason = _reason(err)
    try:
        # fairseq's half-written checkpoint temp files hold the space that status.json needs on a full disk
        remove_partial_writes(directory / "checkpoints")
        status = read_status(directory)
        if status and status.get("status") in FINAL:
            # training ended and was recorded; what failed came after it (scoring, pruning): keep the outcome
            outcome = f"status stays {status['status']}"
        else:
            write_json(directory / "status.json", {"status": "failed", "reason": reason}, sort_keys=True)
            outcome = "recorded in status.json"
    except OSError as again:
        outcome = f"status.json not written: {again.strerror or again}"
    try:
        sweep_log.record(directory, "failed", reason)  # the sweep's summary and exit status count it
    except OSError as again:
        outcome += f"; not in the sweep's log: {again.strerror or again}"
    print(f"normpos: error: [{directory}] failed: {reason} ({outcome}); the sweep goes on",
          file=sys.stderr, flush=True)
    return "failed"


class RunRootWritable(Callback):
    """Refuse, in one line, a ``run.root`` where nothing can be written, before Hydra writes there."""

    def on_run_start(self, config, **kwargs) -> None:
        self.check(config)

    def on_multirun_start(self, config, **kwargs) -> None:
        self.check(config)

    @staticmethod
    def check(config) -> None:
        root = Path(str(config.run.root))
        try:
            root.mkdir(parents=True, exist_ok=True)
            # one byte, flushed: a full disk refuses the data, a read-only one the file itself
            with tempfile.NamedTemporaryFile(dir=root, prefix=".normpos-write-check-") as probe:
                probe.write(b"\n")
                probe.flush()
        except OSError as err:
            print(f"normpos: error: run.root {root} cannot be written: {err.strerror or err}",
                  file=sys.stderr, flush=True)
            raise SystemExit(2)  # Hydra reports exceptions from here as warnings and goes on; exiting stops it
