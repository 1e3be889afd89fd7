"""Lightning's `sync_batchnorm` (DDP) for models with timm's norm + activation layers.

torch's `convert_sync_batchnorm`, which Lightning's plugin uses, turns timm's `BatchNormAct2d`
(EfficientNet-Lite0's batch norm + ReLU6) into a plain `SyncBatchNorm`, whose forward never
calls the activation: EfficientNet-Lite0 then ran without any (outputs off by 5e4 on one
image). timm's own conversion keeps it (`SyncBatchNormAct`).
"""

from __future__ import annotations

from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from omegaconf import DictConfig, OmegaConf
from torch import nn


class SyncNormsKeepingActivations(TorchSyncBatchNorm):
    """`Trainer(sync_batchnorm=True, plugins=[this])`: timm's conversion where timm is there;
    `revert` puts back the modules it replaced (they share their weights and statistics)."""

    def __init__(self) -> None:
        self._replaced: dict[nn.Module, nn.Module] = {}

    def apply(self, model: nn.Module) -> nn.Module:
        try:
            from timm.layers import convert_sync_batchnorm
        except ImportError:  # without timm (sft[vision]) its layers cannot be in the model
            return super().apply(model)
        before = {name: m for name, m in model.named_modules()}
        model = convert_sync_batchnorm(model)
        self._replaced = {
            m: before[name]
            for name, m in model.named_modules()
            if name in before and before[name] is not m
        }
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        if not self._replaced:
            return super().revert(model)
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                original = self._replaced.get(child)
                if original is not None:
                    # the tensors the synced module holds now (moved to the device since)
                    for key, tensor in [
                        *child.named_parameters(recurse=False),
                        *child.named_buffers(recurse=False),
                    ]:
                        setattr(original, key, tensor)
                    original.train(child.training)
                    setattr(parent, name, original)
        return model


def norm_sync_as_asked(trainer_cfg: DictConfig) -> DictConfig:
    """`trainer_cfg` without this plugin where `sync_batchnorm` is false: Lightning takes a layer
    sync plugin for the setting itself, so trainer=ddp's synced batch norms under
    `trainer.sync_batchnorm=false` (on a CPU, torch's "SyncBatchNorm layers only work with GPU
    modules")."""
    plugins = trainer_cfg.get("plugins")
    # (a config without the key, a user's own: the plugin is its word, as Lightning takes it)
    if trainer_cfg.get("sync_batchnorm", True) is not False or not plugins:
        return trainer_cfg
    target = f"{__name__}.{SyncNormsKeepingActivations.__qualname__}"
    kept = [p for p in plugins if not (isinstance(p, DictConfig) and p.get("_target_") == target)]
    if len(kept) == len(plugins):
        return trainer_cfg
    trainer_cfg = trainer_cfg.copy()
    trainer_cfg.plugins = OmegaConf.create(kept)
    return trainer_cfg
