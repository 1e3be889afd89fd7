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
from torchmetrics import MaxMetric, MeanMetric


class _KeepsFloat32:
    """Mixin for a torchmetrics Metric of float states: after any move or cast, its states and
    dtype are float32 again."""

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> Any:
        out = super()._apply(fn, exclude_state)  # type: ignore[misc]
        for key, default in out._defaults.items():
            if isinstance(default, torch.Tensor) and default.is_floating_point():
                out._defaults[key] = default.float()
                setattr(out, key, getattr(out, key).float())
        out._dtype = torch.float32
        return out


class Float32Mean(_KeepsFloat32, MeanMetric):
    """MeanMetric in float32."""


class Float32Max(_KeepsFloat32, MaxMetric):
    """MaxMetric in float32."""
