"""Large embedding tables whose gradient stays allocated between steps, only its used rows zeroed.

torch gives an `nn.Embedding` a dense gradient: every backward allocates a table-sized tensor,
zero-fills it and adds the batch's rows into it, and zero_grad frees it again. For a text
encoder's word embedding that is most of the table's cost: MiniLM's 30,522 x 384 table is
half the model's weights (47 MB), and a batch of 32 SST-2 phrases uses about 400 of its rows.
Keeping the gradient made whole MiniLM steps on a 2-core Xeon (AMX) 1.03x faster in bf16 and
1.02x in fp32 (benchmarks/kept_embedding_grad.py).

Here backward adds the rows into the table's kept `.grad` in place (`index_add_`, the sum torch's
dense backward computes, in another order of its float additions), and the model's
`optimizer_zero_grad` zeroes only the rows added since the last one. That is torch's gradient
as long as nothing else writes into it: a write by anyone else (a regulariser's gradient on
every row, gradient clipping, a dense gradient from another path) shows in the tensor's version
counter, and the next zero_grad then sets it to None as torch's does, so such runs get torch's
gradient at torch's cost. Only on CPU, in one process (DDP's hooks wait for autograd's own
gradient of every weight), not compiled, for plain tables (no max_norm, scale_grad_by_freq or
sparse) whose weight no other module shares.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# tables below this many weights keep torch's backward: their fill costs next to nothing
# (MiniLM's position table, 512 x 384, stays as it is)
MIN_WEIGHTS = 2**20


class _AddRowsIntoGrad(torch.autograd.Function):
    """F.embedding whose backward adds into the table's `.grad` itself and hands autograd no
    gradient for the weight (so autograd allocates none)."""

    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, table: _Kept) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.table = table
        return F.embedding(ids, weight, table.module.padding_idx)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, None, None]:
        (ids,) = ctx.saved_tensors
        ctx.table.add_rows(ids.reshape(-1), grad_out.reshape(-1, grad_out.shape[-1]))
        return None, None, None


class _Kept:
    """One table's kept gradient: the tensor, the rows added into it since it was last zeroed,
    and its version after this class's last write (another tensor or version: someone else
    wrote the gradient)."""

    def __init__(self, module: nn.Embedding) -> None:
        self.module = module
        self.rows: list[torch.Tensor] = []
        self.tensor: torch.Tensor | None = None
        self.version = -1
        self.foreign = False

    def _ours(self, grad: torch.Tensor | None) -> bool:
        return grad is not None and grad is self.tensor and grad._version == self.version

    def add_rows(self, ids: torch.Tensor, grads: torch.Tensor) -> None:
        weight = self.module.weight
        padding = self.module.padding_idx
        if padding is not None:  # as torch's backward: the padding row gets no gradient
            used = ids != padding
            ids, grads = ids[used], grads[used]
        if weight.grad is None:  # the first step, or someone set it to None: all zeros again
            weight.grad = torch.zeros_like(weight)
            self.rows.clear()
            self.foreign = False
        elif not self._ours(weight.grad):
            self.foreign = True  # its values stand; the next zero_grad drops it
        weight.grad.index_add_(0, ids, grads.to(weight.grad.dtype))
        self.rows.append(ids)
        self.tensor, self.version = weight.grad, weight.grad._version

    def zeroed(self, grad: torch.Tensor | None) -> torch.Tensor | None:
        """`grad` with the added rows zeroed, for the next step; None where another writer
        touched it (or the table stopped training), as torch's zero_grad leaves it."""
        trusted = self._ours(grad) and not self.foreign and self.module.weight.requires_grad
        if trusted and self.rows:
            grad.index_fill_(0, torch.cat(self.rows), 0)
        self.rows.clear()
        self.foreign = False
        if not trusted:
            self.tensor = None
            return None
        self.version = grad._version
        return grad


class _KeptGradEmbedding(nn.Embedding):
    """The class of a kept table while attached (as torch.nn.utils.parametrize swaps a module's
    class): the same weights and state_dict, its training forward through _AddRowsIntoGrad."""

    _kept_grad: _Kept

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            torch.is_grad_enabled()
            and self.weight.requires_grad
            and not torch.compiler.is_compiling()
        ):
            return _AddRowsIntoGrad.apply(input, self.weight, self._kept_grad)
        return super().forward(input)


class KeptEmbeddingGrads:
    """The large plain embedding tables of a model, their gradients kept (module docstring).

    `attach(model)` finds them; the training loop then zeroes gradients through `zero_grad`
    instead of `optimizer.zero_grad()`, and `detach()` gives the tables torch's backward back.
    """

    def __init__(self, tables: list[_Kept]) -> None:
        self.tables = tables

    @classmethod
    def attach(cls, model: nn.Module, min_weights: int | None = None) -> KeptEmbeddingGrads | None:
        """The tables of `model` this applies to (at least `min_weights` weights, default
        MIN_WEIGHTS), attached, their gradients set to None; None if there are none."""
        min_weights = MIN_WEIGHTS if min_weights is None else min_weights
        owners: dict[int, int] = {}
        for module in model.modules():
            for param in module._parameters.values():
                if param is not None:
                    owners[id(param)] = owners.get(id(param), 0) + 1
        tables = []
        for module in model.modules():
            if (
                type(module) is nn.Embedding
                and module.weight.device.type == "cpu"
                and module.weight.numel() >= min_weights
                and module.max_norm is None
                and not module.scale_grad_by_freq
                and not module.sparse
                and owners[id(module.weight)] == 1
            ):
                # what an earlier run left in it is not this one's (torch's first zero_grad
                # would drop it too)
                module.weight.grad = None
                table = _Kept(module)
                module._kept_grad = table
                module.__class__ = _KeptGradEmbedding
                tables.append(table)
        return cls(tables) if tables else None

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.zero_grad()` (gradients to None), but the kept tables' gradients stay,
        with the rows used since the last call zeroed (module docstring: when they don't)."""
        kept = [table.module.weight.grad for table in self.tables]
        optimizer.zero_grad()
        for table, grad in zip(self.tables, kept, strict=True):
            table.module.weight.grad = table.zeroed(grad)

    def detach(self) -> None:
        """torch's own forward and backward again; the gradients are left as they are."""
        for table in self.tables:
            table.module.__class__ = nn.Embedding
            del table.module._kept_grad
        self.tables = []
