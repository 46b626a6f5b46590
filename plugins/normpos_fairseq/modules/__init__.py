"""Normalization layers that the schemes place where fairseq puts a LayerNorm (one file per layer)."""
