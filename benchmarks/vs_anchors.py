"""sft against the tools a user would pick instead, on the same machine, in one run: ratios.

    .venv/bin/python benchmarks/vs_anchors.py [--steps 60] [--warmup 10] [--repeats 1]
        [--parts text,images,regularizer,image_regularizer]
        [--image-experiments cifar10_effnet_lite0_quick,cifar10_resnet18]

Text: SST-2 training phrases, the packaged all-MiniLM-L6-v2, batch 32, length-grouped batches
with dynamic padding, max_length 64.
  - sft: `sft-train experiment=sst2_minilm` as shipped (fused LP-FT head, L2-SP, fused AdamW,
    linear schedule, default callbacks: checkpoints, exact-resume state, TensorBoard logger),
    without the linear probe and validation so that only training steps are timed; and
    once more without its L2-SP term (`model.regularizer=none`), HF's objective, and once
    with torch's own dropout instead of sft's FastDropout (`model.fast_dropout=false`).
  Both also compiled: `model.compile=true` against `torch_compile=True`.
  - anchor: `transformers.Trainer` at its best settings on the same rows:
    `AutoModelForSequenceClassification` on the same weights, `train_sampling_strategy=
    "group_by_length"`, `DataCollatorWithPadding`, its default fused AdamW, no reporting, no
    saving, no evaluation.
  Both at fp32, and both at bf16 autocast (`trainer.precision=bf16-mixed` / `bf16=True`) where
  the CPU has bf16 units (elsewhere bf16 is emulated, and sft's auto precision picks fp32).
  HF also runs once more with the malloc setting `sft-train` makes for its process
  (`keep_freed_memory`, sft/utils/allocator.py), so that sft's lead from it can be told apart.
Images: CIFAR-10 training images through sft's in-memory uint8 pipeline with on-device batch
augmentation, vs a plain PyTorch loop over torchvision's per-sample PIL pipeline
(`RandomCrop(32, 4)`, `RandomHorizontalFlip`, `Resize`, `ToTensor`, `Normalize`; DataLoader with 2
workers), the same backbone and head, the same optimizer. The plain loop runs twice: as
torchvision's reference scripts run it (fp32, NCHW), and tuned with sft's hardware defaults
(channels_last, the precision sft picks, with depthwise convolutions in fp32 under bf16 autocast
as sft computes them without its per-shape timing, through torch's and timm's own layers,
sft-train's malloc setting), so
that the ratio's sources can be told apart. sft also runs with `model.compile=true` (its
compilation falls in the warm-up steps, whose time is printed).
  - EfficientNet-Lite0 at 64 px (`experiment=cifar10_effnet_lite0_quick`), batch 64.
  - ResNet-18 with the CIFAR stem at 32 px (`experiment=cifar10_resnet18`), batch 128.
Regularizer: sft's MiniLM step with L2-SP, decoupled L2-SP (every step and every 4th,
`model.reg_every=4`) and L2 (lambda 1e-5) against none, and each update timed alone (per
optimizer step) against the step without one. Image regularizer (`image_regularizer`, not run
by default): the same for sft's EfficientNet-Lite0 step of the image part, L2-SP through its
gradient and as the decoupled pull every 4th step (its default) against none.

Every timed run starts in a fresh process, as each tool runs from its own command line.
`--warmup` steps are run untimed, then `--steps` steps are timed from the start of the first
timed step to the end of the last (each tool's own step hooks). With `--repeats N` every text
and image arm runs N times, the arms in turns, and each row gives the arms' median runs (every
run's rate is printed after the rows): on a shared VM one arm's runs vary by up to ~15 %.
Achieved FLOP/s: 3x the forward FLOPs per sample (backward ~ 2x forward; torch's
FlopCounterMode counts the forward, on a batch of the mean timed length for text; its count of
convolution_backward is wrong for depthwise convolutions, hence 3x forward), times samples/s.
Peak: cores x clock (/proc/cpuinfo) x FLOPs per cycle per core: for fp32 64 on Intel Xeons and AMD Zen 5 (two AVX-512 FMA units, 16 lanes, 2
FLOPs) and 32 on AMD Zen 4 (AVX-512 on two 256-bit units) and other AVX2 CPUs; for bf16 1024 on AMX (Intel's
figure for AMX-BF16 TMUL), twice the fp32 figure with AVX512-BF16 dot products alone (AMD's
figure for Zen 4); a nominal figure, not a measured one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import platform
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from sft.data.cifar10 import FOLDER, TRAIN_FILES, load_batch
from sft.jobs.train import train
from sft.models.backbones import resolve_input_spec
from sft.utils.allocator import keep_freed_memory
from sft.utils.config import CONF_DIR, register_resolvers
from sft.utils.hardware import cpu_description, cpu_flags, cpu_has_bf16

TEXT_MODEL_LR = 1e-4  # conf/experiment/sst2_minilm.yaml's encoder LR
TEXT_MAX_LENGTH = 64


def finish_queued_work() -> None:
    """A GPU runs the steps asynchronously: wait for it before reading the clock."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Wall time from the start of step `warmup` to the end of the last step, written to `out`
    with the padded tokens of the timed text batches (for the FLOP count) and the wall time of
    the warm-up steps (which include torch.compile's compilation)."""

    def __init__(self, warmup: int, out: str) -> None:
        self.warmup, self.out = warmup, out
        self.first: float | None = None
        self.start: float | None = None
        self.lengths: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        if trainer.global_step == self.warmup and self.start is None:
            finish_queued_work()
            self.start = time.perf_counter()
        if self.start is not None and isinstance(batch, dict):
            self.lengths.append(int(batch["input_ids"].shape[1]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == trainer.max_steps:
            finish_queued_work()
            steps = trainer.global_step - self.warmup
            seconds = time.perf_counter() - self.start
            Path(self.out).write_text(
                json.dumps(
                    {
                        "steps": steps,
                        "seconds": seconds,
                        "warmup_seconds": self.start - self.first,
                        "lengths": self.lengths,
                    }
                )
            )


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """The config `sft-train <overrides>` would run, with its outputs under `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir)
    return cfg


def quiet() -> None:
    """Each arm's process: warnings and library logs off, sft's resolvers registered (the
    configs it is handed use ${sft_root:}), as sft-train does."""
    register_resolvers()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "sft", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fresh(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a new interpreter: what one tool sets for its process (sft's
    malloc setting, compile caches, allocator state) does not reach the next one timed."""
    # an executor's worker, not a Pool's: it may start DataLoader workers of its own
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=quiet) as executor:
        return executor.submit(fn, *args, **kwargs).result()


def sft_arm(overrides: list[str], work: Path, tag: str, args: argparse.Namespace) -> Callable:
    """An arm for `in_turns`: `run_sft` in a fresh process, its run folder named by the repeat."""
    return lambda repeat: fresh(run_sft, overrides, work, f"{tag}_{repeat}", args)


def tool_arm(fn: Callable, *args: Any, **kwargs: Any) -> Callable:
    """An arm for `in_turns`: `fn(*args, **kwargs)` in a fresh process."""
    return lambda repeat: fresh(fn, *args, **kwargs)


def in_turns(arms: dict[str, Callable[[int], dict]], repeats: int) -> dict[str, dict]:
    """Each arm `repeats` times, in turns (A B C, A B C, ...), each call with its repeat's index:
    a slow spell of a shared VM (one arm's runs vary by up to ~15 % on one) falls on every arm
    alike. Per arm its run of median rate, with every run's steps/s in "rates"."""
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for name, arm in arms.items():
            runs[name].append(arm(repeat))
    chosen = {}
    for name, arm_runs in runs.items():
        rates = [run["steps"] / run["seconds"] for run in arm_runs]
        median = sorted(range(len(rates)), key=rates.__getitem__)[len(rates) // 2]
        chosen[name] = {**arm_runs[median], "rates": rates}
    return chosen


def print_rates(runs: dict[str, dict], batch: int, part: str) -> None:
    """With --repeats > 1: every run's samples/s per arm (the rows above give the medians)."""
    if len(next(iter(runs.values()))["rates"]) < 2:
        return
    for name, run in runs.items():
        rates = ", ".join(f"{batch * rate:.1f}" for rate in run["rates"])
        print(f"({part}, {name}: {rates} samples/s)", flush=True)


def run_sft(overrides: list[str], work: Path, tag: str, args: argparse.Namespace) -> dict:
    out = work / f"{tag}.json"
    cfg = compose_train(
        [
            *overrides,
            f"++trainer.max_steps={args.warmup + args.steps}",
            "++trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            "test=false",
            "callbacks.early_stopping=null",
            # this module's StepTimer, whether run as a script or imported (gpu_check.sh)
            f"+callbacks.step_timer._target_={StepTimer.__module__}.StepTimer",
            f"+callbacks.step_timer.warmup={args.warmup}",
            f"+callbacks.step_timer.out={out}",
        ],
        work / tag,
    )
    train(cfg)
    return json.loads(out.read_text())


# ---- text -----------------------------------------------------------------------------------
def sst2_subset(data_dir: Path, rows: int, work: Path) -> Path:
    """A random `rows`-phrase sample of SST-2 train as a GLUE-style folder both tools read."""
    lines = (data_dir / "sst2" / "train.tsv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    sample = random.Random(0).sample(body, rows)
    folder = work / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("\n".join([header, *sample]) + "\n")
    for name in ("dev.tsv", "test.tsv"):
        shutil.copy(data_dir / "sst2" / name, folder / name)
    return folder


def hf_trainer_run(
    folder: Path,
    bf16: bool,
    work: Path,
    args: argparse.Namespace,
    compile: bool = False,
    keep_memory: bool = False,
) -> dict:
    # whether the setting applied (not off glibc): the row says so
    kept = keep_memory and keep_freed_memory()
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from sft.hub import resolve_model_name

    path = resolve_model_name("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    with (folder / "train.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    data = datasets.Dataset.from_dict(
        {"sentence": [r["sentence"] for r in rows], "label": [int(r["label"]) for r in rows]}
    ).map(
        lambda b: tokenizer(b["sentence"], truncation=True, max_length=TEXT_MAX_LENGTH),
        batched=True,
        remove_columns=["sentence"],
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    class Timer(TrainerCallback):
        start = end = None
        lengths: list[int] = []

        def on_step_begin(self, targs, state, control, **kw):
            if state.global_step == args.warmup:
                Timer.start = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == args.warmup + args.steps:
                Timer.end = time.perf_counter()

    targs = TrainingArguments(
        output_dir=str(work / f"hf_{bf16}_{compile}_{keep_memory}"),
        per_device_train_batch_size=32,
        max_steps=args.warmup + args.steps,
        learning_rate=TEXT_MODEL_LR,
        warmup_steps=0.06,  # a fraction of the steps, as sft's warmup_ratio
        weight_decay=0.01,
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length",
        bf16=bf16,
        torch_compile=compile,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=data,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Timer()],
    )
    trainer.train()
    return {"steps": args.steps, "seconds": Timer.end - Timer.start, "kept": kept}


def text_flops_per_sample(length: int, bf16: bool) -> float:
    """FLOPs of one MiniLM training step (3x forward) per sample at sequence length `length`."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification

    from sft.hub import resolve_model_name

    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_name("minilm"), num_labels=2
    )
    ids = torch.randint(1000, 2000, (32, length))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), autocast:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return 3 * counter.get_total_flops() / 32


def text_overrides(folder: Path) -> list[str]:
    """sft's text arm: `experiment=sst2_minilm` on the phrases of `folder` (`sst2_subset`), all
    of them, without its linear probe (only training steps are timed)."""
    return [
        "experiment=sst2_minilm",
        f"data.data_dir={folder}",
        "data.samples_per_class=null",
        f"data.max_length={TEXT_MAX_LENGTH}",
        "model.linear_probe=null",
    ]


def bench_text(args: argparse.Namespace, work: Path) -> list[dict]:
    text = work / "text"
    folder = sst2_subset(Path(args.data_dir), 32 * (args.warmup + args.steps), text)
    results = []
    # without bf16 units the CPU emulates bf16 (several times slower than fp32), and
    # trainer.precision=auto picks fp32: no tool would be run in bf16 there
    if not cpu_has_bf16():
        print("(text: bf16 arms left out: this CPU has no bf16 units)")
    for bf16 in (False, True) if cpu_has_bf16() else (False,):
        precision = "bf16-mixed" if bf16 else "32-true"
        overrides = [*text_overrides(folder), f"trainer.precision={precision}"]
        runs = in_turns(
            {
                "sft": sft_arm(overrides, text, f"sft_{precision}", args),
                # HF's objective has no regulariser: sft without its L2-SP is the same objective
                "sft, model.regularizer=none": sft_arm(
                    [*overrides, "model.regularizer=none"], text, f"sft_noreg_{precision}", args
                ),
                # torch's own dropout: what sft's FastDropout (model.fast_dropout) is worth
                "sft, model.fast_dropout=false": sft_arm(
                    [*overrides, "model.fast_dropout=false"],
                    text,
                    f"sft_torch_dropout_{precision}",
                    args,
                ),
                "HF": tool_arm(hf_trainer_run, folder, bf16, text, args),
                # the same, with the malloc setting sft-train makes for its process
                "HF + keep_freed_memory": tool_arm(
                    hf_trainer_run, folder, bf16, text, args, keep_memory=True
                ),
                # both compiled (compilation falls in the warm-up steps)
                "sft, model.compile=true": sft_arm(
                    [*overrides, "model.compile=true"], text, f"sft_compiled_{precision}", args
                ),
                "HF, torch_compile=True": tool_arm(
                    hf_trainer_run, folder, bf16, text, args, compile=True
                ),
            },
            args.repeats,
        )
        sft, plain, torch_dropout = (
            runs[arm]
            for arm in ("sft", "sft, model.regularizer=none", "sft, model.fast_dropout=false")
        )
        anchor, anchor_kept = runs["HF"], runs["HF + keep_freed_memory"]
        compiled, anchor_compiled = runs["sft, model.compile=true"], runs["HF, torch_compile=True"]
        mean_len = round(sum(sft["lengths"]) / len(sft["lengths"]))
        for label, run, anchor_label, anchor_run in (
            (precision, sft, "transformers.Trainer", anchor),
            (f"{precision}, model.regularizer=none", plain, "transformers.Trainer", anchor),
            (
                f"{precision}, model.fast_dropout=false",
                torch_dropout,
                "transformers.Trainer",
                anchor,
            ),
            (
                precision,
                sft,
                "transformers.Trainer + sft's malloc setting (keep_freed_memory)"
                if anchor_kept["kept"]
                else "transformers.Trainer (sft's malloc setting does not apply here)",
                anchor_kept,
            ),
            (
                f"{precision}, model.compile=true",
                compiled,
                "transformers.Trainer, torch_compile=True",
                anchor_compiled,
            ),
        ):
            results.append(
                {
                    "task": "SST-2 phrases, MiniLM-L6, batch 32",
                    "precision": label,
                    "anchor": anchor_label,
                    "sft": 32 * run["steps"] / run["seconds"],
                    "anchor_rate": 32 * anchor_run["steps"] / anchor_run["seconds"],
                    "flops_per_sample": text_flops_per_sample(mean_len, bf16),
                    "bf16": bf16,
                }
            )
            print_row(results[-1])
        print_rates(runs, 32, f"text {precision}")
    return results


# what the regulariser arms run on: (label, sft-train overrides, batch size, lambda)
REGULARIZER_TASKS = {
    "text": ("SST-2 MiniLM", ["experiment=sst2_minilm", "model.linear_probe=null"], 32, 1e-5),
    "images": (
        "CIFAR-10 64px EfficientNet-Lite0",
        ["experiment=cifar10_effnet_lite0_quick", "model.linear_probe=null"],
        64,
        1e-4,
    ),
}


def bench_regularizer(args: argparse.Namespace, work: Path, task: str = "text") -> None:
    """The cost of the L2-SP / L2 term in sft's MiniLM (or EfficientNet-Lite0) step, in the
    precision sft picks."""
    label, overrides, batch, lam = REGULARIZER_TASKS[task]
    if task == "text":
        folder = sst2_subset(Path(args.data_dir), 32 * (args.warmup + args.steps), work / "reg")
        overrides = [*overrides, f"data.data_dir={folder}", f"data.max_length={TEXT_MAX_LENGTH}"]
    else:
        overrides = [*overrides, "data.samples_per_class=null"]
    # each arm: (regularizer, decoupled, every); the decoupled pull is one pass over the
    # weights, every k-th step with reg_every=k
    arms = {
        "none": ("none", False, 1),
        "l2sp": ("l2sp", False, 1),
        "l2sp decoupled": ("l2sp", True, 1),
        "l2sp decoupled, every 4": ("l2sp", True, 4),
        "l2": ("l2", False, 1),
    }
    if task == "images":  # the two forms its config has had
        arms = {arm: arms[arm] for arm in ("none", "l2sp", "l2sp decoupled, every 4")}
    runs = in_turns(
        {
            arm: sft_arm(
                [
                    *overrides,
                    f"model.regularizer={reg}",
                    f"model.reg_lambda={0.0 if reg == 'none' else lam}",
                    f"model.reg_decoupled={str(decoupled).lower()}",
                    f"model.reg_every={every}",
                ],
                work / "reg",
                f"reg_{task}_{reg}_{decoupled}_{every}",
                args,
            )
            for arm, (reg, decoupled, every) in arms.items()
        },
        3,  # run-to-run noise is ~5 %
    )
    rates = {arm: [batch * rate for rate in run["rates"]] for arm, run in runs.items()}
    median = {arm: batch * run["steps"] / run["seconds"] for arm, run in runs.items()}
    print(
        f"\n| regularizer (sft, {label}, precision auto) | samples/s (3 runs) | median | "
        "step time vs none |"
    )
    print("| --- | --- | --- | --- |")
    for reg, rate in median.items():
        runs = ", ".join(f"{r:.1f}" for r in rates[reg])
        print(
            f"| {reg} | {runs} | {rate:.1f} | {100 * (median['none'] / rate - 1):+.1f} % |",
            flush=True,
        )
    if task != "text":
        return
    # Step-time differences of a few % are within the runs' noise, so each update is also timed
    # alone, on the same model, and set against the median step without a regulariser.
    step_ms = 1000 * 32 / median["none"]
    print(f"\n| update alone (MiniLM, {step_ms:.0f} ms step) | ms (median of 20) | of a step |")
    print("| --- | --- | --- |")
    for arm, ms in time_regularizer_updates(work / "reg_alone").items():
        print(f"| {arm} | {ms:.2f} | {100 * ms / step_ms:.1f} % |", flush=True)


def time_regularizer_updates(work: Path) -> dict[str, float]:
    """Milliseconds per optimizer step of each regulariser update on sft_minilm's model (fp32
    weights, the groups of its optimizer): median of 20 blocks of `reg_every` steps (after 3
    untimed), divided by `reg_every`."""
    times = {}
    for arm, reg, decoupled, every in [
        ("l2sp", "l2sp", False, 1),
        ("l2sp decoupled", "l2sp", True, 1),
        ("l2sp decoupled, every 4", "l2sp", True, 4),
        ("l2", "l2", False, 1),
        ("l2 decoupled", "l2", True, 1),
        ("l2 decoupled, every 4", "l2", True, 4),
    ]:
        cfg = compose_train(
            [
                "experiment=sst2_minilm",
                "model.linear_probe=null",
                "model.scheduler=null",  # no trainer here to count the steps of a schedule
                "model.warmup_ratio=0",
                f"model.regularizer={reg}",
                "model.reg_lambda=1e-5",
                f"model.reg_decoupled={str(decoupled).lower()}",
                f"model.reg_every={every}",
            ],
            work,
        )
        model = instantiate(cfg.model)
        optimizer = model.configure_optimizers()["optimizer"]
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        samples = []
        for i in range(23):
            start = time.perf_counter()
            for _ in range(every):
                model.on_before_optimizer_step(optimizer)
            if i >= 3:
                samples.append(1000 * (time.perf_counter() - start) / every)
        times[arm] = sorted(samples)[len(samples) // 2]
    return times


# ---- images ---------------------------------------------------------------------------------
class CifarPIL(torch.utils.data.Dataset):
    """CIFAR-10 training images as PIL images through a torchvision transform, per sample."""

    def __init__(self, data_dir: Path, transform: Any) -> None:
        parts = [load_batch(data_dir / FOLDER / name) for name in TRAIN_FILES]
        self.images = torch.cat([p[0] for p in parts]).permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = torch.cat([p[1] for p in parts]).tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


class Fp32Depthwise(torch.nn.Module):
    """sft's precision for a depthwise convolution without its per-shape timing, with torch's
    (and timm's) own layer: computed in fp32 under CPU autocast, returned in bf16
    (sft.models.depthwise_conv)."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.conv(x.float()).to(torch.bfloat16)


def fp32_depthwise(model: torch.nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Conv2d) and child.groups == child.in_channels > 1:
                setattr(parent, name, Fp32Depthwise(child))


def plain_loop(cfg: DictConfig, tuned: bool, args: argparse.Namespace) -> dict:
    """The plain PyTorch loop: same backbone, head and optimizer as `cfg`'s model."""
    from torchvision import transforms

    size = cfg.model.backbone.get("input_size") or 32
    tf = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if size != 32:
        tf.append(transforms.Resize(size))
    # the statistics sft normalises with, resolved by its datamodule as in training
    datamodule = instantiate(cfg.data)
    datamodule.configure_input(resolve_input_spec(cfg.model.backbone))
    norm = datamodule.transform
    tf += [transforms.ToTensor(), transforms.Normalize(norm.mean, norm.std)]
    loader = torch.utils.data.DataLoader(
        CifarPIL(Path(args.data_dir), transforms.Compose(tf)),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=True,
    )
    torch.manual_seed(0)
    backbone_cfg = {k: v for k, v in cfg.model.backbone.items() if k != "input_size"}
    backbone = instantiate(backbone_cfg)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 10)).train()
    if tuned:
        keep_freed_memory()
    bf16 = tuned and cfg.trainer.precision == "bf16-mixed"
    if bf16:
        fp32_depthwise(backbone)
    fmt = torch.channels_last if tuned else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = instantiate(cfg.model.optimizer, _partial_=True)(
        model.parameters(), lr=cfg.model.lr_backbone
    )
    start, steps = None, 0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=fmt)), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == args.warmup + args.steps:
            steps = step + 1 - args.warmup
            break
    return {"steps": steps, "seconds": time.perf_counter() - start}


def image_flops_per_sample(cfg: DictConfig, bf16: bool) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = instantiate(cfg.model.backbone)
    x = torch.randn(8, 3, 32, 32)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), autocast:
        model(x)
    return 3 * counter.get_total_flops() / 8


# the image part's experiments and their rows' task column
IMAGE_TASKS = {
    "cifar10_effnet_lite0_quick": "CIFAR-10 64px, EfficientNet-Lite0, batch 64",
    "cifar10_resnet18": "CIFAR-10 32px, ResNet-18 (CIFAR stem), batch 128",
}


def image_overrides(experiment: str) -> list[str]:
    """sft's arm for one of IMAGE_TASKS' experiments, without its linear probe."""
    overrides = [f"experiment={experiment}", "model.linear_probe=null"]
    if experiment == "cifar10_resnet18":
        overrides.append("data.batch_size=128")
    else:
        overrides.append("data.samples_per_class=null")
    return overrides


def bench_images(args: argparse.Namespace, work: Path) -> list[dict]:
    results = []
    for experiment in args.image_experiments.split(","):
        label = IMAGE_TASKS[experiment]
        overrides = image_overrides(experiment)
        cfg = compose_train(overrides, work / "images" / "cfg")
        # the precision sft's `auto` picked for this backbone, for the tuned plain loop
        from sft.models.backbones import backbone_speed_hints
        from sft.utils.hardware import choose_precision

        precision, _ = choose_precision("cpu", backbone_speed_hints(cfg.model.backbone).cpu_bf16)
        with open_dict(cfg):
            cfg.trainer.precision = precision
        batch = cfg.data.batch_size
        runs = in_turns(
            {
                "sft": sft_arm(overrides, work / "images", experiment, args),
                "plain loop": tool_arm(plain_loop, cfg, tuned=False, args=args),
                "tuned plain loop": tool_arm(plain_loop, cfg, tuned=True, args=args),
                "sft, model.compile=true": sft_arm(
                    [*overrides, "model.compile=true"],
                    work / "images",
                    f"{experiment}_compiled",
                    args,
                ),
            },
            args.repeats,
        )
        sft, plain, tuned = runs["sft"], runs["plain loop"], runs["tuned plain loop"]
        compiled = runs["sft, model.compile=true"]
        reference = {
            "task": label,
            "precision": f"sft auto: {precision}",
            "anchor": "plain torchvision loop (fp32, NCHW)",
            "sft": batch * sft["steps"] / sft["seconds"],
            "anchor_rate": batch * plain["steps"] / plain["seconds"],
            "flops_per_sample": image_flops_per_sample(cfg, precision == "bf16-mixed"),
            "bf16": precision == "bf16-mixed",
        }
        results.append(reference)
        print_row(results[-1])
        results.append(
            {
                **results[-1],
                "anchor": "plain loop + channels_last + sft's precision and malloc setting",
                "anchor_rate": batch * tuned["steps"] / tuned["seconds"],
            }
        )
        print_row(results[-1])
        results.append(
            {
                **reference,
                "precision": f"sft auto: {precision}, model.compile=true",
                "sft": batch * compiled["steps"] / compiled["seconds"],
            }
        )
        print_row(results[-1])
        print(
            f"(compile: {args.warmup} warm-up steps took {compiled['warmup_seconds']:.0f} s "
            f"with model.compile=true, {sft['warmup_seconds']:.0f} s without)",
            flush=True,
        )
        print_rates(runs, batch, experiment)
    return results


# ---- report ---------------------------------------------------------------------------------
def cpuinfo_field(name: str) -> str:
    """The first core's `name` field in /proc/cpuinfo ('' where there is none)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":")[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def flops_per_cycle(bf16: bool) -> int:
    """Nominal FLOPs per cycle per core (see docstring): fp32 FMA width x units x 2; bf16 on
    AMX 1024, with AVX512-BF16 dot products (no AMX) twice fp32."""
    flags = cpu_flags()
    # Intel Xeons and AMD Zen 5 (cpu family 26): two 512-bit FMA units; Zen 4 (family 25) runs
    # AVX-512 on two 256-bit units (as AVX2)
    amd_256 = (
        cpuinfo_field("vendor_id") == "AuthenticAMD" and int(cpuinfo_field("cpu family") or 0) < 26
    )
    fp32 = 64 if "avx512f" in flags and not amd_256 else 32
    if bf16 and "amx_bf16" in flags:
        return 1024
    if bf16 and "avx512_bf16" in flags:
        return 2 * fp32
    return fp32


def peak_flops(bf16: bool) -> float:
    """Nominal peak of the cores torch uses: cores x clock x FLOPs per cycle (see docstring)."""
    mhz = float(cpuinfo_field("cpu MHz") or 0)
    return torch.get_num_threads() * mhz * 1e6 * flops_per_cycle(bf16)


def print_row(r: dict) -> None:
    achieved = r["flops_per_sample"] * r["sft"]
    print(
        f"| {r['task']} | {r['precision']} | {r['anchor']} | {r['anchor_rate']:.1f} | "
        f"{r['sft']:.1f} | **{r['sft'] / r['anchor_rate']:.2f}x** | "
        f"{achieved / 1e9:.0f} GFLOP/s = {100 * achieved / peak_flops(r['bf16']):.1f} % |",
        flush=True,
    )


PARTS = ("text", "images", "regularizer", "image_regularizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--parts", default="text,images,regularizer", help=f"of {', '.join(PARTS)}")
    parser.add_argument(
        "--image-experiments",
        default=",".join(IMAGE_TASKS),
        help=f"the image part's experiments, of {', '.join(IMAGE_TASKS)}",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each text and image arm, in turns; the rows give each arm's median run",
    )
    parser.add_argument(
        "--data-dir", default=os.environ.get("SFT_DATA_DIR", str(Path(CONF_DIR).parent / "data"))
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats: at least 1, got {args.repeats}")
    if unknown := set(args.parts.split(",")) - set(PARTS):
        parser.error(f"--parts: {', '.join(sorted(unknown))} not of {', '.join(PARTS)}")
    if unknown := set(args.image_experiments.split(",")) - set(IMAGE_TASKS):
        parser.error(
            f"--image-experiments: {', '.join(sorted(unknown))} not of {', '.join(IMAGE_TASKS)}"
        )
    quiet()
    mhz = next(
        (
            line.split(":")[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ),
        "?",
    )
    print(
        f"machine: {cpu_description()}, {mhz} MHz; torch {torch.__version__}, "
        f"python {platform.python_version()}; bf16 units: {cpu_has_bf16()}"
    )
    print(
        f"{args.warmup} warm-up steps, {args.steps} timed steps per tool"
        + (f", each arm's median of {args.repeats} runs in turns" if args.repeats > 1 else "")
        + "\n"
    )
    print(
        "| task | precision | anchor | anchor samples/s | sft samples/s | sft / anchor | "
        "sft achieved (of nominal peak) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = set(args.parts.split(","))
        if "text" in parts:
            bench_text(args, work)
        if "images" in parts:
            bench_images(args, work)
        if "regularizer" in parts:
            bench_regularizer(args, work)
        if "image_regularizer" in parts:
            bench_regularizer(args, work, "images")


if __name__ == "__main__":
    main()
