"""Several fairseq command lines in one Python process: the tests that run one per scheme, and the golden curves.

Each command runs as ``python -m normpos.fairseq_run TOOL ARGS`` would (fairseq's own ``cli_main``, our plugin,
pinned CPU numerics), one after another; each one's stdout and stderr go to its own file, redirected at the file
descriptor because fairseq's logging keeps the streams it found at import. What it saves is the start-up of a
process that imports torch and fairseq (~4 s of a 2-core machine) per command. fairseq's own tests run its
command-line tools in-process the same way (fairseq's ``tests/test_binaries.py`` calls ``train.main`` repeatedly),
and each of our commands still parses its own command line and seeds its own run.

    python -m normpos.fairseq_batch JOBS.json

JOBS.json holds ``[{"argv": ["train", DATA, ...], "log": PATH}, ...]``; the exit code of each command (2 for a
one-line error, 1 for an exception, whose traceback ends its log) is written to JOBS.json.codes as a JSON list.
A failing command does not stop the ones after it.
"""

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple


class BatchError(Exception):
    """The child process itself failed (not one of its commands)."""


def run_batch(commands: Sequence[Sequence[str]], workdir: Path, env: Optional[Mapping[str, str]] = None,
              timeout: int = 1800) -> List[Tuple[int, str]]:
    """Run ``commands`` (each ``[tool, args...]``, as for normpos.fairseq_run) in one child process with ``env``
    (default: ours); each one's exit code and output, in order."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [{"argv": [str(a) for a in argv], "log": str(workdir / f"command-{i}.log")} for i, argv in enumerate(commands)]
    path = workdir / "commands.json"
    path.write_text(json.dumps(jobs), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "normpos.fairseq_batch", str(path)], capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else dict(env))
    if proc.returncode != 0:
        raise BatchError(f"normpos.fairseq_batch exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    codes = json.loads(Path(str(path) + ".codes").read_text(encoding="utf-8"))
    return [(code, Path(job["log"]).read_text(encoding="utf-8")) for code, job in zip(codes, jobs)]


def run_logged(argv, log_path) -> int:
    from normpos import fairseq_run

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        return fairseq_run.main(list(argv))
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 (one command's crash is its own result; the next ones still run)
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (fd, *saved):
            os.close(handle)


def main(path: str) -> int:
    from normpos import numerics

    numerics.pin_process()  # before torch loads, as normpos.fairseq_run does for one command
    with open(path, encoding="utf-8") as f:
        jobs = json.load(f)
    codes = [run_logged(job["argv"], job["log"]) for job in jobs]
    with open(path + ".codes", "w", encoding="utf-8") as f:
        json.dump(codes, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
