#!/usr/bin/env bash
# Create .venv and install everything from the project's own files (make setup calls this).
#   TORCH       the torch requirement, default torch==2.13.0 (a CPU build on a machine that has its wheel;
#               see README for a CUDA build)
#   TORCH_INDEX optional extra index URL for torch (e.g. PyTorch's CUDA wheel index)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $($PYTHON --version)"
    "$PYTHON" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
echo "setup: installing $TORCH"
if [ -n "${TORCH_INDEX:-}" ]; then
    "${pip[@]}" "$TORCH" --extra-index-url "$TORCH_INDEX"
else
    "${pip[@]}" "$TORCH"
fi
echo "setup: installing requirements/lock.txt and requirements/test.txt"
"${pip[@]}" -r requirements/lock.txt -r requirements/test.txt
echo "setup: installing this project (plugins/normpos_fairseq, scripts/normpos) in editable mode"
"${pip[@]}" --no-deps -e .
"$venv/bin/python" -c "import fairseq, torch, normpos_fairseq; print('setup: ok, fairseq', fairseq.__version__, 'torch', torch.__version__)" 2>&1 | grep -v tensorboardX
