"""N-gram masked decoder self-attention (Chelba et al. 2020, arXiv:2001.04589), `--decoder-ngram-window N`,
built through fairseq-train's entry point: with N >= the target length it is fairseq's model exactly (every
scheme); a decoder output depends on exactly the target tokens its band reaches; fairseq's incremental
decoding equals the full forward with the band mask while its cache never holds more than N-1 positions;
padding neither leaks nor makes NaN; fairseq's checkpoint loader (what fairseq-generate uses) applies an
overridden window."""

import pytest
import torch

from fairseq_entry import build_model
from normpos_fairseq.ngram_attention import band_mask, cached_positions
from normpos_fairseq.schemes import scheme_names

T = 7  # target length of the test batches


def tiny(decoder_layers=2):
    return ["--encoder-layers", "2", "--decoder-layers", str(decoder_layers), "--encoder-embed-dim", "32",
            "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
            "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]


def build(dict_dir, scheme="post_ln", window=None, decoder_layers=2, *extra):
    ngram = ["--decoder-ngram-window", str(window)] if window is not None else []
    return build_model(dict_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *tiny(decoder_layers), *ngram, *extra).eval()


def batch(seed=0, bsz=3):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 96, (bsz, 6), generator=g)
    prev = torch.randint(4, 96, (bsz, T), generator=g)
    prev[:, 0] = 2  # decoding starts from </s>
    return src, torch.full((bsz,), 6), prev


def run(model, src, lengths, prev):
    with torch.no_grad():
        return model(src, lengths, prev)[0]


def test_band_mask_is_the_band():
    mask = band_mask(5, 2, torch.zeros(1))
    allowed = [[int(v == 0) for v in row] for row in mask.tolist()]
    assert allowed == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    # a window as long as the sequence is fairseq's own causal mask
    from fairseq import utils
    assert torch.equal(band_mask(5, 5, torch.zeros(1)), torch.triu(utils.fill_with_neg_inf(torch.zeros(5, 5)), 1))


@pytest.mark.parametrize("scheme", scheme_names())
def test_window_at_least_the_target_length_is_fairseqs_model(dict_dir, scheme):
    """Same seed, same weights: N = T (and N = 100) give exactly the full-attention logits, with target
    padding too; N = 2 does not (so the comparison can fail)."""
    src, lengths, prev = batch()
    prev[0, 5:] = 1  # right padding, as fairseq pads targets
    full = run(build(dict_dir, scheme), src, lengths, prev)
    for window in (T, 100):
        assert torch.equal(run(build(dict_dir, scheme, window), src, lengths, prev), full), window
    if scheme != "rezero":  # ReZero's layers are the identity at init: nothing depends on the window yet
        assert not torch.allclose(run(build(dict_dir, scheme, 2), src, lengths, prev), full, atol=1e-4)


def test_unfused_attention_gets_the_band_alone_and_the_same_real_positions(dict_dir):
    """fairseq's unfused attention path (a scheme that hooks the projections, hybridnorm, switches to it) takes
    one (T, T) mask for every sentence: the band goes alone. With right padding every real position then equals
    what the fused path gives with the combined per-sentence mask (same model, same weights); left padding is
    refused in one line."""
    model = build(dict_dir, "pre_ln", 2)
    src, lengths, prev = batch()
    prev[0, 4:] = 1  # right padding in one sentence: its positions 5, 6 have no real key in their window of 2
    fused = run(model, src, lengths, prev)
    for layer in model.decoder.layers:
        layer.self_attn._set_skip_embed_dim_check()
    unfused = run(model, src, lengths, prev)
    real = prev.ne(1)
    assert torch.isfinite(unfused).all()
    assert torch.allclose(unfused[real], fused[real], atol=1e-5)
    prev[1, :2] = 1  # left padding in another sentence
    with pytest.raises(ValueError, match="needs right-padded targets"):
        run(model, src, lengths, prev)


@pytest.mark.parametrize("window, layers", [(1, 1), (2, 1), (3, 1), (2, 2)])
def test_output_depends_on_exactly_the_tokens_in_reach(dict_dir, window, layers):
    """With L decoder layers and window N, the output at t sees target positions t - L (N-1) .. t: changing a
    token inside that reach changes it, changing one outside does not."""
    model = build(dict_dir, "pre_ln", window, layers)
    src, lengths, prev = batch()
    base = run(model, src, lengths, prev)
    reach = layers * (window - 1)
    t = T - 1
    for s in range(1, t + 1):
        changed = prev.clone()
        changed[:, s] = (changed[:, s] + 7) % 90 + 4
        out = run(model, src, lengths, changed)
        moved = not torch.allclose(out[:, t], base[:, t], atol=1e-6)
        assert moved == (t - s <= reach), (s, t, reach)
        # and the past never depends on the future
        assert torch.allclose(out[:, :s], base[:, :s], atol=1e-6)


@pytest.mark.parametrize("scheme", ["post_ln", "pre_ln", "rskip_ln"])
@pytest.mark.parametrize("window", [1, 2, 3])
def test_incremental_decoding_equals_the_banded_forward_and_the_cache_stays_bounded(dict_dir, scheme, window):
    model = build(dict_dir, scheme, window)
    src, lengths, prev = batch()
    with torch.no_grad():
        encoder_out = model.encoder(src, src_lengths=lengths)
        full = model.decoder(prev, encoder_out=encoder_out)[0]
        state, steps = {}, []
        for t in range(T):
            steps.append(model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0])
            for layer in model.decoder.layers:
                assert cached_positions(layer.self_attn, state) == min(t + 1, window - 1), (t, window)
        # beam search reorders the cache between steps: it stays bounded
        model.decoder.reorder_incremental_state_scripting(state, torch.tensor([2, 0, 1]))
        assert all(cached_positions(layer.self_attn, state) == window - 1 for layer in model.decoder.layers)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [1, 2])
def test_padding_neither_leaks_nor_makes_nan(dict_dir, window):
    """A short target padded in a batch decodes its real positions exactly as alone; the padded positions,
    whose whole window is padding, stay finite (a NaN there would reach every position through the values)."""
    model = build(dict_dir, "post_ln", window)
    src, lengths, prev = batch(bsz=2)
    prev[0, 3:] = 1  # sentence 0 has 3 real tokens, then 4 pads
    together = run(model, src, lengths, prev)
    assert torch.isfinite(together).all()
    alone = run(model, src[:1], lengths[:1], prev[:1, :3])
    torch.testing.assert_close(together[:1, :3], alone, rtol=1e-5, atol=1e-5)
    other = run(model, src[1:], lengths[1:], prev[1:])
    torch.testing.assert_close(together[1:], other, rtol=1e-5, atol=1e-5)


def test_refused_windows(dict_dir):
    with pytest.raises(ValueError, match="must be >= 1"):
        build(dict_dir, "pre_ln", 0)
    with pytest.raises(ValueError, match="cross-self-attention"):
        build(dict_dir, "pre_ln", 2, 2, "--cross-self-attention")


def test_checkpoint_loader_applies_an_overridden_window(dict_dir, tmp_path):
    """fairseq-generate loads models with checkpoint_utils.load_model_ensemble(arg_overrides=...), which is
    how `--model-overrides "{'decoder_ngram_window': N}"` reaches the model (the decode benchmark uses it)."""
    from fairseq import checkpoint_utils

    from normpos.fairseq_build import build_task_and_model

    cfg, task, model = build_task_and_model(dict_dir, "--arch", "normpos_iwslt_de_en_pre_ln", *tiny())
    path = tmp_path / "checkpoint.pt"
    history = [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                "lr_scheduler_state": {"best": None}, "num_updates": 0}]
    checkpoint_utils.torch_persistent_save(
        {"cfg": cfg, "model": model.state_dict(), "args": None, "optimizer_history": history, "extra_state": {}},
        str(path))
    for overrides, want in (({}, None), ({"decoder_ngram_window": 4}, 4)):
        [loaded], _ = checkpoint_utils.load_model_ensemble([str(path)], arg_overrides={"data": str(dict_dir), **overrides})
        assert [layer.ngram_window for layer in loaded.decoder.layers] == [want, want]
