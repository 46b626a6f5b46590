"""Load fairseq checkpoints with torch's ``weights_only`` protection on.

A checkpoint is a pickle, and unpickling can run any code the file asks for. torch 2.6 made ``torch.load``
default to ``weights_only=True``: a restricted unpickler that builds tensors and plain containers and
refuses any other class or function unless it is allowlisted (torch docs, "torch.load" and
``torch.serialization.add_safe_globals``). fairseq's checkpoints hold a few more types beside the weights,
so at import this plugin allowlists exactly those (found by trial with
``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints of every scheme, made the way
fairseq-train makes them, and on what fairseq broadcasts when several GPUs resume):

- ``argparse.Namespace``: ``cfg.model`` of every checkpoint (fairseq keeps a legacy architecture's
  arguments as a Namespace);
- numpy ``ndarray`` of int64 (``_reconstruct``, ``ndarray``, ``dtype``, the int64 dtype class): the
  ``_bleu_counts``/``_bleu_totals`` meters that ``--eval-bleu`` keeps in ``extra_state["metrics"]``;
- what ``fairseq.distributed.utils.broadcast_object`` sends when rank 0 resumes for several GPUs
  (``Trainer.load_checkpoint``): the loaded state, whose ``cfg`` is now an OmegaConf ``DictConfig``
  (``DictConfig``, ``ListConfig``, ``AnyNode``, ``Metadata``, ``ContainerMetadata``, ``typing.Any``, the
  ``dict``/``list``/``int`` types it names, the ``collections.defaultdict`` resolver cache), with each
  tensor replaced by fairseq's ``_TensorPlaceholder``.

fairseq's own ``torch.load`` calls (resume, ``fairseq-generate``, ``load_checkpoint_to_cpu``) pass no
``weights_only``, so they get torch's default and this allowlist. The pipeline's own loads go through
``load_checkpoint`` below. Anything else in a file (``os.system``, an unknown class) is refused before it
runs, with one line saying what was refused and how to opt in.

Opting in, for a checkpoint you trust that holds other types (made by another fairseq version, with extra
objects pickled in): ``NORMPOS_TRUST_CHECKPOINTS=1`` turns the protection off for that process: this module
then sets torch's documented switch ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (read by torch at each load that
does not choose ``weights_only`` itself, i.e. fairseq's) and ``load_checkpoint`` passes
``weights_only=False``. Never the default. Setting torch's switch yourself has the same effect on both.
"""

import argparse
import collections
import logging
import os
import pickle
import re
import typing
import zipfile

import numpy as np
import torch
from fairseq.distributed.utils import _TensorPlaceholder
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

logger = logging.getLogger(__name__)

TRUST_ENV = "NORMPOS_TRUST_CHECKPOINTS"
TORCH_SWITCH = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_TRUE = {"1", "y", "yes", "true"}  # the values torch accepts for its own switches

# numpy arrays pickle as _reconstruct(ndarray, ...); numpy 2 moved it from numpy.core to numpy._core, so take
# it from what an array's __reduce__ names rather than from either path
_NUMPY_RECONSTRUCT = np.ndarray((0,), dtype=np.int64).__reduce__()[0]

FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    # --eval-bleu's count meters (int64 arrays)
    _NUMPY_RECONSTRUCT, np.ndarray, np.dtype, type(np.dtype(np.int64)),
    # a loaded state as broadcast to the other ranks: cfg is a DictConfig there, tensors are placeholders
    DictConfig, ListConfig, AnyNode, Metadata, ContainerMetadata, typing.Any, dict, list, int,
    collections.defaultdict, _TensorPlaceholder,
]


class CheckpointRefused(pickle.UnpicklingError, ValueError):
    """A checkpoint that asks for more than the types above: refused before any of it runs. A ValueError too,
    so that the pipeline's handlers of bad input report it as one line."""


def trusted() -> bool:
    """Whether this process was told to unpickle checkpoints in full (ours or torch's switch)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in (TRUST_ENV, TORCH_SWITCH))


def refusal(err: pickle.UnpicklingError, path) -> CheckpointRefused:
    """torch's many-line weights_only error about ``path`` as one line: what was refused, how to opt in."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
    if found:
        why = f"it asks to load {found.group(1)}, which is not a type fairseq checkpoints hold"
    else:
        lines = [line.strip() for line in text.split("Check the documentation")[0].splitlines() if line.strip()]
        why = f"torch's weights-only unpickler cannot read it ({lines[-1] if lines else type(err).__name__})"
    return CheckpointRefused(
        f"checkpoint {path} refused: {why}; if you trust whoever made the file, rerun with {TRUST_ENV}=1 "
        "(a checkpoint loaded that way can run code)"
    )


def load_checkpoint(path, map_location="cpu") -> dict:
    """The state dict of the fairseq checkpoint at ``path``, loaded with torch's weights_only protection.

    Raises FileNotFoundError (no file), CheckpointRefused (it asks for other types; a ValueError) or
    ValueError (damaged, e.g. truncated, or not a fairseq checkpoint)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # a complete zip checkpoint is memory-mapped, so checking a multi-GB one (the runner does, before a
        # resume) reads only its pickle; anything else (damaged, torch's pre-zip format) is read in full
        state = torch.load(path, map_location=map_location, weights_only=not trusted(),
                           mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise refusal(err, path) from None
    except (RuntimeError, EOFError, KeyError) as err:  # what torch's zip and legacy readers raise on bad bytes
        detail = (str(err).splitlines() or [""])[0].split(". ")[0]  # torch's first sentence; the rest is advice
        raise ValueError(
            f"checkpoint {path} is damaged or not a torch checkpoint ({type(err).__name__}: {detail})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"checkpoint {path} is not a fairseq checkpoint (no 'model' entry)")
    return state


torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)
if os.environ.get(TRUST_ENV, "").strip().lower() in _TRUE:
    os.environ[TORCH_SWITCH] = "1"  # for fairseq's own torch.load calls in this process (and its children)
    logger.warning("%s is set: checkpoints are unpickled in full, and a checkpoint can run code when loaded",
                   TRUST_ENV)
