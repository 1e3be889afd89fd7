"""Lightning loop overhead vs a raw PyTorch loop: same model, data, steps and validation.

    python benchmarks/loop_overhead.py [--backbone small_cnn|resnet18] [--steps 100] [--repeats 3]

Both loops train SFTClassifier's backbone + head for `--steps` batches of CIFAR-10 (batched
on-device augmentation included) with the same optimizer, then run one validation pass. The
Lightning side runs with the project's default callbacks (ModelCheckpoint best+last,
EarlyStopping, LearningRateMonitor, RichProgressBar) and TensorBoard logging on. Runs alternate
(raw, lightning, raw, ...) and the median of each is reported; goal: overhead <= 3%.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import TensorBoardLogger

from sft.data.cifar10 import CIFAR10DataModule
from sft.models import SFTClassifier
from sft.utils.config import PROJECT_ROOT


def build(backbone: str, data_dir: str, batch_size: int) -> tuple[SFTClassifier, CIFAR10DataModule]:
    torch.manual_seed(0)
    options = {"cifar_stem": True} if backbone.startswith("resnet") else {}
    model = SFTClassifier(
        backbone={"_target_": "sft.models.backbones.create_backbone", "name": backbone, **options},
        num_classes=10,
        optimizer={"_target_": "torch.optim.SGD", "momentum": 0.9},
        lr_backbone=0.05,
        lr_head=0.05,
    )
    datamodule = CIFAR10DataModule(
        data_dir, batch_size=batch_size, eval_batch_size=256, val_size=1024
    )
    return model, datamodule


def raw_loop(model: SFTClassifier, datamodule: CIFAR10DataModule, steps: int) -> float:
    """The loop a user would write by hand: train `steps` batches, then one validation pass,
    with the same work as SFTClassifier's steps (loss, accuracy/F1 metric updates)."""
    datamodule.setup("fit")
    optimizer = model.configure_optimizers()["optimizer"]
    start = time.perf_counter()
    model.train()
    for step, batch in enumerate(datamodule.train_dataloader()):
        if step == steps:
            break
        x, y = datamodule.transform_batch(batch, train=True)
        logits = model(x)
        loss = model.criterion(logits, y)
        model.train_metrics.update(logits, y)  # the same metric work as training_step
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.train_metrics.compute()
    model.eval()
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            x, y = datamodule.transform_batch(batch, train=False)
            model.val_metrics.update(model(x), y)
    model.val_metrics.compute()
    return time.perf_counter() - start


def lightning_loop(model: SFTClassifier, datamodule: CIFAR10DataModule, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            limit_train_batches=steps,
            num_sanity_val_steps=0,
            logger=TensorBoardLogger(out, name=None, version=""),
            callbacks=[
                ModelCheckpoint(
                    dirpath=Path(out) / "ckpt", monitor="val/acc", mode="max", save_last=True
                ),
                EarlyStopping(monitor="val/acc", mode="max", patience=5),
                LearningRateMonitor(logging_interval="step"),
                RichProgressBar(),
            ],
            log_every_n_steps=20,
            enable_model_summary=False,
        )
        datamodule.setup("fit")  # load data outside the timed region, as the raw loop does
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data-dir", default=os.environ.get("SFT_DATA_DIR", str(PROJECT_ROOT / "data"))
    )
    args = parser.parse_args()

    times: dict[str, list[float]] = {"raw": [], "lightning": []}
    for _ in range(args.repeats):
        for name, loop in (("raw", raw_loop), ("lightning", lightning_loop)):
            model, datamodule = build(args.backbone, args.data_dir, args.batch_size)
            times[name].append(loop(model, datamodule, args.steps))
    raw, lit = statistics.median(times["raw"]), statistics.median(times["lightning"])
    print(
        f"backbone={args.backbone} steps={args.steps} batch={args.batch_size} threads={torch.get_num_threads()}"
    )
    print(f"raw PyTorch loop : {raw:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times['raw'])})")
    print(
        f"Lightning loop   : {lit:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times['lightning'])})"
    )
    print(f"overhead         : {100 * (lit / raw - 1):+.1f}%  (goal <= 3%)")


if __name__ == "__main__":
    main()
