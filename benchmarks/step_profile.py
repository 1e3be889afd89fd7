"""Where the time of sft's training step goes: ms per step, then torch's profiler over a few steps.

    .venv/bin/python benchmarks/step_profile.py [--steps 10] [--rows 12] -- <sft-train overrides>

Runs `sft-train <overrides>` as benchmarks/vs_anchors.py does (no linear probe, validation or
test; only training steps). It times steps 10 to 10 + `--steps` alone, then profiles the next
5 steps with torch.profiler. Then it prints the ops by self CPU time and self device time.
The profiler runs over a few steps only, so the ms/step figure is not slowed by it. Lightning's
PyTorchProfiler would time the whole fit with the profiler on. With a GPU this tells a
launch-bound step (CPU time >> device time) from a kernel-bound one.
GPU check (benchmarks/gpu_check.sh) runs it on MiniLM fp32 vs bf16.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_anchors  # this folder's module, found through the path above

from sft.jobs.train import train

WARMUP = 10
PROFILED = 5


class StepProfile(L.Callback):
    """ms/step over steps [WARMUP, WARMUP + steps), then torch's profiler over the next
    PROFILED steps; prints both, titled `tag`."""

    def __init__(self, tag: str, steps: int, rows: int) -> None:
        self.tag, self.steps, self.rows = tag, steps, rows
        self.start: float | None = None
        self.profiler: profile | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == WARMUP:
            vs_anchors.finish_queued_work()
            self.start = time.perf_counter()
        elif step == WARMUP + self.steps:
            vs_anchors.finish_queued_work()
            ms = (time.perf_counter() - self.start) / self.steps * 1000
            print(f"{self.tag}: {ms:.1f} ms/step (steps {WARMUP}-{step})", flush=True)
            cuda = [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
            self.profiler = profile(activities=[ProfilerActivity.CPU, *cuda])
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.profiler is None or trainer.global_step != WARMUP + self.steps + PROFILED:
            return
        vs_anchors.finish_queued_work()
        self.profiler.__exit__(None, None, None)
        table = self.profiler.key_averages().table
        keys = ["self_cpu_time_total"] + ["self_device_time_total"] * torch.cuda.is_available()
        for key in keys:
            print(f"== {self.tag}: {PROFILED} steps by {key}")
            print(table(sort_by=key, row_limit=self.rows, max_name_column_width=60), flush=True)
        self.profiler = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps timed without the profiler")
    parser.add_argument("--rows", type=int, default=12, help="ops listed per table")
    parser.add_argument("--tag", default="step", help="title of the printed tables")
    parser.add_argument("overrides", nargs="*", help="sft-train overrides")
    args = parser.parse_args()
    vs_anchors.quiet()
    work = Path(tempfile.mkdtemp(prefix="step_profile_"))
    cfg = vs_anchors.compose_train(
        [
            *args.overrides,
            f"++trainer.max_steps={WARMUP + args.steps + PROFILED}",
            "++trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            "test=false",
            "model.linear_probe=null",
            "callbacks.early_stopping=null",
            f"+callbacks.step_profile._target_={StepProfile.__module__}.StepProfile",
            f"+callbacks.step_profile.tag={args.tag}",
            f"+callbacks.step_profile.steps={args.steps}",
            f"+callbacks.step_profile.rows={args.rows}",
        ],
        work,
    )
    train(cfg)


if __name__ == "__main__":
    main()
