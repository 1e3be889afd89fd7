"""The fused supervised head: y = f(h; theta) + g(h; phi) on backbone features h."""

import logging
from collections.abc import Callable
from typing import Annotated

import torch
from annotated_types import Ge, Interval
from torch import nn

from sft.errors import SFTError
from sft.utils.logs import rank_zero_warning

log = logging.getLogger(__name__)


def _linear_branch(in_features: int, num_classes: int, hidden_dim: int | None, dropout: float):
    return nn.Linear(in_features, num_classes)


def _mlp_branch(in_features: int, num_classes: int, hidden_dim: int | None, dropout: float):
    hidden = hidden_dim or in_features
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


# Branch builders by name: (in_features, num_classes, hidden_dim, dropout) -> module or None.
# "none" leaves a single linear head (the plain fine-tuning baseline).
BRANCHES: dict[str, Callable[..., nn.Module | None]] = {
    "linear": _linear_branch,
    "mlp": _mlp_branch,
    "none": lambda *args: None,
}


class FusedHead(nn.Module):
    """`base(h) + branch(h)`; the branch's last layer starts at zero so step 0 equals `base`.

    `base` is the head a linear probe can initialise; `branch` is the supervised correction
    learned during fine-tuning. With `freeze_base` only the branch (and backbone) train.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        branch: str = "linear",
        hidden_dim: Annotated[int, Ge(1)] | None = None,
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        freeze_base: bool = False,
    ) -> None:
        super().__init__()
        if branch not in BRANCHES:
            raise SFTError(
                f"model.head.branch: unknown branch {branch!r}; expected one of {sorted(BRANCHES)}"
            )
        unused = [
            f"{key}={value}"
            for key, value, default in (("hidden_dim", hidden_dim, None), ("dropout", dropout, 0.0))
            if value != default
        ]
        if branch != "mlp" and unused:  # the mlp branch's settings (was: ignored silently)
            rank_zero_warning(
                log,
                f"model.head.{', model.head.'.join(unused)}: only the mlp branch has them; with "
                f"model.head.branch={branch} they change nothing",
            )
        self.base = nn.Linear(in_features, num_classes)
        self.branch = BRANCHES[branch](in_features, num_classes, hidden_dim, dropout)
        if self.branch is not None:
            last = [m for m in self.branch.modules() if isinstance(m, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.base.requires_grad_(not freeze_base)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.base(h)
        return out if self.branch is None else out + self.branch(h)

    @property
    def folds(self) -> bool:
        """Whether `fold` can make one Linear of it (a linear branch or none)."""
        return self.branch is None or isinstance(self.branch, nn.Linear)

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        """One Linear with the fused output, `(W + V) h + (b + c)`; needs a linear (or no) branch."""
        if not self.folds:
            raise SFTError(
                "FusedHead.fold() needs branch='linear' or 'none'; this head has an MLP branch"
            )
        folded = nn.Linear(self.base.in_features, self.base.out_features)
        folded.weight.copy_(self.base.weight)
        folded.bias.copy_(self.base.bias)
        if self.branch is not None:
            folded.weight.add_(self.branch.weight)
            folded.bias.add_(self.branch.bias)
        return folded.to(self.base.weight.device)
