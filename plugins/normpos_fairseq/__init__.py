"""fairseq user-dir plugin for Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture".

Load it with ``fairseq-train --user-dir plugins/normpos_fairseq`` (or ``import normpos_fairseq``).
Importing registers, all under the ``normpos_`` prefix:

- the model ``normpos_transformer`` and its architectures (``architectures/``), with the normalization
  scheme chosen by one name (``--norm-scheme``, see ``schemes/``);
- learning-rate schedulers that fairseq lacks (``lr_schedulers/``);
- the RAdam optimizer (``optim/``).

This package imports only fairseq and torch (layers point one way: the pipeline in ``scripts/normpos``
may use the plugin, never the reverse).
"""

from . import checkpoint_compat  # noqa: F401  (must run before any checkpoint is loaded)
from . import schemes  # noqa: F401
from .architectures import transformer_normpos  # noqa: F401
from .lr_schedulers import (  # noqa: F401
    constant_then_inverse_sqrt,
    step_once,
    warmup_inverse_sqrt,
)
from .optim import radam  # noqa: F401
