"""sft's training step with one of its speed settings on and off, side by side.

    .venv/bin/python benchmarks/setting_on_off.py [--setting keep_freed_memory] [--steps 60]
        [--warmup 10] [--repeats 4] [--parts text,images]

`--setting` is an sft-train key that takes true or false: `keep_freed_memory` (glibc malloc
keeps what a step frees for the next, sft/utils/allocator.py), `model.fast_pointwise`
(sft/models/pointwise_conv.py), `model.fast_depthwise`, `model.fast_dropout`. This times the two
values as benchmarks/vs_anchors.py times sft (its text and EfficientNet-Lite0 arms, fresh
processes, no probe or validation), each `--repeats` times in turns, and prints every run's
samples/s, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from vs_anchors import image_overrides, in_turns, sft_arm, sst2_subset, text_overrides

from sft.utils.hardware import cpu_description

LABELS = {"text": "SST-2 MiniLM, batch 32", "images": "CIFAR-10 64px EfficientNet-Lite0, batch 64"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="keep_freed_memory")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--parts", default="text,images", help="of text, images")
    parser.add_argument("--data-dir", default=os.environ.get("SFT_DATA_DIR", "data"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats: at least 1, got {args.repeats}")
    if unknown := set(args.parts.split(",")) - {"text", "images"}:
        parser.error(f"--parts: {', '.join(sorted(unknown))} not of text, images")
    print(
        f"machine: {cpu_description()}; {args.setting} true and false, {args.repeats} runs per "
        "arm in turns",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")
        tasks = {}
        if "text" in parts:
            folder = sst2_subset(Path(args.data_dir), 32 * (args.warmup + args.steps), work)
            tasks["text"] = (text_overrides(folder), 32)
        if "images" in parts:
            tasks["images"] = (image_overrides("cifar10_effnet_lite0_quick"), 64)
        for task, (overrides, batch) in tasks.items():
            runs = in_turns(
                {
                    value: sft_arm(
                        [*overrides, f"{args.setting}={value}"], work, f"{task}_{value}", args
                    )
                    for value in ("true", "false")
                },
                args.repeats,
            )
            medians = {}
            for value, run in runs.items():
                medians[value] = batch * run["steps"] / run["seconds"]
                rates = ", ".join(f"{batch * rate:.1f}" for rate in run["rates"])
                print(
                    f"{LABELS[task]} (precision auto), {args.setting}={value}: {rates} "
                    f"samples/s, median {medians[value]:.1f}",
                    flush=True,
                )
            print(
                f"{LABELS[task]}: {args.setting} true / false = "
                f"{medians['true'] / medians['false']:.3f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
