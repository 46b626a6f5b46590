"""Gradients and hidden-state norms of a Transformer at initialization (Xiong et al. 2020, sec. 3.4, Fig. 3).

One call measures one model (scheme, depth, seed, init) on a few real batches and returns plain numbers:

- ``grad_norm``: Frobenius norm of the FFN weight gradients (W^1 = fairseq ``fc1``, W^2 = ``fc2``) on each
  batch. With ``per_layer=False`` only the last layer's W^2 of each stack (Fig. 3c,d, Theorem 1) is
  measured, which lets autograd skip every other weight gradient and the backward pass through the
  encoder below its last layer (the 6-6 models of Fig. 3a,b, which measure every layer, take about 1.5
  times as long here).
- ``expected_grad_norm``: the paper's "scale of the expected gradient" (Fig. 3a,b): the gradients of the
  batches averaged element-wise, then the Frobenius norm of that average.
- ``hidden_sq``: Lemma 2, the mean over real (non-pad) tokens of ||x_l||^2, where x_0 is the input of the
  first layer (embeddings) and x_l the output of layer l; ``ffn_ln_input_sq``: the same for the input of each
  layer's ``final_layer_norm``, which in Post-LN is the pre-norm sum x^{post,5} = x^{post,3} + FFN(x^{post,3})
  of Lemma 2 (the layer output itself is a LayerNorm output, so its squared norm is d by construction).

The loss is the trainer's: fairseq's ``label_smoothed_cross_entropy`` (epsilon 0.1) summed over the target
tokens, divided by ``sample_size`` (= the number of target tokens, ``sentence_avg`` off), which is what
``Trainer.train_step`` backpropagates (``loss.backward()`` then ``multiply_grads(1 / sample_size)``).
The model is in ``train()`` mode, as the trainer's first update sees it: dropout (0.1, the paper's) is on
unless ``dropout=0`` or the theory assumptions are asked for; no other module behaves differently in
train and eval mode here.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from fairseq import utils

from . import model as build_lib
from .data import SPLIT
from .model import Setting

STACKS = ("encoder", "decoder")


def batches(task, cfg, model, seed: int, count: int, max_tokens: Optional[int] = None) -> list:
    """The first ``count`` batches of fairseq's epoch iterator over the valid split, shuffled with ``seed``.

    Batches are formed by fairseq's ``batch_by_size`` with ``--max-tokens`` (4096 padded tokens at most;
    ``max_tokens`` overrides it), exactly as in training; the same seed gives the same batches at every
    depth, so the depth trend of one seed is not confounded with a change of batch.
    """
    split = SPLIT
    max_tokens = max_tokens or cfg.dataset.max_tokens
    task.load_dataset(split)
    itr = task.get_batch_iterator(
        dataset=task.dataset(split),
        max_tokens=max_tokens,
        max_sentences=cfg.dataset.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=seed,
        num_workers=0,
        epoch=1,
    ).next_epoch_itr(shuffle=True)
    out = [sample for _, sample in zip(range(count), itr)]
    if len(out) < count:
        raise ValueError(f"the {split} split has only {len(out)} batches of {max_tokens} tokens")
    return out


@contextmanager
def torch_threads(count: int):
    """Run with ``count`` torch threads (0: as they are). Small models gain nothing from a second thread,
    and on a shared machine torch's OpenMP threads spin-wait for each other whenever a neighbour's job holds
    a core, which made the tests' small models several times slower here."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _first(output):
    # encoder layers return x, decoder layers (x, attn, state)
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def _hooks(model, masks: dict, sums: dict, counts: dict):
    """Add ||x||^2 of each stack's hidden states over non-pad tokens into ``sums`` (tokens into ``counts``)."""

    def add(key, stack, x):
        mask = masks[stack]  # (T, B), True on real tokens, laid out like fairseq's (T, B, C) states
        sums[key] += float((x.detach().pow(2).sum(-1) * mask).sum())
        counts[key] += int(mask.sum())

    handles = []
    for stack in STACKS:
        layers = getattr(model, stack).layers
        handles.append(layers[0].register_forward_pre_hook(
            lambda mod, args, stack=stack: add(("hidden_sq", stack, 0), stack, args[0])))
        for i, layer in enumerate(layers, start=1):
            handles.append(layer.register_forward_hook(
                lambda mod, args, out, stack=stack, i=i: add(("hidden_sq", stack, i), stack, _first(out))))
            norm = getattr(layer, "final_layer_norm", None)
            if isinstance(norm, torch.nn.Module):
                handles.append(norm.register_forward_pre_hook(
                    lambda mod, args, stack=stack, i=i: add(("ffn_ln_input_sq", stack, i), stack, args[0])))
    projection = getattr(model.decoder, "output_projection", None)
    if isinstance(projection, torch.nn.Module):
        # fairseq hands the output layer a transposed (non-contiguous) tensor, which torch multiplies as a
        # batched matmul with the 10K x d weight expanded per sentence; a contiguous copy gives the same
        # numbers through one plain matmul, about 7% of the whole step on CPU
        handles.append(projection.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(), *args[1:])))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _tracked(model, per_layer: bool) -> dict:
    """{(stack, layer, param): weight} whose gradients are measured; every other weight is frozen."""
    tracked = {}
    for stack in STACKS:
        layers = getattr(model, stack).layers
        for i, layer in enumerate(layers, start=1):
            for param in ("fc1", "fc2"):
                if per_layer or (i == len(layers) and param == "fc2"):
                    tracked[(stack, i, param)] = getattr(layer, param).weight
    wanted = {id(w) for w in tracked.values()}
    for p in model.parameters():
        # frozen weights cost no gradient; the tracked ones' gradients are unchanged by it
        p.requires_grad_(id(p) in wanted)
    return tracked


def measure_model(model, criterion, samples: list, per_layer: bool = False, device: str = "cpu") -> dict:
    """Measure one already-built model on ``samples`` (see the module docstring for what is returned)."""
    model.to(device)
    tracked = _tracked(model, per_layer)
    grad_sum = {key: torch.zeros_like(w) for key, w in tracked.items()}
    grad_norm = defaultdict(list)
    sums, counts = defaultdict(float), defaultdict(int)
    losses, ntokens, nsentences = [], [], []
    pad = criterion.padding_idx
    model.train()
    for sample in samples:
        sample = utils.move_to_cuda(sample) if device.startswith("cuda") else sample
        net_input = sample["net_input"]
        masks = {
            "encoder": net_input["src_tokens"].ne(pad).t(),
            "decoder": net_input["prev_output_tokens"].ne(pad).t(),
        }
        with _hooks(model, masks, sums, counts):
            loss, sample_size, _ = criterion(model, sample)
        # = Trainer.train_step: backward of the summed loss, gradients multiplied by 1 / sample_size
        (loss / sample_size).backward()
        for key, w in tracked.items():
            grad_norm[key].append(float(w.grad.norm()))
            grad_sum[key] += w.grad
            w.grad = None
        losses.append(loss.item() / float(sample_size))
        ntokens.append(int(sample["ntokens"]))
        nsentences.append(int(sample["nsentences"]))
    return {
        "loss": losses,
        "ntokens": ntokens,
        "nsentences": nsentences,
        "grad_norm": dict(grad_norm),
        "expected_grad_norm": {key: float((g / len(samples)).norm()) for key, g in grad_sum.items()},
        "hidden_sq": {k[1:]: sums[k] / counts[k] for k in sums if k[0] == "hidden_sq"},
        "ffn_ln_input_sq": {k[1:]: sums[k] / counts[k] for k in sums if k[0] == "ffn_ln_input_sq"},
    }


def model_dims(model) -> dict:
    layer = model.encoder.layers[0]
    return {"d": layer.fc1.in_features, "ffn_dim": layer.fc1.out_features, "depth": len(model.encoder.layers)}


def measure_gradients(
    scheme: str,
    depth: int,
    seed: int,
    batches_per_seed: int,
    ffn_init: str = "xavier",
    theory_assumptions: bool = False,
    *,
    data_dir: Path,
    dropout: float = build_lib.PAPER_DROPOUT,
    per_layer: bool = False,
    model_args: tuple = (),
    checkpoint: Optional[Path] = None,
    device: str = "cpu",
    max_tokens: Optional[int] = None,
) -> dict:
    """Build the ``scheme`` model with ``depth`` encoder and decoder layers (seed ``seed``) as fairseq-train
    does, or load ``checkpoint``, and measure it on the first ``batches_per_seed`` batches of seed ``seed``.

    Any scheme of ``normpos_fairseq.schemes.scheme_names()`` works; an unknown one raises ``ValueError``.
    """
    setting = Setting(scheme, ffn_init, theory_assumptions, dropout, tuple(model_args))
    if checkpoint is None:
        cfg, task, model, criterion = build_lib.build(data_dir, setting, depth, seed)
    else:
        cfg, task, model, criterion = build_lib.load_checkpoint(data_dir, checkpoint)
        torch.manual_seed(seed)  # the dropout masks
    samples = batches(task, cfg, model, seed, batches_per_seed, max_tokens)
    return {
        **measure_model(model, criterion, samples, per_layer, device),
        **model_dims(model),
        **build_lib.describe(cfg),
    }
