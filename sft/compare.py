"""sft-compare: a table and validation curves of the runs under one or more directories.

sft-compare outputs/train/cifar10_resnet18/multiruns/2026-11-23_10-00-00
sft-compare outputs/train/a outputs/train/b --metric val/loss --csv runs.csv   # losses: lowest first

A run is a directory of TensorBoard event files (`<run dir>/tensorboard/` for sft-train runs); its
label is what sets it apart from the others: the Hydra overrides (`<run dir>/.hydra/overrides.yaml`)
that not every run shares, else its path. A run directory of sft-train without event files
is a row with its status when it failed (before its logger started), else (`logger=csv`) named as
left out.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import IO

from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sft import entry_points
from sft.errors import SFTError, report_user_errors
from sft.runs.result import (
    RESULT_FILE,
    UNFINISHED,
    RunResult,
    override_settings,
    run_overrides,
    started_overrides,
)
from sft.utils.config import metric_mode
from sft.utils.io import atomic_write, check_not_a_folder, check_not_written
from sft.utils.logs import first_few
from sft.utils.suggest import nearest_names

log = logging.getLogger(__name__)

# Keep every scalar and one item of anything else (images, histograms): memory stays small.
# Reading still parses every event; without TensorFlow, tensorboard checks record CRCs in pure
# Python, which is most of the ~5 s CPU a 4.6 MB file (80k scalars, 40 histograms) takes.
SIZE_GUIDANCE = {
    "scalars": 0,  # 0: every point
    "images": 1,
    "audio": 1,
    "histograms": 1,
    "compressedHistograms": 1,
    "tensors": 1,
}

Series = list[tuple[int, float]]


@dataclass
class Run:
    """One run: where its events are, its label and its scalar series (tag -> [(step, value)])."""

    path: Path
    overrides: list[str]
    scalars: dict[str, Series]
    result: RunResult | None = None  # the run's result.json, when it wrote one
    label: str = ""
    task: str = "train"  # the Hydra task that wrote it: train (debug=*: debug), eval

    def last(self, tag: str) -> float | None:
        series = self.scalars.get(tag)
        return series[-1][1] if series else None

    def best(self, tag: str, mode: str) -> float | None:
        values = [v for _, v in self.scalars.get(tag, []) if not math.isnan(v)]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)

    @property
    def last_logged_step(self) -> int | None:
        """The highest step of a train/ or val/ scalar."""
        steps = [
            s
            for tag, series in self.scalars.items()
            if tag.startswith(("train/", "val/"))
            for s, _ in series
        ]
        return max(steps) if steps else None

    @property
    def steps(self) -> int | None:
        """Optimizer steps trained: result.json's count, else from the logged steps (Lightning
        logs what it has after step N, its train/ values, a validation, the epoch's means, at
        index N - 1, so the first step's loss is at 0)."""
        if self.result is not None and self.result.steps is not None:
            return self.result.steps
        last = self.last_logged_step
        return None if last is None else last + 1

    @property
    def epochs(self) -> int | None:
        """Epochs completed: result.json's count, else the epoch-end means of the training loss
        it logged, one per completed epoch (was: Lightning's 0-based `epoch` scalar + 1, which
        counted the epoch under way too); None for a run that logged neither."""
        if self.result is not None:
            return self.result.epochs
        # a step logged twice (a resumed run's restart) is one epoch end
        ends = {s for s, _ in self.scalars.get(EPOCH_END_LOSS, [])}
        return len(ends) if ends or "epoch" in self.scalars else None


# what SFTClassifier's `train/loss` (logged on_epoch) writes at each epoch's end
EPOCH_END_LOSS = "train/loss_epoch"


class _TensorBoardLines(logging.Filter):
    """What TensorBoard's loader says while it reads: its debug lines are dropped but for the
    damaged records they name (`damaged`: their event files), which it skips without a warning
    (a truncated file's curves ended there, without a word); and a resumed run's "out of
    order event.step" warning is dropped (TensorBoard drops the points logged after the
    checkpoint's step, as it should, and warned of "a TensorFlow restart" for each such run)."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            if str(record.msg).startswith("Truncated record in") and record.args:
                self.damaged.append(str(record.args[0]))
            return False
        return "out of order event.step" not in record.getMessage()


def load_scalars(event_dir: Path) -> dict[str, Series]:
    """Every scalar series in the event files of `event_dir`, in step order."""
    # late import: tensorboard's loader is slow to import and only needed here
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir), size_guidance=SIZE_GUIDANCE)
    tensorboard_log = logging.getLogger("tensorboard")
    lines, level = _TensorBoardLines(), tensorboard_log.level
    tensorboard_log.addFilter(lines)
    tensorboard_log.setLevel(logging.DEBUG)
    try:
        accumulator.Reload()
    finally:
        tensorboard_log.removeFilter(lines)
        tensorboard_log.setLevel(level)
    for path in dict.fromkeys(lines.damaged):
        log.warning(
            f"warning: {path} ends in a damaged record (a truncated or corrupted event file): "
            "its curves end before it"
        )
    scalars: dict[str, Series] = {}
    for tag in accumulator.Tags()["scalars"]:
        series = [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
        scalars[tag] = sorted(series, key=lambda point: point[0])
    return scalars


def _run_dir(event_dir: Path, root: Path) -> Path:
    """The run directory of an event directory: the nearest ancestor holding `.hydra/` (searched
    up to `root`, and always the parent: PATH may be a run's tensorboard/ folder)."""
    above = [p for p in event_dir.parent.parents if p == root or root in p.parents]
    for candidate in (event_dir, event_dir.parent, *above):
        if (candidate / ".hydra").is_dir():
            return candidate
    return event_dir.parent if event_dir.name == "tensorboard" else event_dir


def find_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[Path], list[Path]]:
    """Every run under `paths` (directories searched recursively, or event files); the event
    folders left out because they hold no scalars (a run that failed before logging); and the
    run directories left out because they hold no TensorBoard events (e.g. logger=csv)."""
    runs: list[Run] = []
    empty: list[Path] = []
    seen: set[Path] = set()
    with_events: set[Path] = set()
    run_dirs: set[Path] = set()
    for raw in paths:
        root = Path(raw).resolve()
        if not root.exists():
            raise SFTError(f"{raw}: no such file or directory")
        if root.is_file() and "tfevents" not in root.name:  # was: "no TensorBoard runs under"
            raise SFTError(
                f"{raw} is a file: give run or sweep directories (here {root.parent}), or "
                "TensorBoard event files"
            )
        files = [root] if root.is_file() else list(_files_under(root))
        # sft-train's runs: each wrote its result.json (one run reached through a link and
        # directly is one run)
        run_dirs |= {f.parent.resolve() for f in files if f.name == RESULT_FILE}
        event_dirs = sorted({f.parent for f in files if "tfevents" in f.name})
        for event_dir in event_dirs:
            run_dir = _run_dir(event_dir, root)
            with_events.add(run_dir.resolve())
            if event_dir.resolve() in seen:  # also reached through a link
                continue
            seen.add(event_dir.resolve())
            scalars = load_scalars(event_dir)
            result_file = run_dir / RESULT_FILE
            if not scalars and not result_file.is_file():
                empty.append(event_dir)
                continue
            # a run without scalars but with a result (a job that failed early) is listed with
            # its status
            result = _read_result(result_file) if result_file.is_file() else None
            run = Run(event_dir, _overrides(run_dir, result), scalars, result)
            run.task = _task(run_dir)
            runs.append(run)
    no_events = []
    for run_dir in sorted(run_dirs - with_events):
        result = _read_result(run_dir / RESULT_FILE)
        # failed before its logger started (not a logger=csv run that failed after logging)
        if result is not None and result.status in UNFINISHED and not result.metrics:
            runs.append(Run(run_dir, _overrides(run_dir, result), {}, result))
        else:
            no_events.append(run_dir)
    if not any(run.scalars for run in runs):
        # each failed run's error: the table it would be in has no metric to show (was: no word)
        failed = [
            f"{run.path}: {run.result.error}"
            for run in runs
            if run.result is not None and run.result.status in UNFINISHED
        ]
        why = [_left_out(failed, "ended before logging", sep="; ")] if failed else []
        if no_events:
            why.append(_left_out(no_events, "without TensorBoard events"))
        hint = f" ({'; '.join(why)})" if why else ""
        raise SFTError(f"no TensorBoard runs with scalars under {', '.join(map(str, paths))}{hint}")
    _label_runs(runs)
    return runs, empty, no_events


def _files_under(root: Path) -> Iterator[Path]:
    """The files under `root`, through linked folders too (a folder of links to the runs to
    compare: Path.rglob passed over them without a word), each folder once; a link to a folder
    above it (`ln -s .. up`) is not followed. Not in hidden folders: a re-run job's earlier
    logs (.replaced_logs), .hydra, ..."""
    visited: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders.clear()
            continue
        visited.add(real)
        subfolders[:] = sorted(
            d
            for d in subfolders
            if not d.startswith(".") and not _links_above(Path(folder) / d, real)
        )
        yield from (Path(folder) / n for n in sorted(names) if not n.startswith("."))


def _links_above(path: Path, folder: str) -> bool:
    """Whether `path` is a link to `folder` (a real path) or a folder above it."""
    if not path.is_symlink():
        return False
    target = os.path.realpath(path)
    return folder == target or folder.startswith(target.rstrip(os.sep) + os.sep)


def _overrides(run_dir: Path, result: RunResult | None) -> list[str]:
    """The run's Hydra overrides as result.json has them: without a sweeper's bookkeeping
    (Optuna's pruning callback, whose storage differs between studies), and of its last part
    when it was resumed (the rest of the run had that command's settings; .hydra/overrides.yaml
    is the first part's), without the `resume=` that continued it."""
    if result is not None:
        overrides = result.overrides
    else:  # a run from before result.json, or whose record is not readable
        try:
            overrides = started_overrides(run_dir) or []
        except SFTError as e:  # (was: a traceback)
            log.warning(f"warning: {e}: the run is labelled without its overrides")
            overrides = []
    return [o for o in run_overrides([str(o) for o in overrides]) if not o.startswith("resume=")]


def _task(run_dir: Path) -> str:
    """`task_name` of the run's Hydra config (train, eval); train when it has none."""
    config = run_dir / ".hydra" / "config.yaml"
    try:
        return str(OmegaConf.load(config).get("task_name") or "train")
    except Exception:  # no config, or not readable: compared as a training run
        return "train"


def _left_out(paths: list[Path] | list[str], why: str, sep: str = ", ") -> str:
    return f"{len(paths)} run{'s' if len(paths) > 1 else ''} {why}: {first_few(paths, 3, sep)}"


def _read_result(path: Path) -> RunResult | None:
    """The run's result.json, or None with a warning when it is not readable (hand-edited):
    the run is still compared by its TensorBoard scalars."""
    try:
        return RunResult.read(path)
    except SFTError as e:
        log.warning(f"warning: {e}: its status and epochs are left out")
        return None


def _label_runs(runs: list[Run]) -> None:
    """Label each run by its overrides that not all runs share; by its path where that leaves
    nothing or two runs the same."""
    # by what the overrides set (was: as written: `~key` and `~key=null` set runs apart, and a
    # resumed run's key given again showed twice), labelled by each setting's last override
    settings = [override_settings(r.overrides) for r in runs]
    unset = (object(), "")
    shared = {
        key
        for key, (value, _) in settings[0].items()
        if all(s.get(key, unset)[0] == value for s in settings)
    }  # all of them, for one run
    for run, setting in zip(runs, settings, strict=True):
        run.label = " ".join(line for key, (_, line) in setting.items() if key not in shared)
    labels = [r.label for r in runs]
    base = _common_base([r.path for r in runs])
    for run in runs:
        if not run.label or labels.count(run.label) > 1:
            relative = run.path.relative_to(base)
            if relative.name == "tensorboard" and relative.parent != Path():
                relative = relative.parent  # the run directory, not its tensorboard/ folder
            run.label = f"{relative} {run.label}".strip()


def _common_base(paths: list[Path]) -> Path:
    """The deepest directory above all `paths`, so that each keeps at least its own name."""
    common = paths[0].parent.parent if paths[0].name == "tensorboard" else paths[0].parent
    for path in paths[1:]:
        while common not in path.parents:
            common = common.parent
    return common


@dataclass
class Row:
    """One line of the table; the CSV has these columns in this order."""

    label: str
    best: float | None
    last: float | None
    val_acc_best: float | None
    test_acc: float | None
    steps: int | None
    epochs: int | None
    status: str | None
    path: str


def summarize(runs: list[Run], metric: str, mode: str) -> list[Row]:
    """One row per run, sorted by the best value of `metric` (runs without it last)."""
    if not any(metric in r.scalars for r in runs):
        tags = sorted({t for r in runs for t in r.scalars})
        # e.g. sft-eval's runs given alone: test/... only (was: no word of --metric)
        alike = [t for t in tags if t.rpartition("/")[2] == metric.rpartition("/")[2]]
        # a mistyped one first (was: val/acc_bset -> e.g. train/acc, the first tag)
        close = nearest_names(metric, tags, n=1)
        example = (close or alike or [t for t in tags if t != "epoch"] or tags)[0]
        raise SFTError(
            f"no run logged '{metric}'; scalars found: {', '.join(tags)}: compare on one of "
            f"them with --metric (e.g. --metric {example})"
        )
    rows = [
        Row(
            label=r.label,
            best=r.best(metric, mode),
            last=r.last(metric),
            val_acc_best=r.last("val/acc_best"),
            test_acc=r.last("test/acc"),
            steps=r.steps,
            epochs=r.epochs,
            status=r.result.status if r.result is not None else None,
            path=str(r.path),
        )
        for r in runs
    ]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda row: (row.best is None, sign * (row.best or 0.0)))


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_table(rows: list[Row], metric: str, mode: str, console: Console) -> None:
    table = Table(title=f"runs by {metric} ({mode})")
    table.add_column("run", overflow="fold")
    columns = [f"{metric} best", f"{metric} last", "val/acc_best", "test/acc", "steps", "epochs"]
    for name in columns:
        table.add_column(name, justify="right")
    with_status = any(row.status for row in rows)
    if with_status:
        table.add_column("status")
    for row in rows:
        cells = [row.best, row.last, row.val_acc_best, row.test_acc, row.steps, row.epochs]
        status = [row.status or "-"] if with_status else []
        # escaped: rich would read an override's list value `[a,b]` as markup and drop it
        table.add_row(escape(row.label), *map(_fmt, cells), *map(escape, status))
    console.print(table)


def write_csv(rows: list[Row], metric: str, path: Path) -> None:
    """The table with full-precision values, the runs' event directories and empty cells for
    missing values."""
    header = ["run", f"{metric} best", f"{metric} last", "val/acc_best", "test/acc", "steps"]
    header += ["epochs", "status", "path"]

    def write(f: IO) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if value is None else value for value in astuple(row)])

    try:
        atomic_write(path, write, text=True)
    except OSError as exc:  # a folder that cannot be written (was: a traceback)
        raise SFTError(f"{path} could not be written: {exc.strerror or exc}") from exc


WRITER = "sft-compare"


def check_default_png(path: Path) -> None:
    """The default compare.png is sft-compare's own, written again on each call; a file of that
    name it did not write (it says so in the PNG) is not replaced (was: without a word)."""
    if not path.exists():
        return
    try:
        from PIL import Image

        with Image.open(path) as image:
            ours = image.info.get("Software") == WRITER
    except Exception:  # not an image at all
        ours = False
    if not ours:
        raise SFTError(
            f"{path} exists and sft-compare did not write it (or an earlier version did, "
            "without saying so): give --png <file>, or remove it"
        )


def plot_curves(runs: list[Run], metric: str, path: Path) -> None:
    """`metric` (and val/loss, when logged and not the metric) against the step, one line per run."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    legends = legend_labels([run.label for run in runs])
    tags = [metric]
    if metric != "val/loss" and any("val/loss" in r.scalars for r in runs):
        tags.append("val/loss")
    fig, axes = plt.subplots(1, len(tags), figsize=(6.5 * len(tags), 4.5), squeeze=False)
    for ax, tag in zip(axes[0], tags, strict=True):
        for i, (run, legend) in enumerate(zip(runs, legends, strict=True)):
            series = run.scalars.get(tag)
            if series:
                steps, values = zip(*series, strict=True)
                ax.plot(
                    steps,
                    values,
                    marker="o" if len(series) < 30 else None,
                    ms=3,
                    # `$` as text, not math (a `$$` in an override raised as the PNG was saved)
                    label=legend.replace("$", r"\$"),
                    color=f"C{i % 10}",  # a run keeps its colour in every panel
                )
        ax.set(title=tag, xlabel="step", ylabel=tag)
        ax.grid(alpha=0.3)
    # every run's line, from whichever panel has it (a run without the metric's curve: it was
    # missing from the legend, or matplotlib warned of a legend without artists)
    lines = {}
    for ax in axes[0]:
        for line in ax.get_lines():
            lines.setdefault(line.get_label(), line)
    if lines:
        axes[0][0].legend(list(lines.values()), list(lines), fontsize="small")
    fig.tight_layout()
    kind = path.suffix[1:].lower()
    # a PNG says who wrote it: the default compare.png is replaced only when it is sft-compare's
    metadata = {"Software": WRITER} if kind == "png" else None
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=110, metadata=metadata))
    except OSError as exc:  # a folder that cannot be written (/proc, permissions)
        raise SFTError(f"{path} could not be written: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


def legend_labels(labels: Sequence[str], width: int = 60) -> list[str]:
    """The runs' labels cut to about `width` for the legend (the table has them whole), each
    entry still its own: labels that differ only in the middle, which the cut drops, keep the
    overrides that set them apart, the shared ones elided; alike even so, each gets its row
    number in the table."""
    short = [_shorten(label, width) for label in labels]
    for text in {s for s in short if short.count(s) > 1}:
        alike = [i for i, s in enumerate(short) if s == text]
        shared = set.intersection(*(set(labels[i].split()) for i in alike))
        for i in alike:
            elided = " ".join(t if t not in shared else "..." for t in labels[i].split())
            short[i] = _shorten(elided, width)
            short[i] = re.sub(r"\.\.\.( \.\.\.)+", "...", short[i])  # one mark per elided run
    return [f"{s} [{i + 1}]" if short.count(s) > 1 else s for i, s in enumerate(short)]


def _shorten(label: str, width: int = 60) -> str:
    """`label` cut to `width` in the middle: both ends, where runs usually differ, stay."""
    if len(label) <= width:
        return label
    head = (width - 3) // 2
    return f"{label[:head]}...{label[-(width - 3 - head) :]}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sft-compare",
        description="Compare the runs under PATH...: a table sorted by a metric and a PNG of "
        "validation curves.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run, sweep or outputs directory")
    parser.add_argument("--metric", default="val/acc", help="scalar to sort by (default: val/acc)")
    parser.add_argument(
        "--mode",
        choices=["max", "min"],
        default=None,
        help="best = max or min (default: min for a loss, else max)",
    )
    parser.add_argument(
        "--png", type=Path, help="curves image (default: compare.png in the first PATH)"
    )
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    return parser.parse_args(argv)


def check_image_name(path: Path) -> None:
    """`--png` names a format matplotlib writes by its extension: without one, savefig would add
    `.png` and write (over) another file than the one checked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if path.suffix.lower().lstrip(".") not in FigureCanvasAgg.get_supported_filetypes():
        raise SFTError(
            f"--png {path}: expected an image file name, such as curves.png (.png, .pdf, .svg "
            "or another format matplotlib writes)"
        )


def compare(args: argparse.Namespace, console: Console) -> list[Row]:
    if args.png is not None:
        check_image_name(args.png)
    # files the user named are never replaced (compare.png, the default, is sft-compare's own)
    for setting, given, example in (
        ("--csv", args.csv, "runs.csv"),
        ("--png", args.png, "compare.png"),
    ):
        if given is not None:
            check_not_a_folder(given, f"{setting} ", example)
            check_not_written(given, f"{setting} path")
    runs, empty, no_events = find_runs(args.paths)
    evaluations = [run for run in runs if run.task == "eval"]
    if evaluations and len(evaluations) < len(runs):
        # sft-eval's scores of a checkpoint (on other data, perhaps) ranked among training runs,
        # with a step and an epoch of their own (`sft-compare outputs`)
        runs = [run for run in runs if run.task != "eval"]
        _label_runs(runs)  # by what sets them apart from each other
        left_out = _left_out([_run_dir(r.path, r.path) for r in evaluations], "of sft-eval")
        console.print(escape(f"left out: {left_out} (give their folder alone to compare them)"))
    args.mode = args.mode or metric_mode(args.metric)
    rows = summarize(runs, args.metric, args.mode)
    print_table(rows, args.metric, args.mode, console)
    if empty:
        console.print(
            escape(f"left out: {_left_out(empty, 'that logged no scalars (failed early?)')}")
        )
    if no_events:
        why = "without TensorBoard events (logger=csv, debug=fdr, or failed before logging)"
        console.print(escape(f"left out: {_left_out(no_events, why)}"))
    order = {row.path: i for i, row in enumerate(rows)}
    runs.sort(key=lambda run: order[str(run.path)])  # the legend in the table's order
    first = Path(args.paths[0])
    # an event file's: its folder (was: the current folder, where a compare.png of the user's
    # was written over)
    png = args.png or (first if first.is_dir() else first.parent) / "compare.png"
    if args.png is None:
        check_default_png(png)
    if args.csv is not None and args.csv.resolve() == png.resolve():
        # (was: the table written, then the curves over it, or the reverse)
        raise SFTError(f"--csv {args.csv} is where the curves go too: give another --csv")
    if args.csv:
        write_csv(rows, args.metric, args.csv)
    try:
        plot_curves(runs, args.metric, png)
    except BaseException:
        if args.csv:  # new (checked above): the command leaves nothing half done
            args.csv.unlink(missing_ok=True)
        raise
    console.print(escape(f"curves: {png}"))
    if args.csv:
        console.print(escape(f"table: {args.csv}"))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # not a terminal (a pipe, a log): wide enough that labels are not cut
    console = Console(width=None if sys.stdout.isatty() else 200)
    report_user_errors(lambda: compare(args, console))


if __name__ == "__main__":
    entry_points.run(main)
