"""Initialization of the feed-forward weights (fairseq ``fc1``/``fc2``), the way the paper ran it or as today.

fairseq changed this after Xiong et al.'s experiments:

- ``xavier`` (fairseq <= 0.9, the paper's): a module-level ``Linear`` helper in
  ``fairseq/modules/transformer_layer.py`` gave fc1/fc2 Xavier-uniform weights and zero bias.
- ``torch_default`` (fairseq commit 73e1f683, 2020-03-20, PR #1092, and every release since, including
  ve-fairseq 0.12.3): plain ``nn.Linear``, i.e. kaiming-uniform weights with a=sqrt(5)
  (std = 1/sqrt(3 * fan_in)) and a nonzero uniform bias.

Attention projections were Xavier in both and are left alone. Gradient norms at initialization (the
paper's Fig. 3) depend on this choice.
"""

from torch import nn

FFN_INITS = ("xavier", "torch_default")


def apply_ffn_init(model: nn.Module, how: str) -> int:
    """Re-initialize every ``fc1``/``fc2`` in the encoder and decoder layers; return how many were set."""
    if how not in FFN_INITS:
        raise ValueError(f"unknown --ffn-init {how!r}; valid: {', '.join(FFN_INITS)}")
    if how == "torch_default":
        return 0  # what fairseq builds already
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.split(".")[-1] in ("fc1", "fc2"):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0.0)
            count += 1
    return count
