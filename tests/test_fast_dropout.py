"""FastDropout: torch's dropout semantics (Bernoulli masks, scaling, the same mask in backward,
seeded), and the classifier's backbones using it."""

import pytest
import torch
from helpers.tiny_models import TINY_BERT
from torch import nn

from sft.errors import SFTError
from sft.models import SFTClassifier
from sft.models.fast_dropout import FastDropout, keep_mask, mask_from_bits, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9, 1e-4])
def test_exactly_the_share_p_of_all_bit_patterns_is_dropped(p):
    # every 16-bit pattern once: the low 15 bits take each value twice
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    mask = mask_from_bits(bits, p, torch.float64)
    dropped = round(p * 2**15)
    assert int((mask == 0).sum()) == 2 * dropped
    assert torch.equal(mask[mask != 0], torch.full_like(mask[mask != 0], 2**15 / (2**15 - dropped)))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drawn_masks_are_independent_across_the_four_quarters_of_a_draw(p):
    torch.manual_seed(0)
    n = 400_000
    dropped = (keep_mask(torch.Size([n]), p, torch.float32) == 0).float().view(-1, 4)
    # 4 sigma of a Bernoulli mean over n / 4 draws; the top quarter's sign bit is always 0
    for q in range(4):
        assert abs(dropped[:, q].mean().item() - p) < 4 * (p * (1 - p) / (n / 4)) ** 0.5
    for q in range(1, 4):
        both = (dropped[:, 0] * dropped[:, q]).mean().item()
        assert abs(both - p * p) < 4 * (p * p * (1 - p * p) / (n / 4)) ** 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_output_and_gradient_share_one_mask(dtype):
    torch.manual_seed(0)
    x = (torch.rand(8, 16, 24) + 0.5).to(dtype).requires_grad_()
    out = FastDropout(0.25)(x)
    assert out.dtype == dtype
    dropped = out == 0
    assert 0.15 < dropped.float().mean().item() < 0.35
    torch.testing.assert_close(out[~dropped], (x[~dropped] / 0.75).detach(), rtol=1e-2, atol=0)
    grad = torch.randn_like(x)
    out.backward(grad)
    assert torch.equal(x.grad == 0, dropped | (grad == 0))
    torch.testing.assert_close(x.grad[~dropped], grad[~dropped] / 0.75, rtol=1e-2, atol=0)


def test_masks_follow_torch_seed():
    layer, x = FastDropout(0.5), torch.ones(64, 64)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(layer(x), first)


def test_evaluation_edge_probabilities_and_in_place_are_torch_dropout():
    x = torch.randn(4, 8)
    assert torch.equal(FastDropout(0.3).eval()(x), x)
    assert torch.equal(FastDropout(0.0)(x), x)
    assert torch.equal(FastDropout(1.0)(x), torch.zeros_like(x))
    # p within 2**-16 of 1: every pattern would drop, the scale would divide by zero
    assert (FastDropout(1 - 1e-6)(torch.ones(1000)) == 0).float().mean() > 0.99
    y = torch.ones(1000)
    FastDropout(0.5, inplace=True)(y)
    assert 0.4 < (y == 0).float().mean() < 0.6


def test_half_and_double_precision_inputs_keep_their_dtype():
    for dtype in (torch.float16, torch.float64):
        out = FastDropout(0.5)(torch.ones(1000, dtype=dtype))
        assert out.dtype == dtype
        assert set(out.unique().tolist()) == {0.0, 2.0}


def test_only_plain_dropouts_are_replaced_in_place():
    class OwnDropout(nn.Dropout):
        pass

    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.4)))
    net.append(OwnDropout(0.1))
    net.eval()
    assert use_fast_dropout(net) == 2
    assert [type(m) for m in net.modules() if isinstance(m, nn.Dropout)] == [
        FastDropout,
        FastDropout,
        OwnDropout,
    ]
    assert net[1].p == 0.2 and net[2][0].p == 0.4 and not net[1].training


def test_the_classifier_s_text_backbone_uses_it_and_loads_the_same_checkpoints():
    torch.manual_seed(0)
    fast = SFTClassifier(backbone=TINY_BERT, num_classes=2)
    torch.manual_seed(0)
    plain = SFTClassifier(backbone=TINY_BERT, num_classes=2, fast_dropout=False)
    fast_types = {type(m) for m in fast.backbone.modules() if isinstance(m, nn.Dropout)}
    plain_types = {type(m) for m in plain.backbone.modules() if isinstance(m, nn.Dropout)}
    assert fast_types == {FastDropout} and plain_types == {nn.Dropout}
    assert fast.state_dict().keys() == plain.state_dict().keys()
    # a checkpoint of one loads into the other (evaluation runs torch's path in both)
    fast.load_state_dict(plain.state_dict())
    inputs = {
        "input_ids": torch.tensor([[101, 2023, 2003, 102], [101, 2204, 102, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    fast.eval()
    plain.eval()
    torch.testing.assert_close(fast(inputs), plain(inputs))


def test_a_non_boolean_setting_is_one_error():
    with pytest.raises(SFTError, match=r"model\.fast_dropout"):
        SFTClassifier(backbone=TINY_BERT, num_classes=2, fast_dropout="yes")


def test_gradient_checkpointing_recomputes_the_same_masks():
    # the recomputed forward in backward must drop what the first forward dropped: torch's
    # checkpoint restores the CPU generator's state, which FastDropout draws from
    inputs = {
        "input_ids": torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2204, 102, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]),
    }
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SFTClassifier(
            backbone={**TINY_BERT, "gradient_checkpointing": checkpointing}, num_classes=2
        ).train()
        torch.manual_seed(1)
        model(inputs).sum().backward()
        grads.append([p.grad for p in model.backbone.parameters()])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, plain)


def resume_warnings(saved: dict, model: SFTClassifier, caplog) -> str:
    """What check_resume_checkpoint warns resuming `model` from a checkpoint with hyper-parameters
    `saved` (and the model's own weights)."""
    from pathlib import Path

    from sft.runs.resume import ResumePoint, check_resume_checkpoint

    caplog.clear()
    point = ResumePoint(
        Path("run.ckpt"), {"hyper_parameters": saved, "state_dict": model.state_dict()}
    )
    with caplog.at_level("WARNING", logger="sft.runs.resume"):
        check_resume_checkpoint(point, model)
    return caplog.text


def test_resuming_a_checkpoint_made_with_other_dropout_says_so(caplog):
    model = SFTClassifier(backbone=TINY_BERT, num_classes=2)
    before = {k: v for k, v in model.hparams.items() if k != "fast_dropout"}
    for saved, warned in ((before, True), (dict(model.hparams), False)):
        assert ("model.fast_dropout" in resume_warnings(saved, model, caplog)) is warned


def test_resuming_a_checkpoint_with_other_regulariser_settings_says_so(caplog):
    """A run started with L2-SP through its gradient (the text default before the decoupled
    pull) and resumed under the new default: a warning naming what changed (was: none)."""
    model = SFTClassifier(
        backbone=TINY_BERT, num_classes=2, reg_lambda=0.01, reg_decoupled=True, reg_every=4
    )
    older = {k: v for k, v in model.hparams.items() if k not in ("reg_decoupled", "reg_every")} | {
        "reg_lambda": 1e-5
    }
    for saved, warned in ((older, True), (dict(model.hparams), False)):
        warnings = resume_warnings(saved, model, caplog)
        expected = "model.reg_lambda=1e-05 -> 0.01, model.reg_decoupled=False -> True, model.reg_every=1 -> 4"
        assert (expected in warnings) is warned, warnings


@pytest.mark.parametrize("compile", [False, True])
def test_the_run_log_says_where_fast_dropout_applies(compile, caplog):
    """Under model.compile=true the log still said every dropout layer used FastDropout (those
    of the compiled backbone run torch's), and nothing of the compile."""
    with caplog.at_level("INFO", logger="sft.models.classifier"):
        SFTClassifier(backbone=TINY_BERT, num_classes=2, compile=compile)
    swapped = next(m for m in caplog.messages if "draw their masks with FastDropout" in m)
    assert swapped.endswith("but those of the compiled backbone torch's dropout") is compile
    assert any("model.compile=true: the backbone compiles" in m for m in caplog.messages) is compile
