"""Tiny trained checkpoints for the predict/export tests, built once per test session."""

import functools
from pathlib import Path

from conftest import FAST, TINY_BERT, compose_config

from sft.jobs.train import train

# one short epoch, no test pass: a checkpoint is all these tests need
SHORT = ["trainer.max_epochs=1", "test=false", "trainer.enable_progress_bar=false"]


# LoRA adapters in the backbone, at a learning rate that moves them in a few steps (so merging
# them into the exported weights matters)
LORA = ["adapter=lora", "adapter.r=4", "model.lr_adapter=0.01"]


@functools.cache
def image_checkpoint(root: Path, lora: bool = False) -> Path:
    """small_cnn (width 8) with a fused linear branch (so folding the head matters), trained one
    epoch on a 20-per-class CIFAR-10 slice; with `lora`, LoRA adapters in its convolutions."""
    run = root / ("image_lora_run" if lora else "image_run")
    overrides = [*FAST, *SHORT, "data.val_size=64", "model.head.branch=linear"]
    overrides += LORA if lora else []
    train(compose_config("train", overrides, run))
    return run / "checkpoints" / "last.ckpt"


@functools.cache
def text_checkpoint(root: Path, lora: bool = False) -> Path:
    """A 2-layer BERT (packaged MiniLM config + tokenizer, random init) with the fused LP-FT
    head, trained 4 steps on SST-2 sentences; with `lora`, LoRA adapters in its Linear layers."""
    run = root / ("text_lora_run" if lora else "text_run")
    overrides = [
        "experiment=sst2_minilm",
        *SHORT,
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.val_check_interval=1.0",
        "+trainer.limit_val_batches=1",
        "model.backbone.pretrained=false",
        f"model.backbone.config_overrides={TINY_BERT}",
        "data.samples_per_class=16",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        *(LORA if lora else []),
    ]
    train(compose_config("train", overrides, run))
    return run / "checkpoints" / "last.ckpt"
