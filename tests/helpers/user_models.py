"""A user's subclass of SFTClassifier, as its config names it (`model._target_`)."""

from __future__ import annotations

from typing import Any

import torch

from sft.models import SFTClassifier


class ScaledLogits(SFTClassifier):
    """Its own forward (logits times `scale`) and its own init argument, passed on as Hydra
    passes the rest: `**kwargs`, sub-configs as DictConfig."""

    def __init__(self, *args: Any, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return super().forward(*args, **kwargs) * self.scale


class OwnArgumentsOnly(SFTClassifier):
    """Names the arguments it uses, without `**kwargs` for the rest."""

    def __init__(self, backbone: Any, num_classes: int, gamma: float = 2.0) -> None:
        super().__init__(backbone=backbone, num_classes=num_classes)
        self.gamma = gamma


class NotAClassifier(torch.nn.Module):
    """Takes a model config's arguments, but is no SFTClassifier."""

    def __init__(self, backbone: Any, num_classes: int) -> None:
        super().__init__()
