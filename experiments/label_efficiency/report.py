"""Results table, plot and README of a label-efficiency study, generated from its run outputs.

    python experiments/label_efficiency/report.py sst2
    python experiments/label_efficiency/report.py cifar10

Reads every job's `result.json` (written by `sft-train`) and `.hydra/` files under the study's
sweep directories (STUDIES below), and writes into experiments/label_efficiency_<study>/:
`results.csv` (one row per job), `accuracy_vs_labels.png` and `README.md` (the commands as Hydra
recorded them, the hardware, wall times, mean ± std over seeds). Nothing is typed in by hand: run
it on the machine that ran the sweeps, right after them.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import lightning
import torch
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from sft.runs.result import COMPLETED, RESULT_FILE, RunResult
from sft.runs.sweep_summary import read_results
from sft.utils.hardware import cpu_model

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Study:
    key: str
    title: str
    # sweep directories (relative to the checkout), one per multirun of the study
    sweeps: tuple[str, ...]
    # the metric every job is scored by, and what it is measured on
    metric: str
    evaluated_on: str
    out_dir: str


STUDIES = {
    "sst2": Study(
        key="sst2",
        title="SST-2 label efficiency: all-MiniLM-L6-v2, fine-tuning vs fused LP-FT vs LoRA",
        sweeps=(
            "outputs/studies/label_efficiency_sst2_r2",
            "outputs/studies/label_efficiency_sst2_r2_full",
            # LoRA's full-data point, rerun on its own after the session running the sweep above
            # ended during it
            "outputs/studies/label_efficiency_sst2_r2_full_lora",
        ),
        metric="val/acc",
        evaluated_on="the full GLUE SST-2 dev set, once, after the last training step",
        out_dir="experiments/label_efficiency_sst2",
    ),
    "cifar10": Study(
        key="cifar10",
        title="CIFAR-10 label efficiency: EfficientNet-Lite0 (ImageNet), fine-tuning vs fused LP-FT vs LoRA",
        # one sweep per method (run_cifar10_r2.sh), so each fits one background run
        sweeps=(
            *(
                f"outputs/studies/label_efficiency_cifar10_r2_{method}"
                for method in ("linear_probe", "finetune_linear", "lpft_fused", "lora", "lp_lora")
            ),
            # the lora arm's seed 2, run beside its seeds 0 and 1 to fit a session
            "outputs/studies/label_efficiency_cifar10_r2_lora_seed2",
        ),
        metric="test/acc",
        evaluated_on="the 10,000 CIFAR-10 test images, once, with the final weights",
        out_dir="experiments/label_efficiency_cifar10",
    ),
}

METHODS = {
    "linear_probe": "linear probe (frozen backbone)",
    "finetune_linear": "fine-tuning, linear head",
    "lpft_fused": "fused LP-FT",
    "lora": "LoRA, linear head",
    "lp_lora": "LP-LoRA (fused head)",
}
# the arms that answer the question, each with the plain arm it is compared with
FUSED_VS_PLAIN = {"lpft_fused": "finetune_linear", "lp_lora": "lora"}
QUESTION = (
    "Does the supervised fused branch (with and without LP) give equal or better accuracy with "
    "fewer labels than plain fine-tuning, at equal compute?"
)
# data.samples_per_class=null: the whole training set
ALL = 10**9
BACKBONES = {
    "huggingface": "MiniLM-L6",
    "efficientnet_lite0": "EfficientNet-Lite0",
    "resnet18": "ResNet-18",
}


@dataclass
class Job:
    arm: str
    method: str | None
    samples_per_class: int
    seed: int
    status: str
    score: float | None
    wall_time_s: float
    error: str | None
    output_dir: Path
    config: dict


def arm_name(cfg: dict, method: str | None) -> str:
    """`<backbone>: <method>`; a backbone trained from random weights says so."""
    backbone = cfg["model"]["backbone"]
    name = BACKBONES.get(backbone["name"], backbone["name"])
    if not backbone.get("pretrained", False):
        name += " from scratch"
        if method == "finetune_linear":  # nothing to fine-tune: plain training
            return f"{name}, linear head"
    return f"{name}: {METHODS.get(method, method or 'model default')}"


def arm_order(arm: str) -> tuple[bool, int, str]:
    """Table and legend order: the methods in METHODS' order, from-scratch baselines last."""
    ranks = [i for i, label in enumerate(METHODS.values()) if arm.endswith(label)]
    return "from scratch" in arm, ranks[0] if ranks else len(METHODS), arm


def size_label(size: int) -> str:
    return "all" if size == ALL else str(size)


def _size(job_dir: Path, data: dict) -> int:
    """The job's labels per class; ALL for the whole training set. A train_fraction job is
    refused: it was read as the whole set ("all"), its fractions pooled as seeds."""
    if data.get("train_fraction") is not None:
        raise SystemExit(
            f"error: {job_dir} drew data.train_fraction={data['train_fraction']}; this report "
            "compares data.samples_per_class sizes (and the whole set, both null)"
        )
    return data["samples_per_class"] or ALL


def load_job(job_dir: Path, result: RunResult, metric: str) -> Job:
    cfg = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "config.yaml"))
    choices = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    score = result.metrics.get(metric) if result.status == COMPLETED else None
    return Job(
        arm=arm_name(cfg, choices.get("method")),
        method=choices.get("method"),
        samples_per_class=_size(job_dir, cfg["data"]),
        seed=cfg["seed"],
        status=result.status,
        score=score,
        wall_time_s=result.wall_time_s,
        error=result.error,
        output_dir=job_dir,
        config=cfg,
    )


def shown(path: Path) -> str:
    """A path as the report's commands give it: relative to the checkout (where they run) when
    inside it, else absolute."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def sweep_command(sweep_dir: Path) -> str:
    """The multirun's command line: the task overrides Hydra saved in multirun.yaml, and the
    sweep directory."""
    hydra_cfg = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
    overrides = [*hydra_cfg.overrides.task, f"hydra.sweep.dir={shown(sweep_dir)}"]
    return " ".join(["sft-train -m", *map(shlex.quote, overrides)])


def report_command(study: str, sweeps: list[Path] | None, out: Path | None) -> str:
    """This report's command line: with the --sweeps and --out it was given (was: the study's
    own command, which writes the study's report from the study's sweeps)."""
    args = [study]
    if sweeps:
        args += ["--sweeps", *map(shown, sweeps)]
    if out:
        args += ["--out", shown(out)]
    return " ".join(["python experiments/label_efficiency/report.py", *map(shlex.quote, args)])


def sweep_wall_time_s(jobs: list[Job]) -> float:
    """From the first job's start to the last one's end, as their records give them (was: from
    multirun.yaml's time, which each run of the sweep again writes anew)."""
    ends, starts = [], []
    for job in jobs:
        record = RunResult.read(job.output_dir / RESULT_FILE)
        # records written before they kept their times: the file's, less the run's own time
        ended = record.ended_at or (job.output_dir / RESULT_FILE).stat().st_mtime
        ends.append(ended)
        starts.append(record.started_at or ended - record.wall_time_s)
    return max(ends) - min(starts)


def hardware() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        # run the report as the sweeps ran (same taskset / OMP_NUM_THREADS): it records both
        f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPU core(s) available, "
        f"{torch.get_num_threads()} torch thread(s), {gpu}; "
        f"torch {torch.__version__}, lightning {lightning.__version__}, "
        f"Python {platform.python_version()}"
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(jobs: list[Job]) -> dict[str, dict[int, list[Job]]]:
    by_arm: dict[str, dict[int, list[Job]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        by_arm[job.arm][job.samples_per_class].append(job)
    return by_arm


def check_one_setup_per_arm(jobs: list[Job]) -> None:
    """Exit with one line when two scored jobs of an arm and size share a seed, or differ in a
    setting other than the seed: their mean and spread would not be one setup's over seeds
    (was: two runs of seed 0, at 4 steps and at 1, averaged as n=2, and the budget table said
    4). A failed or interrupted job beside its rerun is not scored: it is listed as failed."""
    by_cell: dict[tuple[str, int], list[Job]] = defaultdict(list)
    for job in (j for j in jobs if j.score is not None):
        by_cell[(job.arm, job.samples_per_class)].append(job)
    for (arm, size), cell in by_cell.items():
        first = cell[0]
        for other in cell[1:]:
            where = (
                f"{first.output_dir} and {other.output_dir} are both {arm} at "
                f"{size_label(size)} labels per class"
            )
            if other.seed == first.seed:
                raise SystemExit(
                    f"error: {where} with seed {first.seed}: report one of them (--sweeps)"
                )
            a, b = _settings(first.config), _settings(other.config)
            differ = sorted(k for k in a.keys() | b.keys() if k != "seed" and a.get(k) != b.get(k))
            if differ:
                key = differ[0]
                raise SystemExit(
                    f"error: {where} but differ in {key} ({a.get(key)!r} vs {b.get(key)!r}): "
                    "a mean over them is not one setup's; report them apart (--sweeps, --out)"
                )


# what the arms of one study share: the data they draw and score (but the subset's size and
# seed) and how much of the scored split they score; the methods set the rest
SHARED = ("data.", "trainer.limit_val_batches", "trainer.limit_test_batches")
PER_JOB = (
    "data.samples_per_class",
    "data.train_fraction",
    "data.seed",
    # how the data is loaded, not which
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.eval_batch_size",
)


def check_one_study(jobs: list[Job]) -> None:
    """Exit with one line when two scored jobs differ in a setting every arm shares (the data
    and the part of the split scored): the answer would compare other subsets or other test
    images (was: a sweep per method, one given data.val_size=2000, which changes the pool a
    CIFAR-10 subset is drawn from, compared without a word)."""
    scored = [j for j in jobs if j.score is not None]
    if not scored:
        return
    first = scored[0]
    a = _settings(first.config)
    for other in scored[1:]:
        b = _settings(other.config)
        differ = sorted(
            k
            for k in a.keys() | b.keys()
            if k.startswith(SHARED) and not k.startswith(PER_JOB) and a.get(k) != b.get(k)
        )
        if differ:
            key = differ[0]
            raise SystemExit(
                f"error: {first.output_dir} and {other.output_dir} differ in {key} "
                f"({a.get(key)!r} vs {b.get(key)!r}), which every arm of a study shares: their "
                "arms would be compared on other data; report them apart (--sweeps, --out)"
            )


def _settings(cfg: dict, prefix: str = "") -> dict[str, object]:
    """A job's config as {dotted key: value} (interpolations as written: `${seed}`)."""
    flat: dict[str, object] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            flat |= _settings(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_csv(jobs: list[Job], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["arm", "samples_per_class", "seed", "status", "score", "wall_time_s", "run_dir"]
        )
        for j in sorted(jobs, key=lambda j: (arm_order(j.arm), j.samples_per_class, j.seed)):
            score = "" if j.score is None else f"{j.score:.4f}"
            writer.writerow(
                [
                    j.arm,
                    size_label(j.samples_per_class),
                    j.seed,
                    j.status,
                    score,
                    f"{j.wall_time_s:.1f}",
                    shown(j.output_dir),
                ]
            )


def plot(by_arm: dict[str, dict[int, list[Job]]], chance: float, study: Study, path: Path) -> None:
    # the object API, not pyplot: no GUI backend or global figure state in a script
    fig = Figure(figsize=(7.2, 4.6))
    ax = fig.subplots()
    sizes = sorted({size for by_size in by_arm.values() for size in by_size})
    finite = [s for s in sizes if s != ALL]
    # the whole training set: plotted one step (4x) right of the largest subset, labelled "all"
    x_of = {s: ((4 * max(finite) if finite else 1) if s == ALL else s) for s in sizes}
    for arm, by_size in sorted(by_arm.items(), key=lambda item: arm_order(item[0])):
        xs, means, stds = [], [], []
        for size in sorted(by_size):
            scores = [j.score for j in by_size[size] if j.score is not None]
            if scores:
                m, s = mean_std(scores)
                xs.append(x_of[size]), means.append(m), stds.append(s)
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=arm)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xscale("log")
    ax.set_xticks([x_of[s] for s in sizes], [size_label(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples per class")
    ax.set_ylabel(f"accuracy ({study.metric})")
    ax.set_title(study.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def budget_rows(by_arm: dict[str, dict[int, list[Job]]]) -> list[str]:
    """Each arm's training budget, read from its jobs' composed configs."""
    rows = []
    for arm, sizes in sorted(by_arm.items(), key=lambda item: arm_order(item[0])):
        cfg = next(iter(sizes.values()))[0].config
        model, trainer, data = cfg["model"], cfg["trainer"], cfg["data"]
        input_size = model["backbone"].get("input_size")
        adapter = cfg.get("adapter")
        lora = (
            f"r={adapter['r']}, LR {model.get('lr_adapter') or model['lr_head']:g}"
            if adapter
            else "-"
        )
        rows.append(
            f"| {arm} | {trainer['max_steps']} | {data['batch_size']} | {model['lr_backbone']:g} "
            f"| {model['lr_head']:g} | {lora} | {model['regularizer']} {model['reg_lambda']:g} "
            f"| {input_size or 'native'} |"
        )
    return rows


def answer(jobs: list[Job]) -> list[str]:
    """The question's answer as the numbers give it: per subset size, the fused arm's accuracy
    minus its plain counterpart's on the same backbone (same steps, batch and learning rates),
    over the seeds both completed, seed by seed (was: each arm's mean over its own seeds, so a
    job missing from one arm compared other subsets), naming the seeds left out at sizes both
    arms ran."""
    scores = {
        (_backbone_of(job.arm), job.method, job.samples_per_class, job.seed): job.score
        for job in jobs
        if job.score is not None and job.method is not None
    }
    backbones = sorted({b for b, _, _, _ in scores})
    lines = []
    for backbone in backbones:
        for fused, plain in FUSED_VS_PLAIN.items():
            cells, wins, left_out = [], 0, []
            for size in sorted({z for b, _, z, _ in scores if b == backbone}):
                seeds = {s for b, m, z, s in scores if (b, m, z) == (backbone, fused, size)}
                others = {s for b, m, z, s in scores if (b, m, z) == (backbone, plain, size)}
                paired = sorted(seeds & others)
                if not paired:  # a size one arm did not run (by design, e.g. the whole set)
                    continue
                left_out += [f"{size_label(size)}/class seed {s}" for s in sorted(seeds ^ others)]
                diff = statistics.fmean(
                    scores[backbone, fused, size, s] - scores[backbone, plain, size, s]
                    for s in paired
                )
                cells.append(f"{size_label(size)}/class {diff:+.4f} (n={len(paired)})")
                wins += diff >= 0
            if not cells:
                continue
            on = f" ({backbone})" if len(backbones) > 1 else ""
            unpaired = f" Left out, run by one arm only: {', '.join(left_out)}." if left_out else ""
            lines.append(
                f"- **{METHODS[fused]} minus {METHODS[plain]}**{on} (accuracy, seed by seed, over "
                f"the seeds both completed): {'; '.join(cells)}; equal or better at {wins} of "
                f"{len(cells)} sizes.{unpaired}"
            )
    return lines or ["- (no pair of fused and plain arms has completed jobs of one seed yet)"]


def _backbone_of(arm: str) -> str:
    """The backbone part of an arm's name (`<backbone>: <method>`, a from-scratch one's
    `<backbone> from scratch, linear head`)."""
    return arm.partition(":")[0].partition(",")[0]


def _scores_by(jobs: list[Job]) -> dict[tuple[str, int], list[float]]:
    found: dict[tuple[str, int], list[float]] = defaultdict(list)
    for job in jobs:
        if job.score is not None and job.method is not None:
            found[job.method, job.samples_per_class].append(job.score)
    return found


def evaluated_on(study: Study, jobs: list[Job]) -> str:
    """What the scores were measured on: the study's split, or the part of it that the jobs'
    `trainer.limit_*_batches` left (was: the whole split said of a limited one)."""
    key = "limit_test_batches" if study.metric.startswith("test/") else "limit_val_batches"
    limits = sorted({str(j.config.get("trainer", {}).get(key)) for j in jobs} - {"None", "1.0"})
    if not limits:
        return study.evaluated_on
    split = study.evaluated_on.partition(", once")[0]  # (was: cut at "10,000"'s comma)
    return f"part of {split} (trainer.{key}={', '.join(limits)})"


def readme(study: Study, jobs: list[Job], sweeps: list[Path], chance: float, command: str) -> str:
    by_arm = summarise(jobs)
    sizes = sorted({j.samples_per_class for j in jobs})
    seeds = sorted({j.seed for j in jobs})
    failed = [j for j in jobs if j.score is None]
    lines = [
        f"# {study.title}",
        "",
        f"**The question:** {QUESTION}",
        "",
        *answer(jobs),
        "",
        f"Generated by `python experiments/label_efficiency/report.py` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(jobs)} jobs' `result.json` "
        "(per job: `results.csv`). Accuracy is measured on "
        f"{evaluated_on(study, jobs)}; mean ± std over seeds {seeds} (n = completed seeds).",
        "",
        "## Commands",
        "",
        "```bash",
        *(sweep_command(s) for s in sweeps),
        command,
        "```",
        "",
        f"Hardware (the machine that ran the sweeps and this report): {hardware()}.",
        "",
        "Wall time: "
        + "; ".join(
            f"`{shown(s)}` {sweep_wall_time_s([j for j in jobs if s in j.output_dir.parents]) / 60:.1f} min"
            for s in sweeps
        )
        + f" (sum of the jobs' own times: {sum(j.wall_time_s for j in jobs) / 60:.1f} min).",
        "",
        "## Accuracy",
        "",
        "| method | "
        + " | ".join(f"{size_label(s)} / class" for s in sizes)
        + " | mean time per job |",
        "| --- | " + " | ".join("---" for _ in sizes) + " | --- |",
    ]
    for arm, by_size in sorted(by_arm.items(), key=lambda item: arm_order(item[0])):
        cells = []
        for size in sizes:
            scores = [j.score for j in by_size.get(size, []) if j.score is not None]
            if scores:
                m, s = mean_std(scores)
                cells.append(f"{m:.4f} ± {s:.4f} (n={len(scores)})")
            else:
                cells.append("n/a")
        times = [j.wall_time_s for size_jobs in by_size.values() for j in size_jobs]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {statistics.fmean(times):.0f} s |")
    lines += [
        "",
        f"Chance (1 / number of classes): {chance:.4f}.",
        "",
        "![accuracy vs labels per class](accuracy_vs_labels.png)",
        "",
        "## Budget per job (from the jobs' configs)",
        "",
        "| method | steps | batch | LR backbone | LR head | LoRA | regulariser | input size |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *budget_rows(by_arm),
        "",
        "The linear probe's head is the logistic-regression fit on frozen features; its one step "
        "runs at learning rate 0 (conf/method/linear_probe.yaml).",
    ]
    trained_steps = {
        cfg["trainer"]["max_steps"]
        for by_size in by_arm.values()
        for cfg in [next(iter(by_size.values()))[0].config]
        if cfg["model"]["lr_head"] > 0
    }
    if len(trained_steps) > 1:
        lines.append(
            "The trained arms have different step budgets (table above): an arm with fewer steps "
            "is budget-limited, not necessarily worse given the same training."
        )
    if failed:
        lines += ["", f"## Failed jobs ({len(failed)} of {len(jobs)})", ""]
        lines += [f"- `{shown(j.output_dir)}`: {j.error or 'no ' + study.metric}" for j in failed]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument(
        "--sweeps", nargs="+", type=Path, help="sweep directories (default: the study's)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: the study's)")
    args = parser.parse_args()
    study = STUDIES[args.study]
    if args.sweeps and not args.out:
        # the study's folder holds the published report of its own sweeps (was: replaced by
        # the report of whatever sweeps were given, without a word)
        raise SystemExit("error: --sweeps of your own need --out <folder> for their report")
    # the user's paths from where they run it; the study's own under the checkout
    given = [s.resolve() for s in args.sweeps] if args.sweeps else None
    sweeps = given or [(ROOT / s).resolve() for s in study.sweeps]
    for missing in [s for s in sweeps if not s.is_dir()]:  # a round not run yet
        print(f"note: {missing} does not exist; the report covers the others")
    sweeps = [s for s in sweeps if s.is_dir()]
    out = args.out.resolve() if args.out else ROOT / study.out_dir

    jobs = []
    for sweep in sweeps:
        if not (sweep / "multirun.yaml").is_file():
            raise SystemExit(f"error: {sweep} is not a multirun sweep directory (no multirun.yaml)")
        jobs += [load_job(sweep / job, result, study.metric) for job, result in read_results(sweep)]
    if not jobs:
        where = ", ".join(map(str, sweeps)) or "the sweep directories (none exists)"
        hint = "" if args.sweeps else "; for sweeps of your own: --sweeps <dir>... --out <folder>"
        raise SystemExit(f"error: no {RESULT_FILE} under {where}{hint}")
    sweeps = [s for s in sweeps if any(s in j.output_dir.parents for j in jobs)]  # with results
    check_one_setup_per_arm(jobs)
    check_one_study(jobs)

    chance = 1 / jobs[0].config["model"]["num_classes"]
    out.mkdir(parents=True, exist_ok=True)
    write_csv(jobs, out / "results.csv")
    plot(summarise(jobs), chance, study, out / "accuracy_vs_labels.png")
    command = report_command(study.key, given, out if args.out else None)
    (out / "README.md").write_text(readme(study, jobs, sweeps, chance, command))
    print(f"wrote {out}/README.md, results.csv, accuracy_vs_labels.png ({len(jobs)} jobs)")


if __name__ == "__main__":
    main()
