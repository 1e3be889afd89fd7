"""Kept embedding gradients: the gradient torch computes (accumulation, padding row, zeroing
between steps), in one kept tensor; only where that holds; and through the classifier's
Lightning loop the same training as torch's own backward."""

import copy
import pickle

import lightning as L
import pytest
import torch
from helpers.tiny_models import TINY_BERT
from torch import nn

from sft.models import SFTClassifier
from sft.models.kept_embedding_grad import KeptEmbeddingGrads, _KeptGradEmbedding


class Bag(nn.Module):
    """A table with a padding row and a linear readout: a tiny stand-in for an encoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(50, 6, padding_idx=0)
        self.out = nn.Linear(6, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.table(ids)).mean(1))


def batches(steps: int, micro: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    # ids repeat within a batch (rows summed) and include the padding id 0
    return [
        [torch.randint(0, 12, (4, 5), generator=gen) for _ in range(micro)] for _ in range(steps)
    ]


def test_the_gradient_is_torchs_across_accumulation_and_steps():
    """Two micro-batches per step, three AdamW steps: the kept gradient equals torch's dense
    one at every step (rows of earlier steps zeroed, the padding row left at zero), the same
    tensor is reused, and the trained weights are torch's."""
    plain, kept_model = Bag(), Bag()
    kept = KeptEmbeddingGrads.attach(kept_model, min_weights=0)
    assert kept is not None and len(kept.tables) == 1
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=0.1)
    opt_kept = torch.optim.AdamW(kept_model.parameters(), lr=0.1)
    grads = []
    for step in batches(steps=3, micro=2):
        opt_plain.zero_grad()
        kept.zero_grad(opt_kept)
        for ids in step:
            plain(ids).square().sum().backward()
            kept_model(ids).square().sum().backward()
        grad = kept_model.table.weight.grad
        torch.testing.assert_close(grad, plain.table.weight.grad)
        assert not grad[0].any()
        grads.append(grad)
        opt_plain.step()
        opt_kept.step()
    assert grads[0] is grads[1] is grads[2]
    for a, b in zip(plain.parameters(), kept_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_gradient_set_to_none_elsewhere_starts_from_zeros():
    """A user's optimizer.zero_grad() between steps (gradients to None): the next backward
    starts a new all-zero gradient, with nothing of the rows before it."""
    plain, kept_model = Bag(), Bag()
    kept = KeptEmbeddingGrads.attach(kept_model, min_weights=0)
    first, second = (step[0] for step in batches(steps=2, micro=1))
    kept_model(first).sum().backward()
    kept_model.zero_grad()  # not kept.zero_grad: the rows of `first` are not zeroed by it
    kept_model(second).sum().backward()
    plain(second).sum().backward()
    torch.testing.assert_close(kept_model.table.weight.grad, plain.table.weight.grad)
    # and kept.zero_grad afterwards zeroes the rows of `second`
    kept.zero_grad(torch.optim.SGD(kept_model.parameters(), lr=0.1))
    assert not kept_model.table.weight.grad.any()


def test_evaluation_uses_torchs_embedding_and_detach_gives_it_back():
    model = Bag()
    kept = KeptEmbeddingGrads.attach(model, min_weights=0)
    ids = batches(steps=1, micro=1)[0][0]
    with torch.no_grad():
        torch.testing.assert_close(
            model.table(ids), nn.functional.embedding(ids, model.table.weight, 0)
        )
    kept.detach()
    assert type(model.table) is nn.Embedding and "_kept_grad" not in vars(model.table)
    model(ids).sum().backward()  # torch's own backward again
    assert model.table.weight.grad is not None


def test_a_backward_in_eval_mode_is_kept_too():
    """Training with the model in eval mode (dropout off): its rows are tracked and zeroed."""
    plain, kept_model = Bag(), Bag()
    kept = KeptEmbeddingGrads.attach(kept_model, min_weights=0)
    kept_model.eval()
    first, second = (step[0] for step in batches(steps=2, micro=1))
    kept_model(first).sum().backward()
    kept.zero_grad(torch.optim.SGD(kept_model.parameters(), lr=0.1))
    assert not kept_model.table.weight.grad.any()
    kept_model(second).sum().backward()
    plain(second).sum().backward()
    torch.testing.assert_close(kept_model.table.weight.grad, plain.table.weight.grad)


@pytest.mark.parametrize("write", ["in_place", "replaced"])
def test_another_writer_s_gradient_is_dropped_as_torch_drops_it(write):
    """A regulariser's gradient on every row (in place), or a gradient tensor replaced by
    someone else, would leave rows zero_grad does not know of: the kept gradient then goes to
    None at the next zero_grad, and every step's gradient stays torch's."""
    plain, kept_model = Bag(), Bag()
    kept = KeptEmbeddingGrads.attach(kept_model, min_weights=0)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.1)
    opt_kept = torch.optim.SGD(kept_model.parameters(), lr=0.1)
    for step in batches(steps=3, micro=1):
        opt_plain.zero_grad()
        kept.zero_grad(opt_kept)
        for model in (plain, kept_model):
            model(step[0]).sum().backward()
            weight = model.table.weight
            if write == "in_place":
                weight.grad.add_(weight.detach(), alpha=0.5)
            else:
                weight.grad = weight.grad + 0.5 * weight.detach()
        torch.testing.assert_close(kept_model.table.weight.grad, plain.table.weight.grad)
        opt_plain.step()
        opt_kept.step()
    kept.zero_grad(opt_kept)
    assert kept_model.table.weight.grad is None


def test_attaching_again_drops_an_earlier_runs_gradient():
    """A second fit of the same model: what the first left in the gradient is not kept."""
    plain, kept_model = Bag(), Bag()
    first, second = (step[0] for step in batches(steps=2, micro=1))
    KeptEmbeddingGrads.attach(kept_model, min_weights=0).detach()
    kept_model(first).sum().backward()  # the earlier run's last step, its gradient left
    kept = KeptEmbeddingGrads.attach(kept_model, min_weights=0)
    assert kept_model.table.weight.grad is None
    kept_model(second).sum().backward()
    plain(second).sum().backward()
    torch.testing.assert_close(kept_model.table.weight.grad, plain.table.weight.grad)
    kept.zero_grad(torch.optim.SGD(kept_model.parameters(), lr=0.1))
    assert not kept_model.table.weight.grad.any()


def test_a_table_frozen_during_training_keeps_no_gradient():
    """As with torch's zero_grad, a table that stopped training has no gradient for the
    optimizer to apply (AdamW would still move it through its moments)."""
    model = Bag()
    kept = KeptEmbeddingGrads.attach(model, min_weights=0)
    model(batches(steps=1, micro=1)[0][0]).sum().backward()
    model.table.weight.requires_grad_(False)
    kept.zero_grad(torch.optim.SGD(model.parameters(), lr=0.1))
    assert model.table.weight.grad is None


def test_an_attached_model_pickles_and_trains_after():
    plain = Bag()
    model = pickle.loads(pickle.dumps(Bag()))
    KeptEmbeddingGrads.attach(model, min_weights=0)
    model = pickle.loads(pickle.dumps(model))
    assert type(model.table) is _KeptGradEmbedding
    ids = batches(steps=1, micro=1)[0][0]
    model(ids).sum().backward()
    plain(ids).sum().backward()
    torch.testing.assert_close(model.table.weight.grad, plain.table.weight.grad)


@pytest.mark.parametrize(
    "change",
    ["small", "tied", "max_norm", "sparse", "subclass"],
)
def test_only_plain_unshared_large_tables_are_kept(change):
    """A table under min_weights, one whose weight another module shares (its dense gradient
    would land outside the tracked rows), or one torch's backward treats specially keeps
    torch's backward."""
    model = Bag()
    min_weights = 0
    if change == "small":
        min_weights = model.table.weight.numel() + 1
    elif change == "tied":
        model.tied = nn.Linear(6, 50, bias=False)
        model.tied.weight = model.table.weight
    elif change == "max_norm":
        model.table.max_norm = 1.0
    elif change == "sparse":
        model.table.sparse = True
    else:
        model.table = type("Custom", (nn.Embedding,), {})(50, 6)
    assert KeptEmbeddingGrads.attach(model, min_weights=min_weights) is None
    assert not isinstance(model.table, _KeptGradEmbedding)


class _RecordGrads(L.Callback):
    def __init__(self) -> None:
        self.grads: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append(pl_module.backbone.model.get_input_embeddings().weight.grad)


def _fit(model: SFTClassifier, tmp_path, name: str) -> _RecordGrads:
    gen = torch.Generator().manual_seed(2)
    data = [
        {
            "input_ids": torch.randint(1, 200, (4, 7), generator=gen),
            "attention_mask": torch.ones(4, 7, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=gen),
        }
        for _ in range(6)
    ]
    record = _RecordGrads()
    trainer = L.Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=tmp_path / name,
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return record


@pytest.mark.parametrize(
    "regularizer",
    [{}, {"regularizer": "l2sp", "reg_lambda": 0.5, "reg_decoupled": False}],
    ids=["plain", "l2sp_gradient"],
)
def test_the_classifier_trains_as_with_torchs_backward(tmp_path, monkeypatch, regularizer):
    """Through Lightning (gradient accumulation, AdamW, the classifier's zero_grad hook), in two
    fits of the same model, and with L2-SP's gradient added to every row: the tiny BERT's word
    embedding is kept during fit (one gradient tensor for all steps, unless the regulariser's
    writes drop it) and given back after; the trained weights equal torch's own backward's."""
    torch.manual_seed(0)
    model = SFTClassifier(backbone=TINY_BERT, num_classes=2, fast_dropout=False, **regularizer)
    plain = copy.deepcopy(model)
    word = model.backbone.model.get_input_embeddings()
    attach = KeptEmbeddingGrads.attach
    monkeypatch.setattr(
        KeptEmbeddingGrads, "attach", staticmethod(lambda module: attach(module, min_weights=0))
    )
    torch.manual_seed(1)
    records = [_fit(model, tmp_path, "kept"), _fit(model, tmp_path, "kept_again")]
    assert type(word) is nn.Embedding  # given back
    for record in records:
        grads = record.grads
        assert len(grads) == 3
        if not regularizer:
            assert all(g is grads[0] for g in grads)
    monkeypatch.setattr(KeptEmbeddingGrads, "attach", staticmethod(lambda module: None))
    torch.manual_seed(1)
    _fit(plain, tmp_path, "plain")
    _fit(plain, tmp_path, "plain_again")
    for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
