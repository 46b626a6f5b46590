"""Normalization schemes, chosen by one name (``--norm-scheme``).

Each scheme is one small module in this folder that subclasses :class:`NormScheme` and registers itself
with :func:`register_scheme`; every module here is imported (and so registered) when the package is. This
registry is the one place that decides what a scheme does to the model; the architectures never branch on
scheme names.

A scheme acts at four points, all optional (the defaults build fairseq's own Transformer):

1. :meth:`NormScheme.configure` sets fairseq's options on the parsed args before anything is built
   (e.g. ``encoder_normalize_before``) and refuses contradictory ones.
2. :meth:`NormScheme.build_norm` gives the module that sits where fairseq puts a LayerNorm (each
   sub-layer's norm and, with normalize-before, the stack's final norm): RMSNorm, ScaleNorm, ``Identity``...
3. :meth:`NormScheme.build_residual` gives the module that joins a sub-layer's output ``x`` to its input
   ``residual`` (fairseq's ``residual + x``): DeepNorm's ``alpha * residual + x``, ReZero's
   ``residual + alpha * x``...
4. :meth:`NormScheme.initialize` runs once on the whole built model: scaled initializations, a profiling
   pass, extra hooks.
"""

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

#: the sub-layers of a layer, in the order the layer's forward joins them to the residual stream
SUBLAYERS = {"encoder": ("self_attn", "ffn"), "decoder": ("self_attn", "encoder_attn", "ffn")}

#: fairseq's attribute name of the LayerNorm that belongs to each sub-layer
NORM_ATTRS = {"self_attn": "self_attn_layer_norm", "encoder_attn": "encoder_attn_layer_norm",
              "ffn": "final_layer_norm"}


@dataclass(frozen=True)
class Site:
    """Where a module sits: ``stack`` (encoder/decoder), 0-based ``layer`` (None for the stack's final norm),
    ``sublayer`` (one of :data:`SUBLAYERS`, or "final"), and both stacks' depths (N, M)."""

    stack: str
    layer: Optional[int]
    sublayer: str
    encoder_layers: int
    decoder_layers: int

    @property
    def depth(self) -> int:
        """Layers in this site's own stack."""
        return self.encoder_layers if self.stack == "encoder" else self.decoder_layers


class Residual(nn.Module):
    """fairseq's residual connection: ``residual + x`` (x is the sub-layer's output after dropout)."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual + x


class NormScheme:
    """What a normalization scheme may change. The defaults keep fairseq's own Transformer."""

    name: str = ""
    #: one line for help texts and README tables
    summary: str = ""
    #: the paper that introduced it, for docs and tables
    paper: str = ""

    def add_args(self, parser) -> None:
        """Options of this scheme (prefix them with the scheme's name); fairseq shows them under --help."""

    def configure(self, args) -> None:
        """Set fairseq's own options (e.g. ``encoder_normalize_before``) on the parsed args.

        Raise ``ValueError`` when the user asked for something the scheme contradicts.
        """

    def build_norm(self, dim: int, site: Site, args) -> Optional[nn.Module]:
        """The module at ``site`` in place of fairseq's LayerNorm; None keeps fairseq's."""
        return None

    def build_residual(self, site: Site, args) -> nn.Module:
        """The module that computes a sub-layer's residual join ``f(x, residual)``."""
        return Residual()

    def initialize(self, model: nn.Module, args, task) -> None:
        """Scheme-specific initialization, run once after the whole model is built (and after the FFN init)."""


def place_norms_after(args, contradiction: str) -> None:
    """Post-norm positions for ``configure``: the norm follows each residual join and no stack has a final
    norm. Asking for ``--encoder/decoder-normalize-before`` as well raises ``ValueError(contradiction)``."""
    if getattr(args, "encoder_normalize_before", False) or getattr(args, "decoder_normalize_before", False):
        raise ValueError(contradiction)
    args.encoder_normalize_before = False
    args.decoder_normalize_before = False


def place_norms_before(args) -> None:
    """Pre-norm positions for ``configure``: each norm inside its residual branch, and fairseq then builds
    each stack's final norm."""
    args.encoder_normalize_before = True
    args.decoder_normalize_before = True


SCHEMES: Dict[str, NormScheme] = {}


def register_scheme(cls):
    """Class decorator: make a scheme selectable by its ``name``."""
    if not cls.name or cls.name in SCHEMES:
        raise ValueError(f"normalization scheme name missing or registered twice: {cls.name!r}")
    SCHEMES[cls.name] = cls()
    return cls


def scheme_names() -> List[str]:
    return sorted(SCHEMES)


def get_scheme(name: str) -> NormScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization scheme {name!r}; valid: {', '.join(scheme_names())}"
        ) from None


# Importing every module of this folder registers its schemes (one file per scheme, nothing to list here).
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
