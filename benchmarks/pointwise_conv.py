"""torch's 1x1 convolutions vs sft's routed ones on CPU, per layer of an image backbone.

sft's (sft/models/pointwise_conv.py) use oneDNN's convolution or matrix products, timed once per
shape for the backward.

    .venv/bin/python benchmarks/pointwise_conv.py [--backbone efficientnet_lite0] [--size 64]
        [--batch 64] [--bf16] [--repeats 5]

Per 1x1 convolution the backbone runs at `--size` px (channels_last, batch `--batch`, with a
bias, as a folded batch norm gives it): forward + backward of torch's module against the same
module routed by `route_pointwise_convs`, the median of `--repeats` blocks of 20 calls; with
`--bf16` under CPU bf16 autocast; with sft-train's malloc setting. Then which way each routed
part took. The ReLU6 that folded norms apply inside some of these convolutions is left out
here. The whole training step, with it, with and without the routing:
`benchmarks/setting_on_off.py --setting model.fast_pointwise`.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from datetime import datetime, timezone
from functools import partial

import torch
from depthwise_conv import conv_layers, torch_and_routed
from timing import median_seconds
from torch import nn

from sft.models import timed_ways
from sft.models.backbones import create_backbone
from sft.models.pointwise_conv import is_pointwise, route_pointwise_convs
from sft.utils.allocator import keep_freed_memory
from sft.utils.hardware import cpu_description


def forward_backward(conv: nn.Module, x: torch.Tensor, grad: torch.Tensor, bf16: bool) -> None:
    with torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext():
        y = conv(x)
    # autograd.grad: nothing accumulates between calls
    torch.autograd.grad(y, [x, *conv.parameters()], grad.to(y.dtype))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats: at least 1, got {args.repeats}")
    keep_freed_memory()  # as sft-train runs
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_description()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.python_version()}"
    )
    model = create_backbone(args.backbone, pretrained=True, input_size=args.size)
    model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    precision = "bf16 autocast" if args.bf16 else "fp32"
    print(f"\n{args.backbone} 1x1 convolutions, {args.size} px, batch {args.batch}, {precision}:\n")
    print("| input | output channels | torch ms | routed ms | speed-up | routed backward |")
    print("| --- | --- | --- | --- | --- | --- |")
    total = [0.0, 0.0]
    for conv, shape in conv_layers(model, x, is_pointwise):
        conv, routed = torch_and_routed(conv, route_pointwise_convs)
        inputs = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
        grad = torch.randn(shape[0], conv.out_channels, *shape[2:])
        grad = grad.contiguous(memory_format=torch.channels_last)
        timed_ways.FASTEST.clear()
        times = [
            median_seconds(partial(forward_backward, c, inputs, grad, args.bf16), 20, args.repeats)
            for c in (conv, routed)
        ]
        ways = ", ".join(timed_ways.FASTEST.values()) or "torch's (not timed)"
        total = [t + s for t, s in zip(total, times, strict=True)]
        print(
            f"| {shape[1]} x {shape[2]} x {shape[3]} | {conv.out_channels} | "
            f"{times[0] * 1e3:.2f} | {times[1] * 1e3:.2f} | {times[0] / times[1]:.2f}x | {ways} |",
            flush=True,
        )
    print(
        f"| all | | {total[0] * 1e3:.1f} | {total[1] * 1e3:.1f} | "
        f"**{total[0] / total[1]:.2f}x** | |"
    )


if __name__ == "__main__":
    main()
