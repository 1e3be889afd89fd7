"""In-place activations made out of place where autograd would copy their input anyway.

An in-place ReLU6 (EfficientNet-Lite, MobileNetV2), Hardswish, Hardsigmoid, SiLU or Mish
overwrites the input that its gradient needs, so autograd clones the input first: a copy and a
second pass over the activations on every call (8 ms of a 275 ms EfficientNet-Lite0 step at
64 px, batch 64, on 2 Xeon cores). Out of place, the output is written once. ReLU, LeakyReLU and
ELU are left alone: their gradients read the output, so in place costs nothing there.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

log = logging.getLogger(__name__)

# whose in-place form clones its input under autograd (torch 2.14's derivatives);
# nn.ReLU6 is an nn.Hardtanh
_CLONE_IN_PLACE = (nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Mish)


def _eval_outputs(model: nn.Module, example: torch.Tensor) -> list:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return tree_flatten(model(example.clone()))[0]
    finally:
        for module, training in modes.items():
            module.training = training


def out_of_place_activations(model: nn.Module, example: torch.Tensor) -> int:
    """Set `inplace=False` on `model`'s activations of the kinds above; returns how many.
    Checked on `example`: a model whose output relied on an activation changing its input in
    place (`self.act(x); return x`) is left as it was. No state_dict change."""
    activations = [m for m in model.modules() if isinstance(m, _CLONE_IN_PLACE) and m.inplace]
    if not activations:
        return 0
    try:
        before = _eval_outputs(model, example)
    except (RuntimeError, ValueError, AssertionError) as err:  # e.g. for other input sizes
        log.info(f"activations left in place: the backbone did not run on the example: {err}")
        return 0
    for module in activations:
        module.inplace = False
    after = _eval_outputs(model, example)
    same = len(before) == len(after) and all(
        not isinstance(a, torch.Tensor) or torch.equal(a, b)
        for a, b in zip(before, after, strict=True)
    )
    if not same:
        for module in activations:
            module.inplace = True
        log.info("activations left in place: the model's output depends on their side effect")
        return 0
    return len(activations)
