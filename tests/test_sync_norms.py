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


@pytest.mark.parametrize("sync", [True, False])
def test_trainer_ddp_syncs_batch_norms_only_when_asked(sync, tmp_path):
    """`trainer=ddp trainer.sync_batchnorm=false`: the config's plugin synced them anyway
    (Lightning takes a layer sync plugin for the setting): on a CPU torch's ValueError in every
    rank; on GPUs synced against the user's word."""
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    sync_setting = f"trainer.sync_batchnorm={sync}"
    cfg = compose_config("train", [*overrides, sync_setting, "trainer.precision=32-true"], tmp_path)
    layer_sync = build_trainer(cfg.trainer).strategy._layer_sync
    assert isinstance(layer_sync, SyncNormsKeepingActivations) if sync else layer_sync is None
