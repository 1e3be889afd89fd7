"""torch's dropout vs sft's FastDropout on CPU: per call, and in a whole MiniLM training step.

    .venv/bin/python benchmarks/fast_dropout.py [--steps 20] [--repeats 3]

Per call: forward + backward of one dropout (p 0.1) on a batch-32 activation of MiniLM's width
(384) at several sequence lengths, fp32 and bf16; the median of `--repeats` blocks of 50 calls.
Step: the packaged all-MiniLM-L6-v2 + a linear head, forward + backward + fused AdamW on batch 32
of random token ids (16 positions, about SST-2's phrases), at the precision sft picks for it on
this CPU, with sft-train's malloc setting (`keep_freed_memory`); two copies of the model, one
with torch's dropout and one with FastDropout (its 13 hidden-state dropouts; attention dropout
runs inside SDPA either way), timed alternately in blocks of `--steps` steps: the median ms per
step and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
from collections.abc import Callable
from functools import partial

import torch
from timing import median_seconds
from torch import nn

from sft.hub import resolve_model_name
from sft.models.backbones import backbone_speed_hints
from sft.models.fast_dropout import FastDropout, use_fast_dropout
from sft.utils.allocator import keep_freed_memory
from sft.utils.hardware import choose_precision, cpu_description


def forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    # autograd.grad: nothing accumulates into x.grad between calls
    torch.autograd.grad(layer(x), x, grad)


def per_call(args: argparse.Namespace) -> None:
    print("| activation | dtype | torch dropout µs | FastDropout µs | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for dtype in (torch.float32, torch.bfloat16):
        for length in (8, 16, 32, 64):
            x = torch.randn(32, length, 384, dtype=dtype, requires_grad=True)
            grad = torch.randn_like(x)
            times = [
                median_seconds(partial(forward_backward, layer, x, grad), 50, args.repeats)
                for layer in (nn.Dropout(0.1), FastDropout(0.1))
            ]
            print(
                f"| 32 x {length} x 384 | {str(dtype).removeprefix('torch.')} | "
                f"{times[0] * 1e6:.0f} | {times[1] * 1e6:.0f} | **{times[0] / times[1]:.2f}x** |",
                flush=True,
            )


def per_step(args: argparse.Namespace) -> None:
    from transformers import AutoModel

    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(resolve_model_name("minilm"))
    hints = backbone_speed_hints({"name": "huggingface"})
    bf16 = choose_precision("cpu", hints.cpu_bf16)[0] == "bf16-mixed"
    ids = torch.randint(1000, 30000, (32, 16))
    labels = torch.randint(0, 2, (32,))

    def stepper(fast: bool) -> Callable[[], None]:
        model = nn.Sequential()
        model.encoder = copy.deepcopy(encoder).train()
        model.head = nn.Linear(384, 2)
        if fast:
            use_fast_dropout(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                hidden = model.encoder(input_ids=ids).last_hidden_state.mean(1)
                loss = nn.functional.cross_entropy(model.head(hidden).float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    steps = {fast: stepper(fast) for fast in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for fast, step in steps.items():
            times[fast].append(median_seconds(step, args.steps, 1))
    plain, fast = (statistics.median(times[f]) for f in (False, True))
    print(
        f"\nMiniLM-L6 step, batch 32 x 16, {'bf16-mixed' if bf16 else 'fp32'}, median of "
        f"{args.repeats} blocks of {args.steps} steps:"
    )
    print(
        f"torch dropout {plain * 1e3:.1f} ms, FastDropout {fast * 1e3:.1f} ms: "
        f"**{plain / fast:.2f}x** (blocks: {', '.join(f'{t * 1e3:.0f}' for t in times[False])}"
        f" vs {', '.join(f'{t * 1e3:.0f}' for t in times[True])} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # as sft-train runs
    print(f"{cpu_description()}, torch {torch.__version__}, {platform.python_version()}\n")
    per_call(args)
    per_step(args)


if __name__ == "__main__":
    main()
