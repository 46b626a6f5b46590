"""ScaleNorm at every norm site in the Pre-LN position, plus FixNorm on the word embeddings
(scheme ``scalenorm_fixnorm``).

Nguyen & Salazar 2019, "Transformers without Tears: Improving the Normalization of Self-Attention"
(IWSLT 2019, arXiv:1910.05895). Their best low-resource setting is PreNorm + FixNorm + ScaleNorm:

- ScaleNorm (``modules/scalenorm.py``): y = g * x / ||x||, one learned scalar g per norm site, initialised to
  sqrt(d). Pre-LN: x_{l+1} = x_l + F(ScaleNorm(x_l)), and each stack's final norm is a ScaleNorm too (the
  authors' code, tnq177/transformers_without_tears ``layers.py``, builds 2N + 1 / 3M + 1 ScaleNorms).
- FixNorm (Nguyen & Chiang 2018): every word embedding is scaled to length 1, w / ||w||, in every forward
  pass (the authors' ``model.py`` applies ``F.normalize(self.word_embedding, dim=-1)`` in ``forward`` and in
  ``beam_decode``; the stored parameter stays unnormalized and the gradient goes through the division).
  Their one joint embedding matrix is the source input, target input and output (softmax) embedding; here
  that is ``encoder.embed_tokens``, ``decoder.embed_tokens`` and ``decoder.output_projection``. Inputs are
  then multiplied by fairseq's ``embed_scale`` sqrt(d), as the authors' ``get_input`` does; the logits use
  the unit vectors (their ``logit_fn``), so the final ScaleNorm's g sets the logit range.
  With FixNorm the authors initialise the embeddings uniform in [-0.01, 0.01] (``model.py``), done here in
  ``initialize`` (``--scalenorm-fixnorm-embed-init``), for every row, padding included, as theirs.

How FixNorm is attached: forward hooks registered in ``initialize``, not a parametrization, so that the
state_dict keeps fairseq's keys (``decoder.embed_tokens.weight``...) and the decoder's input/output tie stays
one ``Parameter`` (``output_projection.weight is embed_tokens.weight``):

- on each embedding: lookup(W)[i] / ||lookup(W)[i]|| = (W / ||W||)[i], i.e. its output rows made unit;
- on the output projection (no bias): h W^T / ||W_j|| = h (W / ||W||)^T, its logits divided by row norms.

Hooks live on the modules, so a model rebuilt by fairseq (resume, ``fairseq-generate``, EMA copies) gets them
again; nothing about them is stored. The authors' schedule: no warm-up, constant lr decayed by 0.8 when dev
BLEU stalls (``configs/variant/scalenorm_fixnorm_constant.yaml``).

Deviations from the authors' model (tnq177/transformers_without_tears, ``configurations.py`` defaults), kept
so that the scheme changes only the norms and the embeddings of fairseq's Transformer:
- output bias: their ``use_bias = True`` adds a learned bias per vocabulary entry to the logits
  (``model.py``: ``out_bias``, zero at init, ``F.linear(h, W, bias=out_bias)``); fairseq's tied output
  projection has none, and here neither (the hook above needs a bias-free projection);
- initialization: they draw all four attention projections from N(0, sqrt(2 / (5 d))) ("the smaller std of
  the feed-forward module", ``layers.py``) and the FFN weights from Xavier-normal N(0, sqrt(2 / (d + d_ff))),
  every bias zero; here the attention keeps fairseq's Xavier-uniform init and the FFN ``--ffn-init``'s.
Only the embedding init (uniform in [-0.01, 0.01]) and ScaleNorm's eps = 1e-5 follow theirs.
"""

import torch
from torch import nn

from ..modules.scalenorm import ScaleNorm
from . import NormScheme, place_norms_before, register_scheme

EMBED_INIT = 0.01  # tnq177/transformers_without_tears model.py: uniform(-0.01, 0.01) when fix_norm
_TINY = 1e-12  # only guards a division by an all-zero row


def _unit_rows(module, inputs, output):
    """Forward hook of an embedding: each looked-up vector scaled to length 1 (FixNorm)."""
    x = output.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp(min=_TINY)).type_as(output)


def _unit_weight_logits(module, inputs, output):
    """Forward hook of a bias-free output projection: logits as if each weight row had length 1."""
    norms = module.weight.float().norm(dim=-1).clamp(min=_TINY)
    return (output.float() / norms).type_as(output)


@register_scheme
class ScaleNormFixNorm(NormScheme):
    name = "scalenorm_fixnorm"
    summary = "Pre-LN with ScaleNorm g x/||x|| (g = sqrt(d) at init) at every norm site; unit-length word embeddings"
    paper = 'Nguyen & Salazar 2019, "Transformers without Tears" (arXiv:1910.05895)'

    def add_args(self, parser) -> None:
        parser.add_argument("--scalenorm-fixnorm-embed-init", type=float, metavar="R", default=EMBED_INIT,
                            help=f"word embeddings start uniform in [-R, R] (default {EMBED_INIT}, the authors')")

    def configure(self, args) -> None:
        if not _embed_init(args) > 0:
            raise ValueError(f"--scalenorm-fixnorm-embed-init must be > 0, got {_embed_init(args)}")
        place_norms_before(args)

    def build_norm(self, dim, site, args):
        return ScaleNorm(dim)  # every site, the stacks' final norms included

    def initialize(self, model, args, task) -> None:
        embeddings = _unique([model.encoder.embed_tokens, model.decoder.embed_tokens])
        projection = model.decoder.output_projection
        if not isinstance(projection, nn.Linear) or projection.bias is not None:
            raise ValueError("--norm-scheme scalenorm_fixnorm needs a bias-free linear output projection "
                             "(no adaptive softmax)")
        r = _embed_init(args)
        with torch.no_grad():
            for weight in _unique([e.weight for e in embeddings] + [projection.weight]):
                nn.init.uniform_(weight, -r, r)  # one draw per distinct matrix: a tied one is drawn once
        for embedding in embeddings:
            embedding.register_forward_hook(_unit_rows)
        projection.register_forward_hook(_unit_weight_logits)


def _embed_init(args) -> float:
    value = getattr(args, "scalenorm_fixnorm_embed_init", None)  # None/absent when not given
    return EMBED_INIT if value is None else value


def _unique(items):
    # --share-all-embeddings makes the encoder's and decoder's embedding one module (and one weight)
    seen = {}
    for item in items:
        seen.setdefault(id(item), item)
    return list(seen.values())
