"""Where the fairseq plugin lives, for command lines (``--user-dir``)."""

from pathlib import Path

import normpos_fairseq

PLUGIN_DIR = Path(normpos_fairseq.__file__).resolve().parent
