"""R(theta) of the loss `sum l(y, y_hat) + lambda R(theta)`, over the backbone's parameters."""

import torch
from torch import nn

from sft.utils.errors import SFTError


class NoRegularizer(nn.Module):
    def forward(self, backbone: nn.Module) -> torch.Tensor:
        return torch.zeros((), device=next(backbone.parameters()).device)


class L2(nn.Module):
    """sum ||theta||^2: plain L2 towards zero."""

    def forward(self, backbone: nn.Module) -> torch.Tensor:
        return sum(p.pow(2).sum() for p in backbone.parameters())


class L2SP(nn.Module):
    """sum ||theta - theta_0||^2 towards the starting (pretrained) weights (Li et al., 2018).

    theta_0 is copied at construction and kept as buffers, so checkpoints carry it and a resumed
    run regularises towards the same point even for randomly initialised backbones.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.names = [name for name, _ in backbone.named_parameters()]
        for i, p in enumerate(backbone.parameters()):
            self.register_buffer(f"ref_{i}", p.detach().clone())

    def forward(self, backbone: nn.Module) -> torch.Tensor:
        refs = (getattr(self, f"ref_{i}") for i in range(len(self.names)))
        return sum((p - r).pow(2).sum() for p, r in zip(backbone.parameters(), refs, strict=True))


def create_regularizer(name: str, backbone: nn.Module) -> nn.Module:
    builders = {"none": NoRegularizer, "l2": L2, "l2sp": lambda: L2SP(backbone)}
    if name not in builders:
        raise SFTError(f"model.regularizer: unknown {name!r}; expected one of {sorted(builders)}")
    return builders[name]()
