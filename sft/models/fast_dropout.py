"""Dropout whose CPU masks take a quarter of the random draws of torch's.

torch's CPU dropout (`bernoulli_`) makes one draw of its mt19937 generator per element: about
5 ns per element here, 1.3 ms for one 32 x 16 x 384 activation, and MiniLM runs 13 such
dropouts per training step (8-10 % of a bf16 step in torch's profiler). `FastDropout` makes
one 64-bit draw of the same generator (`random_`) per four elements and keeps an element when
its 15-bit quarter is at least `round(p * 2**15)`: the same Bernoulli keep mask, with the drop
probability rounded to a multiple of 2**-15 (0.1 -> 0.100006), and the kept values scaled by
1 / (1 - that probability), so the output's expectation is the input's as with torch's.
Forward + backward of one dropout: 2.0-3.2x faster (benchmarks/fast_dropout.py). Like torch's,
it keeps a mask of the activation's dtype for backward.

It draws from torch's default CPU generator, so `seed_everything`, Lightning's saved RNG states
and activation checkpointing govern it as they govern torch's dropout. On other devices (CUDA's
Philox dropout is already cheap), under torch.compile (inductor generates its own), in place,
and where p rounds to 0 or 1 it is torch's dropout.
"""

import torch
from torch import nn

# the mask's resolution: 15 random bits per element
_LEVELS = 2**15


def mask_from_bits(bits: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    """From int16 random `bits` (overwritten; the low 15 of each are used): 1 / (1 - p') where
    they are at least t = round(p * 2**15), 0 below (p' = t / 2**15), as `dtype`."""
    threshold = round(p * _LEVELS)
    # Integer arithmetic, not a comparison: on this CPU, int16 `>=` and bool -> float casts
    # take 4-6x longer than these in-place ops. (u - t) >> 15 is -1 where u < t (dropped), else 0.
    kept = bits.bitwise_and_(_LEVELS - 1).sub_(threshold).bitwise_right_shift_(15).add_(1)
    return kept.to(dtype).mul_(_LEVELS / (_LEVELS - threshold))


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU dropout mask of `shape` and `dtype` drawn from torch's generator (module
    docstring): the kept elements' scale, or 0."""
    n = shape.numel()
    # random_ on int64 fills [0, 2**63) (15 % faster per bit than int32's [0, 2**31)): each of
    # its four 16-bit quarters holds 15 uniform bits
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n]
    return mask_from_bits(bits, p, dtype).view(shape)


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the cheaper mask on CPU (module docstring); no parameters, so a
    model's state_dict is the same with either."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        usable = (
            0 < round(self.p * _LEVELS) < _LEVELS
            and not self.inplace
            and input.device.type == "cpu"
        )
        if not self.training or not usable or torch.compiler.is_compiling():
            return super().forward(input)
        # autograd keeps only the mask for backward (it needs no gradient), as torch's does
        return input * keep_mask(input.shape, self.p, input.dtype)


def use_fast_dropout(module: nn.Module) -> int:
    """Replace every plain `nn.Dropout` inside `module` by a `FastDropout` of the same p, in
    place; returns how many were replaced. Subclasses and other dropouts stay as they are."""
    replaced = 0
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)
                replaced += 1
    return replaced
