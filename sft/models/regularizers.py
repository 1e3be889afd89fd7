"""R(theta) of the loss `sum l(y, y_hat) + lambda R(theta)`, over the backbone's parameters.

The penalty is not built into the autograd graph: its gradient `2 lambda (theta - theta_0)` is
added to the parameters' gradients with fused `torch._foreach_*` ops once per optimizer step
(`add_gradient_`, called from `SFTClassifier.on_before_optimizer_step`). Autograd through a
Python sum of 200 per-tensor norms cost 25 % of a MiniLM step; this costs a few percent and
gives the same gradient (tests/test_model.py compares it with autograd's). `forward` still
returns the value R(theta), for logging the regularised objective.

Decoupled (`decay_`, model.reg_decoupled=true): as AdamW's weight decay is to L2, the pull
`theta <- theta - lr * lambda * dR/dtheta` is applied to the weights before each optimizer step,
outside Adam's normalisation, with each parameter group's current lr. It is one in-place pass
(L2-SP: `lerp` towards theta_0) instead of two through the gradients: each pass is bound by
memory bandwidth, and L2-SP's takes 10 instead of 15 ms on a MiniLM (benchmarks/vs_anchors.py).
`decay_` takes, per optimizer group, the fraction of `theta - target` to keep, so that the pulls
of several steps can be applied at once (model.reg_every, "lazy regularisation").
"""

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from sft.errors import SFTError


def _grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    """The gradients of trainable `params` to add to; a parameter the loss did not reach gets a
    zero one (it still gets the penalty's gradient, as with autograd)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in params]


def _by_keep(
    optimizer: torch.optim.Optimizer, params: list[nn.Parameter], keep: Sequence[float]
) -> dict[float, list[int]]:
    """Indices into `params`, grouped by the `keep` of the optimizer parameter group holding
    them (one foreach call per distinct value: groups differ by weight decay, layer decay gives
    each layer its own lr); parameters no group holds are left out."""
    keep_of = {
        id(p): float(keep[g])
        for g, group in enumerate(optimizer.param_groups)
        for p in group["params"]
    }
    groups: dict[float, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        if id(p) in keep_of:
            groups[keep_of[id(p)]].append(i)
    return groups


def _selected(backbone: nn.Module, names: set[str] | None) -> list[nn.Parameter]:
    """The backbone's parameters R(theta) covers: `names`, or all when None."""
    return [p for n, p in backbone.named_parameters() if names is None or n in names]


class NoRegularizer(nn.Module):
    def forward(self, backbone: nn.Module) -> torch.Tensor:
        return torch.zeros((), device=next(backbone.parameters()).device)

    def add_gradient_(self, backbone: nn.Module, scale: float) -> None:
        return None

    def decay_(
        self, backbone: nn.Module, optimizer: torch.optim.Optimizer, keep: Sequence[float]
    ) -> None:
        return None


class L2(nn.Module):
    """sum ||theta||^2: plain L2 towards zero (over `names`, else every backbone parameter)."""

    def __init__(self, names: set[str] | None = None) -> None:
        super().__init__()
        self.names = names

    @torch.no_grad()
    def forward(self, backbone: nn.Module) -> torch.Tensor:
        params = _selected(backbone, self.names)
        return torch.stack(torch._foreach_norm(params)).pow(2).sum()

    def _trainable(self, backbone: nn.Module) -> list[nn.Parameter]:
        return [p for p in _selected(backbone, self.names) if p.requires_grad]

    @torch.no_grad()
    def add_gradient_(self, backbone: nn.Module, scale: float) -> None:
        """grad += scale * d/dtheta R = 2 * scale * theta, for every trainable parameter."""
        params = self._trainable(backbone)
        if params:
            torch._foreach_add_(_grads(params), params, alpha=2.0 * scale)

    @torch.no_grad()
    def decay_(
        self, backbone: nn.Module, optimizer: torch.optim.Optimizer, keep: Sequence[float]
    ) -> None:
        """theta <- keep[g] * theta for the parameters of optimizer group g (AdamW's weight
        decay: keep = 1 - 2 lr lambda for one step)."""
        params = self._trainable(backbone)
        for kept, idx in _by_keep(optimizer, params, keep).items():
            torch._foreach_mul_([params[i] for i in idx], kept)


class L2SP(nn.Module):
    """sum ||theta - theta_0||^2 towards the starting (pretrained) weights (Li et al., 2018).

    theta_0 is copied at construction and kept as buffers, so checkpoints carry it and a resumed
    run regularises towards the same point even for randomly initialised backbones. Over
    `names`, else every backbone parameter.
    """

    def __init__(self, backbone: nn.Module, names: set[str] | None = None) -> None:
        super().__init__()
        self.names = {n for n, _ in backbone.named_parameters()} if names is None else names
        for i, p in enumerate(_selected(backbone, self.names)):
            self.register_buffer(f"ref_{i}", p.detach().clone())

    def _refs(self) -> list[torch.Tensor]:
        return [getattr(self, f"ref_{i}") for i in range(len(self.names))]

    @torch.no_grad()
    def forward(self, backbone: nn.Module) -> torch.Tensor:
        diffs = torch._foreach_sub(_selected(backbone, self.names), self._refs())
        return torch.stack(torch._foreach_norm(diffs)).pow(2).sum()

    def _trainable_pairs(self, backbone: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [
            (p, r)
            for p, r in zip(_selected(backbone, self.names), self._refs(), strict=True)
            if p.requires_grad
        ]

    @torch.no_grad()
    def decay_(
        self, backbone: nn.Module, optimizer: torch.optim.Optimizer, keep: Sequence[float]
    ) -> None:
        """theta <- theta_0 + keep[g] * (theta - theta_0) for the parameters of optimizer group
        g: one `lerp` (keep = 1 - 2 lr lambda for one step)."""
        pairs = self._trainable_pairs(backbone)
        for kept, idx in _by_keep(optimizer, [p for p, _ in pairs], keep).items():
            torch._foreach_lerp_([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], 1.0 - kept)

    @torch.no_grad()
    def add_gradient_(self, backbone: nn.Module, scale: float) -> None:
        """grad += scale * d/dtheta R = 2 * scale * (theta - theta_0), for every trainable
        parameter: two in-place passes, no temporaries of the backbone's size."""
        pairs = self._trainable_pairs(backbone)
        if not pairs:
            return
        params = [p for p, _ in pairs]
        grads = _grads(params)
        torch._foreach_add_(grads, params, alpha=2.0 * scale)
        torch._foreach_add_(grads, [r for _, r in pairs], alpha=-2.0 * scale)


def create_regularizer(name: str, backbone: nn.Module, trainable_only: bool = False) -> nn.Module:
    """R(theta) `name` over the backbone's parameters, or, with `trainable_only` (adapters),
    over those trainable now. With LoRA that is the adapters: L2-SP pulls B to its start, 0,
    and A to its random start, so the adapter's update B A is pulled towards 0; L2 pulls A and B
    to 0 (also B A)."""
    names = (
        {n for n, p in backbone.named_parameters() if p.requires_grad} if trainable_only else None
    )
    builders = {
        "none": NoRegularizer,
        "l2": lambda: L2(names),
        "l2sp": lambda: L2SP(backbone, names),
    }
    if name not in builders:
        raise SFTError(f"model.regularizer: unknown {name!r}; expected one of {sorted(builders)}")
    return builders[name]()
