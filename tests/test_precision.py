"""Mixed precision for every normalization scheme, through fairseq's own Trainer and command line.

bf16: fairseq's parser turns ``--bf16`` into ``--tpu`` (``fairseq/options.py``); ``normpos.precision`` undoes
that unless ``--tpu`` was given, so fairseq's Trainer casts the model to bfloat16 and keeps fp32 master
weights in its ``FP16Optimizer`` on CPU (and CUDA). fp16: every scheme's forward and backward in half
precision (``model.half()``, CPU kernels; torch 2.13 has all the ops these models use), against the same
model in fp32, on a real batch with padding; and the constants that fp16 could lose: RMSNorm's eps, ScaleNorm's
clamp, Admin's omegas, T-Fixup's and DeepNorm's scaled inits.
"""

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from fairseq import options
from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler
from fairseq.optim.fp16_optimizer import FP16Optimizer
from fairseq.trainer import Trainer

from normpos.fairseq_build import build_task_and_model, train_cfg
from normpos.plugin import PLUGIN_DIR
from normpos.precision import fairseq_parses_bf16_without_tpu, parse_args_and_arch
from normpos_fairseq.modules.rmsnorm import EPS as RMSNORM_EPS
from normpos_fairseq.modules.rmsnorm import RMSNorm
from normpos_fairseq.modules.scalenorm import EPS as SCALENORM_EPS
from normpos_fairseq.modules.scalenorm import ScaleNorm
from normpos_fairseq.schemes import scheme_names
from normpos_fairseq.schemes.admin import admin_joins
from normpos_fairseq.schemes.deepnorm import deepnorm_constants
from normpos_fairseq.schemes.tfixup import decoder_scale, embedding_scale, encoder_scale
from test_plugin_end_to_end import TINY_MODEL, run_tool

TRAIN = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0",
         "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3",
         "--lr-scheduler", "normpos_warmup_inverse_sqrt", "--warmup-updates", "1",
         "--max-tokens", "800", "--seed", "1", "--num-workers", "0", "--cpu"]
FP16_UNIT_ROUNDOFF = 2.0 ** -11  # half of fp16's machine epsilon 2^-10: the largest relative rounding error
FP16_TINIEST = 2.0 ** -24  # fp16's smallest subnormal; anything below half of it rounds to 0


def first_batch(task, split="valid"):
    task.load_dataset(split)
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_tokens=800, seed=1).next_epoch_itr(shuffle=False)
    return next(iter(itr))


def fairseq_argv(data_dir, *argv):
    return [str(data_dir), "--user-dir", str(PLUGIN_DIR), "--arch", "normpos_iwslt_de_en_pre_ln", *argv]


# --- bf16 means bfloat16, not TPU ------------------------------------------------------------------------

def test_fairseq_alone_turns_bf16_into_tpu_and_the_fix_undoes_it(tiny_bin):
    # what the fix is for: fairseq's own parse sends --bf16 to torch_xla (Trainer -> utils.get_tpu_device)
    plain = options.parse_args_and_arch(options.get_training_parser(), fairseq_argv(tiny_bin, "--bf16", "--cpu"))
    assert plain.bf16 and plain.tpu
    fixed = parse_args_and_arch(options.get_training_parser(), fairseq_argv(tiny_bin, "--bf16", "--cpu"))
    assert fixed.bf16 and not fixed.tpu
    # --memory-efficient-bf16 implies --bf16 in fairseq, hence --tpu too: cleared alike
    fixed = parse_args_and_arch(options.get_training_parser(), fairseq_argv(tiny_bin, "--memory-efficient-bf16"))
    assert fixed.bf16 and not fixed.tpu
    # an explicit --tpu still means TPU
    asked = parse_args_and_arch(options.get_training_parser(), fairseq_argv(tiny_bin, "--bf16", "--tpu"))
    assert asked.bf16 and asked.tpu
    # parse_known=True returns (args, extra) in fairseq; the wrapper keeps that shape
    known, extra = parse_args_and_arch(options.get_training_parser(), fairseq_argv(tiny_bin, "--bf16", "--xyz"),
                                       parse_known=True)
    assert not known.tpu and extra == ["--xyz"]
    # the config the tests, the benchmark and training read (cfg.distributed_training.tpu interpolates it)
    cfg = train_cfg(tiny_bin, "--arch", "normpos_iwslt_de_en_pre_ln", "--bf16", "--cpu")
    assert cfg.common.bf16 and not cfg.common.tpu and not cfg.distributed_training.tpu


def test_the_cli_patch_is_scoped_to_the_tool_call():
    original = options.parse_args_and_arch
    with pytest.raises(RuntimeError):
        with fairseq_parses_bf16_without_tpu():
            assert options.parse_args_and_arch is parse_args_and_arch
            raise RuntimeError("fairseq failed")
    assert options.parse_args_and_arch is original


def trainer_and_fp32_loss(data_dir, save_dir, scheme, *precision):
    """fairseq_cli.train.main's construction (task, model, criterion, Trainer) on CPU with the ``precision``
    options; also the first training batch and, on it, the loss of the same model in fp32 (taken before the
    Trainer casts the model), in base 2 as fairseq logs it."""
    torch.set_num_threads(1)
    cfg, task, model = build_task_and_model(
        data_dir, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY_MODEL, *TRAIN, *precision,
        "--save-dir", str(save_dir))
    criterion = task.build_criterion(cfg.criterion)
    batch = first_batch(task, "train")
    with torch.no_grad():
        model.train()
        loss, sample_size, _ = criterion(model, batch)
    trainer = Trainer(cfg, task, model, criterion)
    assert trainer.device == torch.device("cpu")  # --bf16 without the fix: torch_xla's device (fails here)
    return trainer, batch, loss.item() / sample_size / math.log(2)


def check_mixed_precision_training(trainer, batch, fp32_loss, dtype, significant_bits):
    """Six updates on one batch: the model in ``dtype``, fp32 master weights in fairseq's FP16Optimizer, finite
    and falling losses, the first within the dtype's precision of the fp32 loss."""
    assert {p.dtype for p in trainer.model.parameters()} == {dtype}
    optimizer = trainer.optimizer
    assert isinstance(optimizer, FP16Optimizer)
    assert len(optimizer.fp32_params) == len(optimizer.fp16_params)
    assert {p.dtype for p in optimizer.fp32_params} == {torch.float32}

    losses = [trainer.train_step([batch])["loss"] for _ in range(6)]
    assert all(math.isfinite(x) for x in losses), losses
    # the weights and activations rounded to the dtype move the mean loss by less than one unit of its last
    # significant bit (seen: at most 1.2e-4 relative in bf16, 1.4e-5 in fp16)
    assert abs(losses[0] - fp32_loss) < 2.0 ** -significant_bits * fp32_loss, (losses[0], fp32_loss)
    assert losses[-1] < losses[0] - 0.1, losses  # six Adam steps on one batch lower its loss
    # the model is its master weights rounded to the dtype, and the masters hold what the dtype cannot
    finer = 0
    for p_low, p32 in zip(optimizer.fp16_params, optimizer.fp32_params):
        assert torch.equal(p_low.data, p32.data.to(dtype))
        finer += int((p32.data != p32.data.to(dtype).float()).sum())
    assert finer > 0
    return optimizer


@pytest.mark.parametrize("scheme", scheme_names())
def test_every_scheme_trains_in_bf16_with_fp32_master_weights(tiny_bin, tmp_path, scheme):
    trainer, batch, fp32_loss = trainer_and_fp32_loss(tiny_bin, tmp_path / "ckpt", scheme, "--bf16")
    optimizer = check_mixed_precision_training(trainer, batch, fp32_loss, torch.bfloat16, significant_bits=8)
    assert optimizer.scaler is None  # bf16 has fp32's exponent range: fairseq scales no loss


def test_fp16_trains_with_dynamic_loss_scaling(tiny_bin, tmp_path):
    """fairseq's fp16 path, which GPUs without bf16 use: the loss scaled by 128 (--fp16-init-scale) and the
    scale kept while no gradient overflows. On CPU, fairseq's flattened fp32 copy calls
    torch.cuda.current_device(), hence --fp16-no-flatten-grads here (the flat copy is the GPU default)."""
    trainer, batch, fp32_loss = trainer_and_fp32_loss(
        tiny_bin, tmp_path / "ckpt", "post_ln", "--fp16", "--fp16-no-flatten-grads")
    optimizer = check_mixed_precision_training(trainer, batch, fp32_loss, torch.float16, significant_bits=11)
    assert isinstance(optimizer.scaler, DynamicLossScaler) and optimizer.scaler.loss_scale == 128


@pytest.mark.slow
def test_fairseq_run_trains_in_bf16_on_cpu(tiny_bin, tmp_path):
    """What ``train.bf16=true`` runs: fairseq-train through our wrapper, with the sweep's validation BLEU
    (beam search on the bf16 model) at the end."""
    log = run_tool(
        "train", tiny_bin, "--arch", "normpos_iwslt_de_en_pre_ln", *TINY_MODEL, *TRAIN, "--bf16",
        "--max-update", "4", "--save-dir", tmp_path / "ckpt", "--no-save", "--no-progress-bar",
        "--log-interval", "1", "--eval-bleu", "--eval-bleu-args", '{"beam": 5, "lenpen": 1.2}',
        "--eval-tokenized-bleu", "--eval-bleu-detok", "space",
    )
    losses = [float(x) for x in re.findall(r"train_inner:.* loss=([^,]+),", log)]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), log[-2000:]
    valid = re.findall(r"valid on 'valid' subset.* loss ([^ ]+) .* bleu ([^ ]+) ", log)
    assert len(valid) == 1 and math.isfinite(float(valid[0][0])), log[-2000:]
    assert "'bf16': True" in log and "'tpu': False" in log, log[:3000]  # fairseq prints its config first


# --- fp16: forward and backward of every scheme -------------------------------------------------------------

@pytest.mark.parametrize("scheme", scheme_names())
def test_every_scheme_runs_forward_and_backward_in_fp16(tiny_bin, tmp_path, scheme):
    """The fp16 model gives the fp32 model's loss and gradients on a padded real batch.

    Padded source positions enter the first layer as all-zero rows (fairseq zeroes them after the
    embedding): in the Pre-norm schemes that is the eps-only case of RMSNorm and ScaleNorm, and a NaN there
    reaches every position through attention. The fp16 loss is scaled by 128, fairseq's --fp16-init-scale,
    as fp16 training does, so that small gradients do not underflow.
    """
    torch.set_num_threads(1)
    cfg, task, model = build_task_and_model(
        tiny_bin, "--arch", f"normpos_iwslt_de_en_{scheme}", *TINY_MODEL, *TRAIN, "--save-dir", str(tmp_path / "c"))
    criterion = task.build_criterion(cfg.criterion)
    batch = first_batch(task)
    assert (batch["net_input"]["src_tokens"] == task.source_dictionary.pad()).any()
    half = copy.deepcopy(model).half()
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    model.train(), half.train()

    loss32, sample_size, _ = criterion(model, batch)
    (loss32 / sample_size).backward()
    logits = []
    half.decoder.output_projection.register_forward_hook(lambda module, inputs, output: logits.append(output))
    loss16, _, _ = criterion(half, batch)
    assert logits[0].dtype == torch.float16  # the forward ran in fp16, up to the logits
    (loss16 / sample_size * 128).backward()

    assert math.isfinite(loss16.item()) and abs(loss16.item() / loss32.item() - 1) < 1e-3
    bad = [n for n, p in half.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"no or non-finite fp16 gradients: {bad[:5]}"
    g32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    g16 = torch.cat([p.grad.float().flatten() / 128 for p in half.parameters()])
    assert F.cosine_similarity(g32, g16, dim=0).item() > 0.999


# --- fp16: the constants ----------------------------------------------------------------------------------

def rows(*values, dim=32):
    """One row per value (a row of equal entries), fp16-representable."""
    return torch.stack([torch.full((dim,), v) for v in values]).half()


def test_rmsnorm_eps_is_lost_in_fp16_so_the_statistics_are_fp32():
    assert torch.tensor(RMSNORM_EPS, dtype=torch.float16).item() == 0.0  # 1e-8 < fp16's smallest subnormal
    # zero (padding), tiny (x^2 underflows fp16), huge (x^2 overflows fp16), ordinary, one negative
    x = rows(0.0, 1e-4, 300.0, 0.5, -2.0)
    naive = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + torch.tensor(RMSNORM_EPS, dtype=x.dtype))
    assert not torch.isfinite(naive[:2]).all()  # the trap: the formula in fp16 gives NaN and inf here
    norm = RMSNorm(32).half()
    reference = F.rms_norm(x.float(), (32,), eps=RMSNORM_EPS)  # torch's own RMSNorm, in fp32
    torch.testing.assert_close(norm(x).float(), reference, rtol=2 * FP16_UNIT_ROUNDOFF, atol=0.0)


def test_scalenorm_clamp_in_fp16():
    # zero (padding), norm below the clamp eps = 1e-5, sum of squares over fp16's 65504, ordinary
    x = rows(0.0, 1e-7, 1000.0, 0.25)
    norm = ScaleNorm(32).half()
    # F.normalize is x / max(||x||, eps): ScaleNorm's definition, computed by torch in fp32
    reference = math.sqrt(32) * F.normalize(x.float(), dim=-1, eps=SCALENORM_EPS)
    assert reference[1].abs().max() < 1  # the clamp is active on that row
    torch.testing.assert_close(norm(x).float(), reference, rtol=2 * FP16_UNIT_ROUNDOFF, atol=FP16_TINIEST)


def assert_survives_fp16(name, tensor):
    """A tensor cast to fp16 is finite, keeps its nonzero entries nonzero (all but 1 in 10,000) and its
    standard deviation to fp16's rounding error.

    Entries below 2^-25 round to 0: for uniform(-b, b) entries that is a fraction 2^-25 / b, 1.5e-6 for
    WMT-big's smallest scaled bound (b ~ 0.012), 1.5e-2 if a scale were 100 times too small.
    """
    t16 = tensor.detach().half()
    assert torch.isfinite(t16).all(), name
    lost = int(((t16 == 0) & (tensor != 0)).sum())
    assert lost <= tensor.numel() * 1e-4, f"{name}: {lost} of {tensor.numel()} entries underflow to 0 in fp16"
    std32 = tensor.detach().std().item()
    assert abs(t16.float().std().item() / std32 - 1) < FP16_UNIT_ROUNDOFF, name


# The IWSLT and WMT-big shapes are both 6+6 layers (so DeepNorm's and T-Fixup's constants are the same);
# WMT-big's wider matrices have the smallest Xavier bounds, hence the smallest scaled entries.
SHAPES = {"iwslt": {"d": 512, "ffn": 1024, "layers": 6}, "wmt_big": {"d": 1024, "ffn": 4096, "layers": 6}}


@pytest.mark.parametrize("shape", SHAPES)
def test_scaled_init_constants_survive_fp16(shape):
    """DeepNorm's alpha/beta and T-Fixup's scales at the shape's depth, and the matrices they scale drawn
    at its widths (Xavier-uniform as the schemes draw them; fairseq's N(0, d^-1/2) embedding)."""
    d, ffn, n = SHAPES[shape]["d"], SHAPES[shape]["ffn"], SHAPES[shape]["layers"]
    constants = {f"deepnorm {stack} {what}": value for stack in ("encoder", "decoder")
                 for what, value in zip(("alpha", "beta"), deepnorm_constants(stack, n, n))}
    constants.update({"tfixup encoder": encoder_scale(n), "tfixup decoder": decoder_scale(n),
                      "tfixup embedding": embedding_scale(n)})
    for name, value in constants.items():
        assert abs(torch.tensor(value).half().item() / value - 1) <= FP16_UNIT_ROUNDOFF, name
    smallest = min(constants.values())
    generator = torch.Generator().manual_seed(1)
    # attention v_proj keeps fairseq's Xavier gain 1/sqrt(2) under DeepNorm's default (torchscale) init
    for fan_out, fan_in, gain in ((d, d, 2 ** -0.5), (ffn, d, 1.0), (d, ffn, 1.0)):
        weight = torch.empty(fan_out, fan_in)
        bound = gain * math.sqrt(6 / (fan_in + fan_out))  # torch.nn.init.xavier_uniform_
        weight.uniform_(-bound, bound, generator=generator)
        assert_survives_fp16(f"{shape} {fan_out}x{fan_in} x {smallest:.3f}", weight * smallest)
    embedding = torch.randn(2000, d, generator=generator) * d ** -0.5
    assert_survives_fp16(f"{shape} embedding", embedding * embedding_scale(n))


@pytest.mark.parametrize("scheme", ["deepnorm", "tfixup", "admin"])
def test_iwslt_model_of_the_scaled_schemes_survives_fp16(tiny_bin, tmp_path, scheme):
    """The real 6+6, d 512 IWSLT model as fairseq-train builds it (Admin profiled on real batches): every
    parameter survives the cast to fp16, and Admin's omegas are kept to fp16's rounding."""
    torch.set_num_threads(1)
    _, _, model = build_task_and_model(tiny_bin, "--arch", f"normpos_iwslt_de_en_{scheme}", "--max-tokens", "800",
                                       "--save-dir", str(tmp_path / "none"))
    for name, p in model.named_parameters():
        w = p.detach()
        if w.numel() > 1 and w.std() > 1e-3 * w.abs().mean():  # a spread of values, not one constant
            assert_survives_fp16(name, w)
        else:  # biases at 0, LayerNorm gains at 1, omegas (one value per join), scalars
            torch.testing.assert_close(w.half().float(), w, rtol=FP16_UNIT_ROUNDOFF, atol=0.0, msg=name)
    if scheme == "admin":
        omegas = torch.cat([join.omega.detach() for join in admin_joins(model)])
        assert omegas.min() >= 1 and omegas.max() > 2  # profiled: omega grows along each stack (6+6: ~2.3-2.8)
