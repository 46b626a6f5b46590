"""Theory check at initialization: Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture", sec. 3.3-3.4: Fig. 3 (gradient norms of the FFN weights), Lemma 2 (hidden-state norms) and
Theorem 1 (last-layer gradient against depth), measured on fairseq models without training.

- ``measure``: :func:`measure_gradients`, one model (any registered normalization scheme) on real batches;
- ``predict``: what the lemma and the theorem predict, for the paper's model and for what fairseq builds;
- ``sweep``: the jobs of a run and its CSV rows; ``report``: figures and Markdown from that CSV;
- ``model``: models built as fairseq-train builds them; ``data``: the real text, binarized;
- ``cli``: ``python -m normpos.theory``.
"""


def __getattr__(name):
    # imported on first use, so that ``python -m normpos.theory`` can set up the environment before torch loads
    if name == "measure_gradients":
        from .measure import measure_gradients

        return measure_gradients
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
