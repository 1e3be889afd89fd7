"""Training-step throughput of each backbone at fp32 / bf16-mixed x NCHW / channels_last.

    .venv/bin/python benchmarks/precision_layout.py [--size 64] [--batch-size 64] [--steps 8]

Decides the hardware defaults that sft applies (`trainer.precision=auto`, `model.channels_last`):
the backbone registry records, per family, whether CPU bf16 autocast and channels_last pay.
One forward + backward + fused AdamW step on random inputs, `--steps` timed after 2 warm-up steps,
with the backbone's depthwise convolutions routed as `SFTClassifier` routes them (each part in
bf16 or fp32 under autocast, whichever was timed faster, sft.models.depthwise_conv) and
sft-train's malloc setting.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from sft.models.backbones import create_backbone
from sft.models.depthwise_conv import route_depthwise_convs
from sft.utils.allocator import keep_freed_memory
from sft.utils.hardware import cpu_description

IMAGE_BACKBONES = {
    "efficientnet_lite0": {"pretrained": False},
    "mobilenetv2": {"pretrained": False},
    "resnet18": {"pretrained": False},
}


def train_step_rate(
    model: torch.nn.Module, bf16: bool, channels_last: bool, args: argparse.Namespace
) -> float:
    """Images/s of `model` + a linear head: forward + backward + fused AdamW on random inputs,
    `args.steps` timed after 2 warm-up steps."""
    head = torch.nn.Linear(model.num_features, 10)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], fused=True)
    x = torch.randn(args.batch_size, 3, args.size, args.size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(head(model(x)).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def images_per_second(
    name: str, bf16: bool, channels_last: bool, args: argparse.Namespace
) -> float:
    torch.manual_seed(0)
    model = create_backbone(name, **IMAGE_BACKBONES[name]).train()
    route_depthwise_convs(model)
    return train_step_rate(model, bf16, channels_last, args)


def step_args(description: str) -> argparse.Namespace:
    """--size, --batch-size, --steps of the timed step, parsed; the machine printed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    print(f"{cpu_description()}, torch {torch.__version__}, {platform.python_version()}")
    return args


def main() -> None:
    args = step_args(__doc__.splitlines()[0])
    keep_freed_memory()  # as sft-train runs
    print(f"input {args.size}px, batch {args.batch_size}, train step img/s\n")
    print("| backbone | fp32 | fp32 channels_last | bf16 | bf16 channels_last |")
    print("| --- | --- | --- | --- | --- |")
    for name in IMAGE_BACKBONES:
        cells = [
            images_per_second(name, bf16, cl, args)
            for bf16, cl in ((False, False), (False, True), (True, False), (True, True))
        ]
        print(f"| {name} | " + " | ".join(f"{c:.0f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
