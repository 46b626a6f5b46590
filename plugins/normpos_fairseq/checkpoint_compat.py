"""Let torch >= 2.6 load fairseq checkpoints.

torch 2.6 changed ``torch.load`` to ``weights_only=True`` by default. fairseq checkpoints pickle an
``argparse.Namespace`` and OmegaConf objects beside the weights, so resume, ``fairseq-generate`` and
checkpoint averaging all fail with an ``UnpicklingError``. fairseq calls ``torch.load`` without a
``weights_only`` argument, and torch's documented switch for such call sites is the environment variable
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (read at each call). We set it when the plugin is imported, which
fairseq does before it loads anything (``--user-dir``).

Security: a pickle can run code when loaded. Load only checkpoints you (or someone you trust) made;
the README says so.
"""

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
