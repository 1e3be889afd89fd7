"""Gradual unfreezing: train the head alone first, then the whole model."""

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.utilities import rank_zero_info

from sft.errors import SFTError
from sft.utils.logs import rank_zero_warning

log = logging.getLogger(__name__)


class BackboneUnfreeze(Callback):
    """Freezes `pl_module.backbone` (weights and norm statistics) before `unfreeze_at_epoch`.

    Why not Lightning's BackboneFinetuning: it adds the backbone's parameters to the optimizer as
    a new group when it unfreezes them, so they escape the LR schedule and the no-decay split of
    norms and biases. Here the backbone's groups exist from step 0 and only `requires_grad`
    changes; being stateless (it reads the epoch), it is also right after a resume.
    """

    def __init__(self, unfreeze_at_epoch: int = 1) -> None:
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.hparams.get("adapter") is not None:
            # it would freeze the adapters first, then unfreeze base weights no optimizer holds
            raise SFTError(
                "callbacks=backbone_unfreeze and adapter=lora do not combine: with adapters the "
                "base weights stay frozen and the adapters train from the start; drop one"
            )
        if pl_module.hparams.get("freeze_backbone"):
            # a warning, not an error: a sweep over methods (linear_probe among them) shares
            # its callbacks (was: no word)
            rank_zero_warning(
                log,
                "callbacks.backbone_unfreeze does nothing with model.freeze_backbone=true: the "
                "backbone is in no optimizer group and stays frozen (model.freeze_backbone=false "
                "trains it from callbacks.backbone_unfreeze.unfreeze_at_epoch)",
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # here, not at fit start: the epoch a resumed run restarts at is known
        strategy = trainer.strategy
        frozen_first = trainer.current_epoch < self.unfreeze_at_epoch
        if (
            isinstance(strategy, DDPStrategy)
            and not isinstance(strategy, DeepSpeedStrategy)
            and trainer.world_size > 1
            and frozen_first
            and not pl_module.hparams.get("freeze_backbone")
            and not strategy._ddp_kwargs.get("find_unused_parameters")
        ):
            # was: DDP's RuntimeError at the first step, "parameters that were not used in
            # producing the loss", as a traceback of the ranks
            name = {"spawn": "ddp_spawn", "fork": "ddp_fork"}.get(strategy._start_method, "ddp")
            raise SFTError(
                "callbacks=backbone_unfreeze under DDP: the backbone trains from epoch "
                f"{self.unfreeze_at_epoch} only, and DDP expects every weight that may train "
                f"to have a gradient at each step unless told: set "
                f"trainer.strategy={name}_find_unused_parameters_true"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.hparams.get("freeze_backbone"):
            return  # a pure linear probe stays frozen
        trainable = trainer.current_epoch >= self.unfreeze_at_epoch
        changes = any(p.requires_grad != trainable for p in pl_module.backbone.parameters())
        pl_module.backbone.requires_grad_(trainable)
        pl_module.train()  # SFTClassifier.train() keeps a frozen backbone in eval mode
        if changes:  # the run log's parameter count is the model's as built (was: no word)
            count, total = pl_module.parameter_counts()
            what = (
                "unfrozen"
                if trainable
                else f"frozen until epoch {self.unfreeze_at_epoch} (callbacks.backbone_unfreeze)"
            )
            rank_zero_info(
                f"epoch {trainer.current_epoch}: backbone {what}: {count:,} of {total:,} "
                "parameters train"
            )
