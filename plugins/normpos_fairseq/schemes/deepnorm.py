"""DeepNorm: Post-LN with an up-weighted residual and a down-scaled initialization.

Wang, Ma, Dong, Huang, Zhang and Wei 2022, "DeepNet: Scaling Transformers to 1,000 Layers",
arXiv:2203.00555, sec. 3 (Fig. 2) and Table 1 (encoder-decoder row). Every sub-layer G (self-attention,
cross-attention, FFN) is joined as

    x <- LN(alpha * x + G(x))

and the weights of the FFN (``fc1``, ``fc2``), the value projection (``v_proj``) and the attention output
projection (``out_proj``) start scaled by beta. With N encoder and M decoder layers (Table 1):

    encoder: alpha = 0.81 (N^4 M)^(1/16)    beta = 0.87 (N^4 M)^(-1/16)
    decoder: alpha = (3M)^(1/4)             beta = (12M)^(-1/4)

Which matrices, as the official code (microsoft/torchscale, ``architecture/encoder.py`` and
``decoder.py``) does it: every parameter whose name contains ``fc1``, ``fc2``, ``v_proj`` or ``out_proj``
in a stack gets that stack's beta -- weights *and biases*, and in the decoder also the cross-attention's
``encoder_attn.v_proj`` / ``encoder_attn.out_proj`` (they are decoder parameters, so the decoder's beta).
``q_proj`` / ``k_proj``, embeddings and LayerNorms are left as built.

What "Xavier init scaled by beta" means here (``--deepnorm-init``):

- ``torchscale`` (default, the reference implementation): keep the initialization the model was built
  with and multiply by beta. torchscale's attention (like fairseq's ``MultiheadAttention``) initializes
  q/k/v with Xavier-uniform gain 1/sqrt(2) and ``out_proj`` with gain 1, so ``v_proj`` ends at gain
  beta/sqrt(2), ``out_proj`` at gain beta, q/k stay at 1/sqrt(2). ``fc1``/``fc2`` are beta times what
  ``--ffn-init`` gave (Xavier-uniform, or torch's default; torchscale itself uses torch's default).
- ``paper``: the pseudo-code of the paper's Fig. 2 taken literally: ``xavier_normal_(w, gain=beta)`` for
  the weights of fc1/fc2/v_proj/out_proj and ``xavier_normal_(w, gain=1)`` for q_proj/k_proj; biases
  are left as built. This overrides ``--ffn-init`` and fairseq's 1/sqrt(2) on q/k/v.

Known discrepancy (not switchable here): for the encoder of an encoder-decoder, torchscale divides by
``(N^4 M)^(1/16) / 1.15``, i.e. its encoder beta is 1.15 (N^4 M)^(-1/16) (1.15 = 1/0.87), while the paper
says 0.87 (N^4 M)^(-1/16). We follow the paper's Table 1; the alphas and the decoder beta agree.

The scaling runs in :meth:`initialize`, i.e. after ``--ffn-init`` (``transformer_normpos.py`` calls
``apply_ffn_init`` first), so the FFN scaling is not undone. The paper trains DeepNet with warm-up
(sec. 5.1: Adam, inverse square root schedule, 4,000 warm-up updates, lr 5e-4 on WMT-17 En-De); see
``configs/variant/deepnorm_warmup.yaml``.
"""

from typing import Iterator, Tuple

import torch
from torch import nn

from . import NormScheme, Site, place_norms_after, register_scheme

DEEPNORM_INITS = ("torchscale", "paper")


def deepnorm_constants(stack: str, encoder_layers: int, decoder_layers: int) -> Tuple[float, float]:
    """(alpha, beta) of one stack of an encoder-decoder (Wang et al. 2022, Table 1)."""
    n, m = encoder_layers, decoder_layers
    if stack == "encoder":
        return 0.81 * (n ** 4 * m) ** (1 / 16), 0.87 * (n ** 4 * m) ** (-1 / 16)
    if stack == "decoder":
        return (3 * m) ** (1 / 4), (12 * m) ** (-1 / 4)
    raise ValueError(f"unknown stack {stack!r}")


class DeepNormResidual(nn.Module):
    """``alpha * residual + x``: the residual stream is up-weighted before the LayerNorm that follows."""

    def __init__(self, alpha: float):
        super().__init__()
        # a constant of the depths (which the checkpoint's args keep), not a learned value
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual * self.alpha + x

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.6g}"


def scaled_modules(layer: nn.Module) -> Iterator[Tuple[str, nn.Linear]]:
    """The Linear modules of one layer whose initialization DeepNorm scales by beta (as torchscale)."""
    yield "fc1", layer.fc1
    yield "fc2", layer.fc2
    for attn_name in ("self_attn", "encoder_attn"):
        attn = getattr(layer, attn_name, None)
        if attn is not None:
            yield f"{attn_name}.v_proj", attn.v_proj
            yield f"{attn_name}.out_proj", attn.out_proj


def unscaled_modules(layer: nn.Module) -> Iterator[Tuple[str, nn.Linear]]:
    """The query and key projections, which keep a gain-1 (paper) or fairseq's (torchscale) init."""
    for attn_name in ("self_attn", "encoder_attn"):
        attn = getattr(layer, attn_name, None)
        if attn is not None:
            yield f"{attn_name}.q_proj", attn.q_proj
            yield f"{attn_name}.k_proj", attn.k_proj


@register_scheme
class DeepNorm(NormScheme):
    name = "deepnorm"
    summary = "x_{l+1} = LN(alpha x_l + F(x_l)); fc1/fc2/v/out init scaled by beta (depth-dependent)"
    paper = 'Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers" (arXiv:2203.00555)'

    def add_args(self, parser) -> None:
        parser.add_argument(
            "--deepnorm-init", choices=DEEPNORM_INITS, default="torchscale",
            help="torchscale (default): multiply the built init of fc1/fc2/v_proj/out_proj by beta; "
                 "paper: xavier_normal gain beta for those, gain 1 for q_proj/k_proj (Fig. 2)",
        )

    def configure(self, args) -> None:
        # DeepNorm is a Post-LN variant: the LayerNorm follows each residual join
        place_norms_after(args, "--norm-scheme deepnorm is Post-LN (x = LN(alpha*x + G(x))); it contradicts "
                                "--encoder/decoder-normalize-before")

    def build_residual(self, site: Site, args) -> nn.Module:
        alpha, _ = deepnorm_constants(site.stack, site.encoder_layers, site.decoder_layers)
        return DeepNormResidual(alpha)

    def initialize(self, model: nn.Module, args, task) -> None:
        how = getattr(args, "deepnorm_init", None) or "torchscale"
        if how not in DEEPNORM_INITS:
            raise ValueError(f"unknown --deepnorm-init {how!r}; valid: {', '.join(DEEPNORM_INITS)}")
        n, m = args.encoder_layers, args.decoder_layers
        for stack in ("encoder", "decoder"):
            _, beta = deepnorm_constants(stack, n, m)
            for layer in getattr(model, stack).layers:
                with torch.no_grad():
                    for _, linear in scaled_modules(layer):
                        if how == "torchscale":
                            # torchscale: p.data.div_(1/beta) on every matching parameter, biases included
                            linear.weight.mul_(beta)
                            if linear.bias is not None:
                                linear.bias.mul_(beta)
                        else:
                            nn.init.xavier_normal_(linear.weight, gain=beta)
                    if how == "paper":
                        for _, linear in unscaled_modules(layer):
                            nn.init.xavier_normal_(linear.weight, gain=1.0)

