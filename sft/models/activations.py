"""In-place activations made out of place where autograd would copy their input anyway.

An in-place ReLU6 (EfficientNet-Lite, MobileNetV2), Hardswish, Hardsigmoid, SiLU or Mish
overwrites the input that its gradient needs, so autograd clones the input first: a copy and a
second pass over the activations on every call. Out of place, the output is written once.
ReLU, LeakyReLU and ELU are left alone: their gradients read the output, so in place costs
nothing there. EfficientNet-Lite0 at 64 px, batch 64, on 2 Xeon cores: ~4 % of a training
step (benchmarks/depthwise_conv.py).
"""

from __future__ import annotations

from torch import nn

# whose in-place form clones its input under autograd (torch 2.14's derivatives);
# nn.ReLU6 is an nn.Hardtanh
_CLONE_IN_PLACE = (nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Mish)


def out_of_place_activations(model: nn.Module) -> int:
    """Set `inplace=False` on `model`'s activations of the kinds above; returns how many.
    Same outputs and gradients; no state_dict change."""
    changed = 0
    for module in model.modules():
        if isinstance(module, _CLONE_IN_PLACE) and module.inplace:
            module.inplace = False
            changed += 1
    return changed
