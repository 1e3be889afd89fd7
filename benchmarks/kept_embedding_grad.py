"""The word embedding's kept gradient vs torch's dense one, in whole `sft-train` steps.

The kept gradient: sft/models/kept_embedding_grad.py.

    SFT_DATA_DIR=... .venv/bin/python benchmarks/kept_embedding_grad.py [--steps 120]
        [--warmup 10] [--rounds 4]

`sft-train experiment=sst2_minilm` as `benchmarks/vs_anchors.py` times it (SST-2 phrases, the
packaged all-MiniLM-L6-v2, batch 32, no linear probe or validation), each arm in a fresh
process: as shipped, and with the classifier's `KeptEmbeddingGrads.attach` finding nothing
(torch's backward: a fresh 30,522 x 384 gradient each step). fp32 and, where the CPU has bf16
units, bf16; `--rounds` rounds of both arms, in alternating order. Prints samples/s per run, the medians
and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from vs_anchors import fresh, run_sft, sst2_subset

from sft.models.kept_embedding_grad import KeptEmbeddingGrads
from sft.utils.hardware import cpu_description, cpu_has_bf16


def run_arm(
    kept: bool, overrides: list[str], work: Path, tag: str, args: argparse.Namespace
) -> dict:
    """One timed run in this (fresh) process; `kept=False`: the tables keep torch's backward."""
    if not kept:
        KeptEmbeddingGrads.attach = staticmethod(lambda model, min_weights=None: None)
    return run_sft(overrides, work, tag, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-dir", default=os.environ.get("SFT_DATA_DIR", "data"))
    args = parser.parse_args()
    print(f"machine: {cpu_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = sst2_subset(Path(args.data_dir), 32 * (args.warmup + args.steps), work)
        for precision in ("32-true", "bf16-mixed") if cpu_has_bf16() else ("32-true",):
            overrides = [
                "experiment=sst2_minilm",
                f"data.data_dir={folder}",
                "data.samples_per_class=null",
                "model.linear_probe=null",
                f"trainer.precision={precision}",
            ]
            rates: dict[bool, list[float]] = {True: [], False: []}
            for round_ in range(args.rounds):
                # the order alternates: neither arm always runs on a machine warmed by the other
                for kept in (False, True) if round_ % 2 == 0 else (True, False):
                    tag = f"{precision}_{kept}_{round_}"
                    run = fresh(run_arm, kept, overrides, work, tag, args)
                    rates[kept].append(32 * run["steps"] / run["seconds"])
            torch_rate, kept_rate = (statistics.median(rates[k]) for k in (False, True))
            print(
                f"{precision}: torch's gradient {', '.join(f'{r:.1f}' for r in rates[False])}; "
                f"kept {', '.join(f'{r:.1f}' for r in rates[True])} samples/s; "
                f"medians {torch_rate:.1f} vs {kept_rate:.1f}: {kept_rate / torch_rate:.3f}x"
            )


if __name__ == "__main__":
    main()
