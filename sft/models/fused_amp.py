"""Fused optimizers (the model configs' AdamW, `fused: true`) under Lightning's mixed precision.

Lightning 2.6's AMP plugin leaves a fused optimizer's gradients on the loss scale until the
optimizer's own step unscales them (16-mixed), and refuses gradient clipping for any fused
optimizer, bf16 included, where there is no scale at all. torch's GradScaler also takes such an
optimizer's gradients unscaled before its step (`unscale_`, then the step skips its own), which
is what sft does where the true gradients are needed: for L2-SP's gradient and for clipping.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType


def unscale_fused(trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> None:
    """Bring a fused optimizer's gradients off the loss scale (16-mixed) before anything reads or
    adds to them this step: L2-SP's gradient added to scaled ones counted 1/scale (lambda /
    65,536 at the default scale). A no-op without a scaler or for an unfused optimizer, which
    Lightning unscales itself."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is not None and _optimizer_handles_unscaling(optimizer):
        scaler.unscale_(optimizer)


def clips_fused(trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> bool:
    """Whether this step's gradient clipping is sft's to do (`clip_fused`): Lightning's AMP
    plugin would refuse it, with a RuntimeError at the first step."""
    return bool(trainer.gradient_clip_val) and (
        isinstance(trainer.precision_plugin, MixedPrecision)
        and _optimizer_handles_unscaling(optimizer)
    )


def clip_fused(
    trainer: L.Trainer,
    optimizer: torch.optim.Optimizer,
    clip_val: float,
    algorithm: GradClipAlgorithmType | str | None,
) -> None:
    """Clip a fused optimizer's gradients under mixed precision as Lightning clips others'
    (by norm unless `algorithm` says value). They are true gradients here: bf16 has no scale,
    and 16-mixed's were unscaled by `unscale_fused` in `on_before_optimizer_step`."""
    Precision.clip_gradients(
        trainer.precision_plugin, optimizer, clip_val, GradClipAlgorithmType(algorithm or "norm")
    )
