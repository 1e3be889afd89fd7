"""Loss and best-accuracy metrics that stay in float32 under every precision.

Lightning's bf16-true/16-true cast the model with `.to(dtype)`, which torchmetrics lets through to
a metric's states, and Lightning's logging moves a logged metric with `.to(device)` while the
default dtype is half, which torchmetrics takes as the metric's dtype (inputs are cast to it):
val/loss and test/loss were summed in half precision, rounded (2.078 at every validation of a
trial's bf16-true run) or, under 16-true, overflowing to inf.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torchmetrics import MaxMetric, MeanMetric


class _KeepsFloat32:
    """Mixin for a torchmetrics Metric of tensor states: a move or cast moves its float states
    and results in float32 (never through a half cast, which would round them)."""

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> Any:
        floats = [
            k
            for k, d in self._defaults.items()  # type: ignore[attr-defined]
            if isinstance(d, torch.Tensor) and d.is_floating_point()
        ]
        out = super()._apply(fn, exclude_state=(*exclude_state, *floats))  # type: ignore[misc]
        device = out.device  # where `fn` moved the rest

        def kept(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, torch.float32) if t.is_floating_point() else t

        for key in floats:
            out._defaults[key] = kept(out._defaults[key])
            setattr(out, key, kept(getattr(out, key)))
        out._computed = apply_to_collection(out._computed, torch.Tensor, kept)
        out._forward_cache = apply_to_collection(out._forward_cache, torch.Tensor, kept)
        out._dtype = torch.float32
        return out


class Float32Mean(_KeepsFloat32, MeanMetric):
    """MeanMetric in float32."""


class Float32Max(_KeepsFloat32, MaxMetric):
    """MaxMetric in float32."""
