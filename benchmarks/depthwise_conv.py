"""torch's depthwise convolutions and activations vs sft's on CPU: per layer and per step.

sft's routed depthwise convolutions (their weight gradients from 3x3 blocks, position pairs or a
convolution, input gradients transposed, each timed per shape) and out-of-place activations: per
layer, and in a whole EfficientNet-Lite0 / MobileNetV2 step.

    .venv/bin/python benchmarks/depthwise_conv.py [--size 64] [--batch 64] [--steps 10] [--repeats 3]

Per layer: forward + backward of each depthwise convolution of EfficientNet-Lite0 at `--size` px
(channels_last, batch `--batch`, with its bias: folded batch norms give one), torch's against the
same module routed by `route_depthwise_convs` (timm's Conv2dSame routed also pads with
sft.models.padding); the median of `--repeats` blocks of 20 calls.
Step: the packaged-weight backbone + a linear head as sft trains it (channels_last, batch norms
folded with frozen statistics, fused AdamW, sft-train's malloc setting), forward + backward +
optimizer step on random images; seven copies, each adding one change: torch's layers with
timm's TF "SAME" padding (F.pad), sft's padding, routed depthwise convolutions, out-of-place
activations, bf16 autocast with the depthwise convolutions in fp32 (without the per-shape
timing), then with each of their parts timed in bf16 and fp32, first with the ways of before
the position pairs, the weight gradient as a convolution and the transposed input gradient,
then with all (sft's default); timed
alternately in blocks of `--steps` steps, each round starting at another arm: the median ms per
step. Then the way each depthwise part took in the last arm.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from unittest import mock

import torch
from timing import median_seconds
from torch import nn

from sft.models import depthwise_conv, padding, timed_ways
from sft.models.activations import out_of_place_activations
from sft.models.backbones import create_backbone
from sft.models.depthwise_conv import route_depthwise_convs
from sft.models.norm_folding import fold_frozen_norms, freeze_norm_statistics
from sft.utils.allocator import keep_freed_memory
from sft.utils.hardware import cpu_description


def images(args: argparse.Namespace) -> torch.Tensor:
    shape = (args.batch, 3, args.size, args.size)
    return torch.randn(shape).contiguous(memory_format=torch.channels_last)


def conv_layers(
    model: nn.Module, x: torch.Tensor, chosen: Callable[[nn.Module], bool]
) -> list[tuple[nn.Conv2d, torch.Size]]:
    """(module, input shape) of each convolution that `chosen` picks, as `model` runs them on `x`."""
    seen: list[tuple[nn.Conv2d, torch.Size]] = []
    hooks = [
        m.register_forward_hook(lambda m, inputs, _: seen.append((m, inputs[0].shape)))
        for m in model.modules()
        if chosen(m)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels > 1
    )


def torch_and_routed(
    conv: nn.Conv2d, route: Callable[[nn.Module], int]
) -> tuple[nn.Conv2d, nn.Conv2d]:
    """A copy of `conv` with a bias (a folded batch norm gives it one), and that copy routed by
    `route`."""
    conv = copy.deepcopy(conv)
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels))
    routed = copy.deepcopy(conv)
    route(routed)
    return conv, routed


def forward_backward(conv: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    # autograd.grad: nothing accumulates between calls
    torch.autograd.grad(conv(x), [x, *conv.parameters()], grad)


def per_layer(args: argparse.Namespace) -> None:
    model = create_backbone("efficientnet_lite0", pretrained=True, input_size=args.size)
    model.to(memory_format=torch.channels_last)
    print(f"EfficientNet-Lite0 depthwise convolutions, {args.size} px, batch {args.batch}:\n")
    print("| layer | input | filter, stride | torch ms | routed ms | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    total = [0.0, 0.0]
    for conv, shape in conv_layers(model, images(args), is_depthwise):
        conv, routed = torch_and_routed(conv, route_depthwise_convs)
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
        grad = torch.randn_like(conv(x))
        times = [
            median_seconds(partial(forward_backward, c, x, grad), 20, args.repeats)
            for c in (conv, routed)
        ]
        total = [t + s for t, s in zip(total, times, strict=True)]
        print(
            f"| {type(conv).__name__} | {shape[1]} x {shape[2]} x {shape[3]} | "
            f"{conv.kernel_size[0]}x{conv.kernel_size[1]}, {conv.stride[0]} | "
            f"{times[0] * 1e3:.2f} | {times[1] * 1e3:.2f} | {times[0] / times[1]:.2f}x |",
            flush=True,
        )
    print(
        f"| all | | | {total[0] * 1e3:.1f} | {total[1] * 1e3:.1f} | "
        f"**{total[0] / total[1]:.2f}x** |"
    )


ARMS = (
    "torch's layers and timm's padding",
    "sft's padding (sft.models.padding)",
    "+ routed depthwise",
    "+ out-of-place activations",
    "+ bf16 autocast, depthwise in fp32 (untimed: model.fast_depthwise=false's)",
    "+ bf16 autocast, each depthwise part timed in bf16 and fp32, weight gradients by torch or "
    "3x3 blocks, input gradients by torch (before the position pairs, the weight gradient as a "
    "convolution and the transposed input gradient)",
    "+ bf16 autocast, each depthwise part timed in bf16 and fp32, every way (sft's default)",
)
UNTIMED_BF16 = 4
BLOCKS_ONLY = 5
BLOCKS_ONLY_CHOICES: dict = {}  # that arm's timed choices, apart from the default's


def blocks_only(arm: int) -> contextlib.AbstractContextManager:
    """Arm BLOCKS_ONLY's depthwise ways: weight gradients by torch or 3x3 blocks only, input
    gradients by torch only."""
    stack = contextlib.ExitStack()
    if arm == BLOCKS_ONLY:
        input_grad = depthwise_conv._Backward.input_grad
        for target, name, value in (
            (timed_ways, "FASTEST", BLOCKS_ONLY_CHOICES),
            (depthwise_conv, "_has_pairs", lambda *args: False),
            (depthwise_conv, "_has_convolution", lambda *args: False),
            (depthwise_conv._Backward, "input_grad", lambda call, _: input_grad(call, False)),
        ):
            stack.enter_context(mock.patch.object(target, name, value))
    return stack


def timm_padding(arm: int) -> contextlib.AbstractContextManager:
    """Arm 0's folded TF "SAME" convolutions pad with timm's F.pad, as before sft.models.padding
    (sft's folding looks `pad_same` up per call)."""
    if arm:
        return contextlib.nullcontext()
    from timm.layers.padding import pad_same

    return mock.patch.object(padding, "pad_same", pad_same)


def per_step(args: argparse.Namespace, name: str) -> None:
    torch.manual_seed(0)
    x = images(args)
    labels = torch.randint(0, 10, (args.batch,))
    backbone = create_backbone(name, pretrained=True, input_size=args.size)
    backbone.to(memory_format=torch.channels_last)
    fold_frozen_norms(backbone, x[:2])

    def stepper(arm: int) -> Callable[[], None]:
        model = nn.Sequential()
        model.backbone = copy.deepcopy(backbone)
        if arm >= 2:
            route_depthwise_convs(model.backbone, timed=arm != UNTIMED_BF16)
        if arm >= 3:
            out_of_place_activations(model.backbone, x[:2])
        model.train()
        freeze_norm_statistics(model.backbone)
        model.head = nn.Linear(model.backbone.num_features, 10)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step() -> None:
            bf16 = arm >= UNTIMED_BF16
            with blocks_only(arm):
                with timm_padding(arm), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    loss = nn.functional.cross_entropy(
                        model.head(model.backbone(x)).float(), labels
                    )
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    timed_ways.FASTEST.clear()  # this model's choices only, printed below
    BLOCKS_ONLY_CHOICES.clear()
    steps = [stepper(arm) for arm in range(len(ARMS))]
    times: list[list[float]] = [[] for _ in ARMS]
    for block in range(args.repeats):
        # each round in another order: no arm always runs first or after the same one
        for arm in [*range(block % len(ARMS), len(ARMS)), *range(block % len(ARMS))]:
            times[arm].append(median_seconds(steps[arm], args.steps, 1))
    medians = [statistics.median(t) for t in times]
    print(
        f"\n{name} training step, {args.size} px, batch {args.batch}, channels_last, "
        f"median of {args.repeats} blocks of {args.steps} steps:\n"
    )
    print("| layers | ms per step | blocks (ms) | speed-up |")
    print("| --- | --- | --- | --- |")
    for arm, label in enumerate(ARMS):
        blocks = ", ".join(f"{t * 1e3:.0f}" for t in times[arm])
        print(
            f"| {label} | {medians[arm] * 1e3:.1f} | {blocks} | "
            f"**{medians[0] / medians[arm]:.2f}x** |"
        )
    print_bf16_choices()


def print_bf16_choices() -> None:
    """The way each part of each depthwise convolution took under bf16 autocast (the last arm),
    as timed once per shape by sft.models.depthwise_conv."""
    layers: dict[tuple, dict[str, str]] = {}
    for (what, call), way in timed_ways.FASTEST.items():
        if what.startswith("depthwise ") and call.dtype == torch.bfloat16:
            what = what.removeprefix("depthwise ")
            layer = (call.input_shape[1:], call.weight_shape[-2:], call.stride[0])
            layers.setdefault(layer, {})[what] = way.replace("torch.", "")
    print("\nits depthwise convolutions under bf16 autocast, the fastest way of each part:\n")
    print("| input | filter, stride | forward | input grad | weight grad |")
    print("| --- | --- | --- | --- | --- |")
    for (shape, kernel, stride), ways in layers.items():
        parts = " | ".join(ways.get(what, "-") for what in ("forward", "input grad", "weight grad"))
        print(f"| {' x '.join(map(str, shape))} | {kernel[0]}x{kernel[1]}, {stride} | {parts} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # as sft-train runs
    print(f"{cpu_description()}, torch {torch.__version__}, {platform.python_version()}")
    print(f"started {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    per_layer(args)
    for name in ("efficientnet_lite0", "mobilenetv2"):
        per_step(args, name)


if __name__ == "__main__":
    main()
