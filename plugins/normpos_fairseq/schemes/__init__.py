"""Normalization schemes, chosen by one name (``--norm-scheme``).

Each scheme is one small module in this folder that subclasses :class:`NormScheme` and registers itself
with :func:`register_scheme`. This registry is the one place that decides what a scheme does to the model;
the architectures never branch on scheme names.
"""

from typing import Dict, List

from torch import nn


class NormScheme:
    """What a normalization scheme may change. The defaults keep fairseq's own Transformer."""

    name: str = ""
    #: one line for help texts and README tables
    summary: str = ""

    def configure(self, args) -> None:
        """Set fairseq's own options (e.g. ``encoder_normalize_before``) on the parsed args.

        Raise ``ValueError`` when the user asked for something the scheme contradicts.
        """

    def initialize(self, model: nn.Module, args) -> None:
        """Scheme-specific initialization, run once after the whole model is built."""


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


# Importing the modules registers the schemes.
from . import post_ln, pre_ln  # noqa: E402,F401
