"""Training samples/s on SST-2 with MiniLM: fixed 128-token padding vs dynamic vs length-grouped.

    .venv/bin/python benchmarks/text_pipelines.py [--steps 40] [--warmup 3] [--batch-size 32]
        [--threads N] [--accuracy-steps N] [--pipelines abc] [--data-dir data]

Three training pipelines, all built from `TextClassificationDataModule` over SST-2 train
(`<data-dir>/sst2/train.tsv`, tokenised with `max_length=128`), so that only batching differs:
(a) run_glue: random batches, every batch padded to 128 tokens, as HF's
    `run_glue.py --pad_to_max_length --max_seq_length 128` (its default) does. The datamodule
    has no fixed-length padding option, so `pad_to_length` pads the collated batch here (inside
    the timed loop; a negligible cost next to the model).
(b) dynamic padding, random batches (`group_by_length=false`).
(c) ours: dynamic padding + length-grouped batches (`group_by_length=true`, the default).
Each pipeline trains the same model (the packaged all-MiniLM-L6-v2, mean pooling, FusedHead with
a linear branch; the values of conf/model/minilm_fused.yaml, without the linear probe and the
L2-SP term) from the same initial weights and seed, with a plain PyTorch loop (forward, CE loss,
backward, AdamW step with the model's two learning rates and linear warmup/decay schedule):
`--warmup` untimed steps, then `--steps` steps timed with `time.perf_counter` (batch loading and
collation included). Goals: (c)/(a) >= 4, (c)/(b) >= 1.5.

`--accuracy-steps N` (default 0: skipped) also trains fresh models for N steps with (b) and (c)
and reports SST-2 dev accuracy, to show that length grouping does not cost accuracy.
Everything is printed at the end as a markdown table for experiments/benchmarks/text_pipelines.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import get_linear_schedule_with_warmup

from sft.data.length_grouped import padding_fraction
from sft.data.text import TextClassificationDataModule
from sft.models import SFTClassifier
from sft.utils.config import PROJECT_ROOT

MAX_LENGTH = 128
PIPELINES = {
    "a": ("(a) run_glue: pad to 128, random batches", False, MAX_LENGTH),
    "b": ("(b) dynamic padding, random batches", False, None),
    "c": ("(c) ours: dynamic padding, length-grouped", True, None),
}


def build_datamodule(
    data_dir: str, batch_size: int, group_by_length: bool, seed: int
) -> TextClassificationDataModule:
    """conf/data/sst2.yaml's values (no test split: only train and dev are used)."""
    dm = TextClassificationDataModule(
        data_dir=str(Path(data_dir) / "sst2"),
        source="tsv",
        train_split="train.tsv",
        val_split="dev.tsv",
        text_column="sentence",
        label_column="label",
        label_names=["negative", "positive"],
        quoting="none",
        tokenizer="minilm",
        max_length=MAX_LENGTH,
        cache_dir=str(PROJECT_ROOT / ".cache" / "tokens"),
        batch_size=batch_size,
        eval_batch_size=256,
        group_by_length=group_by_length,
        seed=seed,
    )
    dm.setup("fit")
    return dm


def build_model() -> SFTClassifier:
    """SFTClassifier with conf/model/minilm_fused.yaml's values; no linear probe, no L2-SP term
    (plain CE), no Lightning scheduler (the loop below makes the same schedule itself)."""
    cfg = OmegaConf.to_container(OmegaConf.load(PROJECT_ROOT / "conf/model/minilm_fused.yaml"))
    for key in ("_target_", "_recursive_"):
        cfg.pop(key)
    cfg.update(scheduler=None, linear_probe=None, regularizer="none", reg_lambda=0.0)
    return SFTClassifier(**cfg)


def pad_to_length(batch: dict[str, torch.Tensor], length: int, pad: dict[str, int]) -> dict:
    """Right-pad every (B, T) entry of a collated batch to (B, length), as run_glue's
    `tokenizer(..., padding="max_length", max_length=128, truncation=True)` does: input_ids
    with the pad token, attention_mask with 0, token_type_ids with the pad token type."""
    out = {}
    for key, value in batch.items():
        if value.dim() == 2:
            if value.shape[1] > length:
                raise ValueError(f"{key}: batch of {value.shape[1]} tokens > {length}")
            value = torch.nn.functional.pad(value, (0, length - value.shape[1]), value=pad[key])
        out[key] = value
    return out


def endless_batches(dm: TextClassificationDataModule, fixed: int | None, pad: dict) -> Iterator:
    """Training batches over as many epochs as needed (the sampler's epoch advances)."""
    loader = dm.train_dataloader()
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield batch if fixed is None else pad_to_length(batch, fixed, pad)
        epoch += 1


def epoch_padding(
    dm: TextClassificationDataModule, fixed: int | None, seed: int
) -> tuple[float, float]:
    """(padding fraction, padded length per sample) over one whole epoch of this pipeline's
    batches, from the lengths only: shows whether the few timed batches are typical."""
    torch.manual_seed(seed)
    lengths = dm.train_data.lengths
    if fixed is not None:
        return 1.0 - float(lengths.sum()) / (fixed * lengths.numel()), float(fixed)
    fraction = padding_fraction(lengths, list(dm.train_dataloader().batch_sampler))
    return fraction, float(lengths.sum()) / (1.0 - fraction) / lengths.numel()


def train(
    model: SFTClassifier,
    initial: dict[str, torch.Tensor],
    dm: TextClassificationDataModule,
    fixed: int | None,
    pad: dict,
    warmup: int,
    steps: int,
    seed: int,
) -> dict[str, float]:
    """Fresh weights, optimizer and seed; `warmup` untimed steps, then `steps` timed ones."""
    model.load_state_dict(initial)
    model.train()
    torch.manual_seed(seed)  # dropout, and the random batch order of (a)/(b)
    optimizer = model.configure_optimizers()["optimizer"]
    total = warmup + steps
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(model.hparams.warmup_ratio * total), total
    )
    batches = endless_batches(dm, fixed, pad)
    samples = real = positions = 0
    start = 0.0
    for step in range(total):
        if step == warmup:
            start = time.perf_counter()
        batch = next(batches)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        loss = model.criterion(model(inputs), batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step >= warmup:
            mask = batch["attention_mask"]
            samples += mask.shape[0]
            real += int(mask.sum())
            positions += mask.numel()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "samples/s": samples / seconds,
        "tokens/s": real / seconds,
        "positions/s": positions / seconds,
        "padding": 1.0 - real / positions if positions else 0.0,
        "padded_len": positions / samples if samples else 0.0,
        "s/step": seconds / steps if steps else 0.0,
    }


@torch.no_grad()
def dev_accuracy(model: SFTClassifier, dm: TextClassificationDataModule) -> float:
    model.eval()
    correct = total = 0
    for batch in dm.val_dataloader():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        correct += int((model(inputs).argmax(-1) == batch["labels"]).sum())
        total += batch["labels"].numel()
    model.train()
    return correct / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir", default=os.environ.get("SFT_DATA_DIR", str(PROJECT_ROOT / "data"))
    )
    ap.add_argument("--steps", type=int, default=40, help="timed optimizer steps per pipeline")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before the timing")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="data.seed and torch seed, all pipelines")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--accuracy-steps",
        type=int,
        default=0,
        help="also train (b) and (c) this many steps and report dev accuracy (0: skip)",
    )
    ap.add_argument(
        "--pipelines", default="abc", help="which pipelines to time, e.g. 'bc' (default: abc)"
    )
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.warmup < 0 or args.accuracy_steps < 0:
        ap.error("--steps must be >= 1, --warmup and --accuracy-steps >= 0")

    torch.manual_seed(args.seed)
    model = build_model()
    initial = copy.deepcopy(model.state_dict())
    dms = {
        grouped: build_datamodule(args.data_dir, args.batch_size, grouped, args.seed)
        for grouped in (False, True)
    }
    tok = dms[True].tokenizer
    pad = {"input_ids": tok.pad_token_id, "attention_mask": 0}
    pad["token_type_ids"] = tok.pad_token_type_id
    n_train = len(dms[True].train_data)

    results: dict[str, dict[str, Any]] = {}
    for key in args.pipelines:
        name, grouped, fixed = PIPELINES[key]
        dm = dms[grouped]
        r = train(model, initial, dm, fixed, pad, args.warmup, args.steps, args.seed)
        r["epoch_padding"], r["epoch_padded_len"] = epoch_padding(dm, fixed, args.seed)
        results[key] = r
        print(
            f"{name}: {r['samples/s']:.1f} samples/s, {r['s/step']:.3f} s/step, "
            f"padding {100 * r['padding']:.1f}% (epoch {100 * r['epoch_padding']:.1f}%)",
            flush=True,
        )

    accuracy: dict[str, tuple[float, float]] = {}
    for key in "bc" if args.accuracy_steps else "":
        name, grouped, fixed = PIPELINES[key]
        dm = dms[grouped]
        r = train(model, initial, dm, fixed, pad, 0, args.accuracy_steps, args.seed)
        accuracy[key] = (dev_accuracy(model, dm), r["seconds"])
        print(
            f"{name}: dev acc {100 * accuracy[key][0]:.2f}% after {args.accuracy_steps} "
            f"steps ({r['seconds']:.0f} s)",
            flush=True,
        )

    print()
    print(
        f"SST-2 train ({n_train} sentences, MiniLM tokenizer, max_length {MAX_LENGTH}), "
        f"all-MiniLM-L6-v2 + FusedHead, AdamW, batch {args.batch_size}, seed {args.seed}; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps per pipeline"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, load avg {os.getloadavg()[0]:.2f}"
    )
    print()
    acc_col = bool(accuracy)
    head = "| pipeline | samples/s | real tokens/s | positions/s | s/step | padded len (timed) "
    head += "| padded len (epoch) | padding (timed) | padding (epoch) |"
    if acc_col:
        head += f" dev acc ({args.accuracy_steps} steps) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for key, r in results.items():
        row = (
            f"| {PIPELINES[key][0]} | {r['samples/s']:.1f} | {r['tokens/s']:.0f} "
            f"| {r['positions/s']:.0f} | {r['s/step']:.3f} | {r['padded_len']:.1f} "
            f"| {r['epoch_padded_len']:.1f} | {100 * r['padding']:.1f}% "
            f"| {100 * r['epoch_padding']:.1f}% |"
        )
        if acc_col:
            row += f" {100 * accuracy[key][0]:.2f}% |" if key in accuracy else " - |"
        print(row)
    print()
    print(
        "padded len = positions per sample; (timed) = the timed batches, (epoch) = a whole "
        "epoch of the same pipeline's batches (from the lengths, not timed)"
    )
    if "c" in results:
        c = results["c"]["samples/s"]
        for key, goal in (("a", 4.0), ("b", 1.5)):
            if key in results:
                ratio = c / results[key]["samples/s"]
                verdict = "met" if ratio >= goal else "NOT met"
                print(f"(c)/({key}) samples/s: {ratio:.2f}x (goal >= {goal}: {verdict})")
    if accuracy.keys() == {"b", "c"}:
        diff = 100 * (accuracy["c"][0] - accuracy["b"][0])
        print(f"dev acc (c) - (b): {diff:+.2f} points after {args.accuracy_steps} steps")


if __name__ == "__main__":
    main()
