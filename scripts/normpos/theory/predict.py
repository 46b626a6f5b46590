"""What Lemma 2 and Theorem 1 of Xiong et al. 2020 (sec. 3.3 and appendix) predict for the models we measure.

The paper proves its statements for one model: Xavier-Gaussian weights, FFN width d, W^Q = W^K = 0, no
dropout, input with E||x_0||^2 = d. fairseq's IWSLT model differs in each of these, so next to the paper's
formula each setting gets the value the same argument gives for what fairseq actually builds. All values
are E||x||^2 / d (so 1.5 means 1.5 d).

The argument, for an input x with ||x||^2 = d (a LayerNorm output, gain 1, bias 0):

- FFN (Lemma 1): fc1 has weight variance s1 and bias variance b1, so each of the f pre-activations has
  variance q = d*s1 + b1 (a sum of d independent terms); ReLU of a symmetric variable keeps half of its
  second moment, so E||ReLU||^2 = f*q/2; fc2 (weight variance s2, bias variance b2) gives
  E||FFN(x)||^2 / d = f*q/2 * s2 + b2 =: phi.
- Attention: with any attention weights the output is (sum_j a_j v_j) W^O + b^O, a convex combination of
  the values, so 0 <= E||out||^2 / d <= d*sO*(d*sV + bV) + bO =: alpha (the values have squared norm
  d*(d*sV + bV) and the average of vectors is no longer than the longest).
- Cross terms vanish in expectation: W^2 and W^O are zero-mean and independent of what they multiply.
- Dropout p (train mode) scales the second moment of what it drops by 1 / (1 - p).
- Input: fairseq embeds tokens with N(0, d^-1/2) times sqrt(d) (variance 1 per coordinate, ||.||^2 = d)
  and adds sinusoidal positions, whose squared norm is exactly d/2 (sin^2 + cos^2 on d/2 frequencies),
  so E||x_0||^2 = 1.5 d / (1 - p), not the paper's d.

Weight and bias variances of each init (fan_in -> fan_out):

- ``xavier`` (fairseq <= 0.9, the paper's) and the theory's Xavier-Gaussian: 2 / (fan_in + fan_out), bias 0;
- ``torch_default`` (nn.Linear, current fairseq): kaiming-uniform with a = sqrt(5), i.e. 1 / (3 fan_in),
  and bias U(+-1/sqrt(fan_in)), also 1 / (3 fan_in);
- fairseq's attention (both inits): W^V Xavier with gain 1/sqrt(2) (1 / (2d)), b^V nn.Linear default
  (1 / (3d)), W^O Xavier (1 / d), b^O = 0; the theory's: W^V, W^O Xavier-Gaussian (1/d), biases 0.

So phi = 1/2 under the theory (f = d), 4/9 with fairseq 0.9's Xavier and f = 2d, and 1/18 + 2/(9d) with
current fairseq's init (f = 2d): Post-LN's pre-norm sum is (1 + phi/(1-p)) d = 1.5 d, 1.49 d (p = 0.1)
and 1.06 d (p = 0.1) respectively.

Theorem 1: ||dL/dW^{2,L}||_F = O(d sqrt(ln d)) for Post-LN, independent of L: slope 0 in log-log against L;
O(d sqrt(ln d / L)) for Pre-LN: slope -1/2 (the final LayerNorm divides by ||x_L|| ~ sqrt(L) by Lemma 2).
Schemes without a derivation here (added later) get no prediction, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

Bounds = Optional[Tuple[float, float]]

# Theorem 1: exponent of L in the last-layer W^2 gradient norm
THEOREM1_SLOPE = {"post_ln": 0.0, "pre_ln": -0.5}


@dataclass(frozen=True)
class Init:
    """Weight and bias variances of the sub-layers of one setting (see the module docstring)."""

    d: int
    ffn_dim: int
    ffn_init: str
    theory: bool
    dropout: float

    def ffn_vars(self, fan_in: int, fan_out: int) -> Tuple[float, float]:
        """(weight variance, bias variance) of fc1 (d -> f) or fc2 (f -> d)."""
        if self.theory or self.ffn_init == "xavier":
            return 2.0 / (fan_in + fan_out), 0.0
        if self.ffn_init == "torch_default":
            return 1.0 / (3 * fan_in), 1.0 / (3 * fan_in)
        raise ValueError(f"no prediction for --ffn-init {self.ffn_init!r}")

    def attn_vars(self) -> Tuple[float, float, float, float]:
        """Variances of W^V, b^V, W^O, b^O (W^Q and W^K do not enter the bound)."""
        d = self.d
        if self.theory:
            return 1 / d, 0.0, 1 / d, 0.0
        # fairseq MultiheadAttention.reset_parameters: v_proj Xavier with gain 1/sqrt(2), its bias left at
        # nn.Linear's default; out_proj Xavier, bias 0
        return 1 / (2 * d), 1 / (3 * d), 1 / d, 0.0

    @property
    def phi(self) -> float:
        """E||FFN(x)||^2 / d for ||x||^2 = d, before dropout."""
        d, f = self.d, self.ffn_dim
        s1, b1 = self.ffn_vars(d, f)
        s2, b2 = self.ffn_vars(f, d)
        return f * (d * s1 + b1) / 2 * s2 + b2

    @property
    def alpha(self) -> float:
        """Upper bound of E||Attn(x)||^2 / d for LayerNorm-ed inputs, before dropout."""
        sv, bv, so, bo = self.attn_vars()
        return self.d * so * (self.d * sv + bv) + bo

    @property
    def keep(self) -> float:
        return 1.0 - self.dropout


def embedding_sq(init: Init) -> float:
    return 1.5 / init.keep  # token embedding (1) + sinusoidal positions (1/2), then dropout


def lemma2(scheme: str, quantity: str, stack: str, layer: int, init: Init) -> Bounds:
    """(low, high) of E||x||^2 / d for our setting; low == high for a point prediction; None if not derived.

    ``quantity`` is ``hidden_sq`` (x_0 = embeddings, x_l = output of layer l) or ``ffn_ln_input_sq`` (input of
    layer l's ``final_layer_norm``); ``stack`` matters because a decoder layer has two attention sub-layers.
    """
    if scheme not in THEOREM1_SLOPE:
        return None
    if quantity == "hidden_sq" and layer == 0:
        return (embedding_sq(init),) * 2
    ffn = init.phi / init.keep
    attn = init.alpha / init.keep * (2 if stack == "decoder" else 1)
    if scheme == "post_ln":
        # every layer output is a LayerNorm output: ||x||^2 = d; its input is x3 + FFN(x3) with ||x3||^2 = d
        value = 1.0 if quantity == "hidden_sq" else 1.0 + ffn
        return (value, value)
    x0 = embedding_sq(init)
    if quantity == "hidden_sq":
        return (x0 + layer * ffn, x0 + layer * (ffn + attn))
    # pre_ln final_layer_norm input: x_{l-1} plus this layer's attention sub-layer(s)
    return (x0 + (layer - 1) * ffn, x0 + (layer - 1) * (ffn + attn) + attn)


def lemma2_paper(scheme: str, quantity: str, layer: int) -> Bounds:
    """Lemma 2 as stated: Post-LN E||x^{post,5}_l||^2 = 3/2 d; Pre-LN (1 + l/2) d <= E||x_l||^2 <= (1 + 3l/2) d."""
    if scheme == "post_ln" and quantity == "ffn_ln_input_sq" and layer >= 1:
        return (1.5, 1.5)
    if scheme == "pre_ln" and quantity == "hidden_sq":
        return (1 + layer / 2, 1 + 3 * layer / 2)
    return None
