"""trainer=ddp syncs batch norms across processes without dropping timm's activations."""

import copy

import pytest
import torch
from conftest import compose_config

from sft.utils.instantiate import build_trainer
from sft.utils.sync_norms import SyncNormsKeepingActivations


def test_synced_efficientnet_keeps_its_activations_and_reverts_to_its_own_layers():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    want = model(x)
    plugin = SyncNormsKeepingActivations()
    synced = plugin.apply(copy.deepcopy(model)).eval()
    assert isinstance(synced.bn1, torch.nn.SyncBatchNorm)
    # in eval mode a SyncBatchNorm normalises as a batch norm: the same network
    torch.testing.assert_close(synced(x), want)
    reverted = plugin.revert(synced)
    assert type(reverted.bn1) is type(model.bn1)
    assert list(reverted.state_dict()) == keys
    torch.testing.assert_close(reverted(x), want)


def test_the_ddp_trainer_config_builds_with_it(tmp_path):
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"]
    cfg = compose_config("train", [*overrides, "trainer.precision=32-true"], tmp_path)
    trainer = build_trainer(cfg.trainer)
    assert isinstance(trainer.strategy._layer_sync, SyncNormsKeepingActivations)
