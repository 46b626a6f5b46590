"""Admin (Liu et al. 2020, arXiv:2004.08249), built through fairseq-train's entry point on a real binarized
batch: every omega equals Transformer-Clinic's profiling recursion recomputed here from forward hooks;
the profile is written with the run and read back instead of profiling; a missing train split falls back
to valid and says so."""

import json
import logging
import math
import shutil

import pytest
import torch

from normpos.fairseq_build import build_task_and_model
from sublayer_io import sublayer_io

TINY = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
N, M = 3, 2  # encoder and decoder depths differ on purpose


def build(data_dir, *extra):
    return build_task_and_model(
        data_dir, "--arch", "normpos_iwslt_de_en_admin", *TINY, "--encoder-layers", str(N),
        "--decoder-layers", str(M), "--max-tokens", "500", *extra,
    )


def joins(model):
    """{(stack, layer, sublayer): omega parameter}, in forward order."""
    out = {}
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, stack).layers):
            for sub, join in layer.residuals.items():
                out[(stack, i, sub)] = join.omega
    return out


def without(src, tmp_path, keep):
    """A copy of a binarized folder with only the files whose name starts with one of ``keep``."""
    dst = tmp_path / "data"
    dst.mkdir()
    for f in src.iterdir():
        if f.name.startswith(keep):
            shutil.copy(f, dst / f.name)
    return dst


def recursion_from_hooks(model, sample):
    """Clinic's recursion, recomputed from what the attention and FFN modules see and return.

    x_{i-1}: the sub-layer's input (attention query / fc1 input); f_i: its output (attention output /
    fc2 output; dropout is 0 here). Per stack: omega_1 = 1, omega_{i+1}^2 = Var[omega_i x_{i-1}] + Var[f_i].
    """
    model.train()
    with torch.no_grad(), sublayer_io(model) as seen:
        model(**sample["net_input"])

    expected = {}
    for stack, subs in (("encoder", ("self_attn", "ffn")), ("decoder", ("self_attn", "encoder_attn", "ffn"))):
        omega = 1.0
        for i in range(N if stack == "encoder" else M):
            for sub in subs:
                t = seen[(stack, i, sub)]
                in_var = (omega * t["input"]).var(unbiased=False).item()
                out_var = t["output"].var(unbiased=False).item()
                expected[(stack, i, sub)] = (omega, in_var, out_var)
                omega = math.sqrt(in_var + out_var)
    return expected, seen


def test_omegas_are_the_profiled_variance_recursion(tiny_bin, tmp_path):
    profile = tmp_path / "admin_profile.json"
    _, task, model = build(tiny_bin, "--dropout", "0", "--admin-profile", str(profile))
    data = json.loads(profile.read_text())
    assert data["split"] == "train" and not data["fell_back"] and data["batches"] == 1

    # the profiled batch, rebuilt from the sentence ids the profile recorded
    task.load_dataset("train")
    dataset = task.dataset("train")
    sample = dataset.collater([dataset[i] for i in data["batch_ids"][0]])
    assert int(sample["ntokens"]) == data["batch_tokens"][0]
    expected, seen = recursion_from_hooks(model, sample)

    omegas = joins(model)
    assert list(omegas) == list(expected)  # every join profiled, in forward order
    by_key = {(e["stack"], e["layer"], e["sublayer"]): e for e in data["sublayers"]}
    for key, param in omegas.items():
        omega, in_var, out_var = expected[key]
        assert param.shape == (32,) and param.requires_grad
        torch.testing.assert_close(param.detach(), torch.full((32,), omega), rtol=1e-5, atol=0)
        entry = by_key[key]
        assert entry["omega"] == pytest.approx(omega, rel=1e-5)
        assert entry["input_var"] == [pytest.approx(in_var, rel=1e-5)]
        assert entry["output_var"] == [pytest.approx(out_var, rel=1e-5)]
    # the first join of each stack starts the recursion at 1; the others grow with the branches' variance
    assert omegas[("encoder", 0, "self_attn")][0].item() == 1.0
    assert omegas[("decoder", 0, "self_attn")][0].item() == 1.0
    assert all(omegas[k][0].item() > 1.05 for k in omegas if k[1:] != (0, "self_attn"))
    # Post-LN with the profiled omega: each LayerNorm's input is omega_i * x_{i-1} + f_i(x_{i-1})
    for key, t in seen.items():
        torch.testing.assert_close(t["norm_input"], omegas[key].detach() * t["input"] + t["output"])
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None
    state = model.state_dict()
    assert "encoder.layers.0.residuals.ffn.omega" in state and "decoder.layers.1.residuals.encoder_attn.omega" in state


def test_profile_written_with_the_run_and_read_back(tiny_bin, tmp_path):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    _, _, first = build(tiny_bin, "--save-dir", str(save_dir))
    path = save_dir / "admin_profile.json"
    assert sorted(p.name for p in save_dir.iterdir()) == ["admin_profile.json"]  # no temp file left behind
    data = json.loads(path.read_text())
    assert len(data["sublayers"]) == 2 * N + 3 * M
    for e, (key, param) in zip(data["sublayers"], joins(first).items()):
        assert (e["stack"], e["layer"], e["sublayer"]) == key
        assert param[0].item() == pytest.approx(e["omega"], rel=1e-6)

    # Distinct values in the file, and a data folder with no split at all: a second build can only get
    # these omegas by reading the file (as on resume, or fairseq-generate rebuilding the model).
    for i, e in enumerate(data["sublayers"]):
        e["omega"] = 1.5 + 0.125 * i
    path.write_text(json.dumps(data))
    before = path.read_text()
    dicts_only = without(tiny_bin, tmp_path, ("dict.",))
    _, _, second = build(dicts_only, "--save-dir", str(save_dir))
    for i, param in enumerate(joins(second).values()):
        torch.testing.assert_close(param.detach(), torch.full((32,), 1.5 + 0.125 * i))
    assert path.read_text() == before  # read, not re-profiled or rewritten


def test_missing_train_split_falls_back_to_valid_and_says_so(tiny_bin, tmp_path, caplog):
    data_dir = without(tiny_bin, tmp_path, ("dict.", "valid."))
    profile = tmp_path / "profile.json"
    with caplog.at_level(logging.WARNING):
        _, _, model = build(data_dir, "--admin-profile", str(profile))
    assert any("instead of train" in r.getMessage() and "'valid'" in r.getMessage() for r in caplog.records)
    data = json.loads(profile.read_text())
    assert data["split"] == "valid" and data["fell_back"] and "train" in data["fallback_reason"]
    assert all(p[0].item() > 1.05 for k, p in joins(model).items() if k[1:] != (0, "self_attn"))


def test_no_data_leaves_omega_one_writes_nothing_and_warns(tiny_bin, tmp_path, caplog):
    dicts_only = without(tiny_bin, tmp_path, ("dict.",))
    profile = tmp_path / "profile.json"
    with caplog.at_level(logging.WARNING):
        _, _, model = build(dicts_only, "--admin-profile", str(profile))
    assert not profile.exists()
    assert any("no data to profile" in r.getMessage() for r in caplog.records)
    assert all(torch.equal(p.detach(), torch.ones(32)) for p in joins(model).values())


def test_no_profile_but_a_checkpoint_to_resume_skips_profiling(tiny_bin, tmp_path, caplog):
    """fairseq-train resumes from <save_dir>/checkpoint_last.pt (fairseq-generate loads one): the omegas come
    from its state_dict, so no profiling pass and no profile file made after the fact."""
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "checkpoint_last.pt").write_bytes(b"")
    with caplog.at_level(logging.INFO):
        _, _, model = build(tiny_bin, "--save-dir", str(save_dir))
    assert any("come from its state_dict" in r.getMessage() for r in caplog.records)
    assert not (save_dir / "admin_profile.json").exists()
    assert all(torch.equal(p.detach(), torch.ones(32)) for p in joins(model).values())


def test_admin_refuses_normalize_before(dict_dir):
    with pytest.raises(ValueError, match="Post-LN"):
        build(dict_dir, "--decoder-normalize-before")
