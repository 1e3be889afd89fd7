"""Training steps with frozen batch-norm statistics, folded into their convolutions or not.

    .venv/bin/python benchmarks/norm_folding.py [--size 64] [--batch-size 64] [--steps 8]

`model.freeze_norm_stats=true` (the EfficientNet-Lite0 and MobileNetV2 LP-FT configs) keeps
every batch norm in eval mode while the weights train; sft then runs each one folded into the
convolution before it (sft/models/norm_folding.py), with the norm's ReLU / ReLU6 in the same
oneDNN call where it is timm's norm + activation layer (sft/models/conv_activation.py). One
forward + backward + fused AdamW step of each image backbone on random inputs, in the layout and
precision sft picks for it on this CPU: unfolded, folded with the activation run apart, and
folded as sft runs it, alternating, 3 times each: the median images/s and the ratios.
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
from precision_layout import step_args, train_step_rate  # this folder's: the same timed step

from sft.models import conv_activation
from sft.models.backbones import backbone_speed_hints, create_backbone
from sft.models.norm_folding import fold_frozen_norms, freeze_norm_statistics
from sft.utils.hardware import choose_precision

BACKBONES = ("efficientnet_lite0", "mobilenetv2", "resnet18")


WAYS = ("unfolded", "folded, activation apart", "folded")


def images_per_second(name: str, way: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = create_backbone(name, pretrained=False)
    if way != "unfolded":
        fold_frozen_norms(model, torch.zeros(2, 3, args.size, args.size))
    freeze_norm_statistics(model.train())
    hints = backbone_speed_hints({"name": name})
    bf16 = choose_precision("cpu", hints.cpu_bf16)[0] == "bf16-mixed"
    # without oneDNN's fused op the folded convolutions run their activation apart
    fused_op = None if way == "folded, activation apart" else conv_activation._CONV_POINTWISE
    with mock.patch.object(conv_activation, "_CONV_POINTWISE", fused_op):
        return train_step_rate(model, bf16, hints.channels_last, args)


def main() -> None:
    args = step_args(__doc__.splitlines()[0])
    print(f"input {args.size}px, batch {args.batch_size}, train step img/s, median of 3\n")
    print(
        "| backbone (sft's layout and precision) | norms unfolded | folded, activation apart | "
        "folded (sft) | folded / unfolded | activation in the conv / apart |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in BACKBONES:
        rates: dict[str, list[float]] = {way: [] for way in WAYS}
        for _ in range(3):
            for way in WAYS:
                rates[way].append(images_per_second(name, way, args))
        plain, apart, folded = (sorted(rates[way])[1] for way in WAYS)
        print(
            f"| {name} | {plain:.0f} | {apart:.0f} | {folded:.0f} | **{folded / plain:.2f}x** | "
            f"**{folded / apart:.2f}x** |",
            flush=True,
        )


if __name__ == "__main__":
    main()
