"""Parameter groups: separate learning rates for backbone and head, no decay on norms and biases."""

from torch import nn


def param_groups(module: nn.Module, lr: float, weight_decay: float, name: str) -> list[dict]:
    """Two groups of `module`'s trainable parameters: decayed weights, and 1-D tensors without decay.

    1-D tensors are biases and norm scales/shifts; decaying them hurts (the usual timm/HF rule).
    """
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"name": f"{name}", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": f"{name}/no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
