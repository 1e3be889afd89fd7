"""Full fine-tuning vs LoRA vs linear probe: step time, peak memory, trainable parameters.

    .venv/bin/python benchmarks/adapters.py [--steps 20] [--warmup 3] [--r 8]

Each arm is one `SFTClassifier` built as its `method=` / `adapter=` configs build it (the
packaged MiniLM with the fused head on SST-2 sentences, batch 32; the packaged EfficientNet-Lite0
on CIFAR-10 at 64 px, batch 64), trained with its own `configure_optimizers` (fused AdamW) in
the precision `trainer.precision=auto` picks on this machine. Each arm runs in its own process, so
its peak memory is its own: the process's peak RSS on CPU (model, optimizer state, activations,
plus the interpreter and libraries every arm shares), `torch.cuda.max_memory_allocated` on a GPU.
Printed: median step time over `--steps` after `--warmup`, samples/s, peak memory, trainable
parameters, and each as a ratio to full fine-tuning measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    # name: (freeze_backbone, adapter, linear_probe head), as conf/method/ sets them
    "full fine-tuning": {"freeze_backbone": False, "adapter": None},
    "LoRA r={r}": {"freeze_backbone": False, "adapter": "lora"},
    "linear probe": {"freeze_backbone": True, "adapter": None},
}
TASKS = ("minilm_sst2", "effnet_cifar10")


def build(task: str, arm: dict, r: int) -> tuple[torch.nn.Module, object, str]:
    """(model, batch, precision) for one task and arm."""
    from sft.models import SFTClassifier
    from sft.models.backbones import backbone_speed_hints
    from sft.utils.hardware import choose_precision

    adapter = (
        {"_target_": "sft.models.adapters.LoraSettings", "r": r, "alpha": 2 * r}
        if arm["adapter"]
        else None
    )
    if task == "minilm_sst2":
        backbone = {
            "_target_": "sft.models.backbones.create_backbone",
            "name": "huggingface",
            "model_name_or_path": "minilm",
            "pretrained": True,
        }
        batch = text_batch(32)
        lr = {"lr_backbone": 1e-4, "lr_head": 1e-3}
    else:
        backbone = {
            "_target_": "sft.models.backbones.create_backbone",
            "name": "efficientnet_lite0",
            "pretrained": True,
        }
        batch = image_batch(64, 64)
        lr = {"lr_backbone": 1e-4, "lr_head": 1e-3}
    model = SFTClassifier(
        backbone=backbone,
        num_classes=2 if task == "minilm_sst2" else 10,
        head={"_target_": "sft.models.heads.FusedHead", "branch": "linear"},
        freeze_backbone=arm["freeze_backbone"],
        adapter=adapter,
        regularizer="none",
        **lr,
    )
    precision, _ = choose_precision("cpu", backbone_speed_hints(backbone).cpu_bf16)
    return model, batch, precision


def text_batch(n: int) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    from sft.hub import resolve_model_name

    lines = (data_root() / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    sentences = [line.split("\t")[0] for line in lines]
    labels = [int(line.split("\t")[1]) for line in lines]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor(labels)
    return batch


def image_batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sft.data.cifar10 import FOLDER, load_batch

    images, labels = load_batch(data_root() / FOLDER / "test_batch")
    x = torch.nn.functional.interpolate(images[:n].float() / 255, size=size, mode="bilinear")
    return ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last), labels[:n]


def data_root() -> Path:
    import os

    return Path(os.environ.get("SFT_DATA_DIR", ROOT / "data"))


def run_arm(task: str, arm_name: str, args: argparse.Namespace) -> dict:
    """In this process: time the training steps of one arm; print a JSON line."""
    torch.manual_seed(0)
    model, batch, precision = build(task, ARMS[arm_name], args.r)
    model.trainer = None  # configure_optimizers without a scheduler's step estimate
    model.hparams.scheduler = None
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    batch = (
        {k: v.to(device) for k, v in batch.items()}
        if isinstance(batch, dict)
        else tuple(t.to(device) for t in batch)
    )
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    )
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        with autocast:
            loss = model.training_step(batch, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    trainable, total = model.parameter_counts()
    size = len(batch["labels"]) if isinstance(batch, dict) else len(batch[1])
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "step_s": statistics.median(times),
        "samples_s": size / statistics.median(times),
        "peak_bytes": peak,
        "trainable": trainable,
        "total": total,
        "precision": precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:  # a child: one arm
        print(json.dumps(run_arm(args.task, args.arm, args)))
        return

    from sft.utils.hardware import cpu_description

    memory = "peak CUDA memory" if torch.cuda.is_available() else "peak RSS"
    print(f"machine: {cpu_description()}, torch {torch.__version__}, {platform.python_version()}")
    for task in TASKS:
        rows = {}
        for arm in ARMS:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--task",
                    task,
                    "--arm",
                    arm,
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                    "--r",
                    str(args.r),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"error: {task} / {arm}: {child.stderr[-2000:]}")
            rows[arm.format(r=args.r)] = json.loads(child.stdout.strip().splitlines()[-1])
        full = rows["full fine-tuning"]
        print(f"\n{task} ({full['precision']}, {args.steps} steps after {args.warmup} warm-up)")
        print(
            f"| arm | step (s) | samples/s | {memory} (MiB) | trainable params | "
            "step vs full | memory vs full | trainable vs full |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for arm, row in rows.items():
            print(
                f"| {arm} | {row['step_s']:.3f} | {row['samples_s']:.1f} | "
                f"{row['peak_bytes'] / 2**20:,.0f} | {row['trainable']:,} "
                f"({100 * row['trainable'] / row['total']:.2f} %) | "
                f"{row['step_s'] / full['step_s']:.2f}x | "
                f"{row['peak_bytes'] / full['peak_bytes']:.2f}x | "
                f"{row['trainable'] / full['trainable']:.4f}x |"
            )


if __name__ == "__main__":
    main()
