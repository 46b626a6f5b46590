"""Start fairseq-train as a child process and stop it."""

import subprocess
from typing import List


class Training:
    """One fairseq-train process; ``lines`` yields its merged stdout/stderr line by line."""

    def __init__(self, argv: List[str], env: dict):
        # same process group as the sweep: killing the sweep (Ctrl-C, scancel) stops the training too
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = self.proc.stdout

    def stop(self) -> None:
        self.proc.terminate()  # fairseq's data workers are daemonic and exit with it

    def wait(self) -> int:
        return self.proc.wait()
