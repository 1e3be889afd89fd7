"""Training steps with frozen batch-norm statistics, folded into their convolutions or not.

    .venv/bin/python benchmarks/norm_folding.py [--size 64] [--batch-size 64] [--steps 8]

`model.freeze_norm_stats=true` (the EfficientNet-Lite0 and MobileNetV2 LP-FT configs) keeps
every batch norm in eval mode while the weights train; sft then runs each one folded into the
convolution before it (sft/models/norm_folding.py). One forward + backward + fused AdamW step of
each image backbone on random inputs, in the layout and precision sft picks for it on this CPU,
both ways, alternating, 3 times each: the median images/s and the ratio.
"""

from __future__ import annotations

import argparse

import torch
from precision_layout import step_args, train_step_rate  # this folder's: the same timed step

from sft.models.backbones import backbone_speed_hints, create_backbone
from sft.models.norm_folding import fold_frozen_norms, freeze_norm_statistics
from sft.utils.hardware import choose_precision

BACKBONES = ("efficientnet_lite0", "mobilenetv2", "resnet18")


def images_per_second(name: str, folded: bool, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = create_backbone(name, pretrained=False)
    if folded:
        fold_frozen_norms(model, torch.zeros(2, 3, args.size, args.size))
    freeze_norm_statistics(model.train())
    hints = backbone_speed_hints({"name": name})
    bf16 = choose_precision("cpu", hints.cpu_bf16)[0] == "bf16-mixed"
    return train_step_rate(model, bf16, hints.channels_last, args)


def main() -> None:
    args = step_args(__doc__.splitlines()[0])
    print(f"input {args.size}px, batch {args.batch_size}, train step img/s, median of 3\n")
    print("| backbone (sft's layout and precision) | norms unfolded | folded | folded / unfolded |")
    print("| --- | --- | --- | --- |")
    for name in BACKBONES:
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(3):
            for folded in (False, True):
                rates[folded].append(images_per_second(name, folded, args))
        plain, folded = (sorted(rates[f])[1] for f in (False, True))
        print(f"| {name} | {plain:.0f} | {folded:.0f} | **{folded / plain:.2f}x** |", flush=True)


if __name__ == "__main__":
    main()
