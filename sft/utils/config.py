"""Config helpers: the resolver the configs use, the running job's overrides, printing and
saving the resolved config."""

import contextlib
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import rich
import rich.syntax
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's, without loading it
from omegaconf import DictConfig, ListConfig, OmegaConf

from sft.utils.io import atomic_write_text

# The checkout (holding pyproject.toml, conf/, sft/, tests/) when sft runs from one.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The configs ship inside the package (sft/conf: in a checkout a link to the top-level conf/).
# An absolute path: `sft-train` (a console script) and `python -m sft.train` find the same configs.
CONF_DIR = str(Path(__file__).parents[1] / "conf")


def work_root() -> str:
    """Where run directories and caches go by default: the checkout when sft runs from one
    (make targets, tests), else the current directory (an installed package)."""
    if (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "conf").is_dir():
        return str(PROJECT_ROOT)
    return str(Path.cwd())


def register_resolvers() -> None:
    """Register the resolvers sft's configs use; the entry points call it before Hydra composes
    (and so must code that composes sft's configs itself). Idempotent.

    `${sft_root:}` (conf/paths): the checkout, or the current directory of an installed package.
    `${sft_config_subdir:<run dir>}` (conf/hydra): see `config_subdir`.
    `${sft_direction:<metric>}` (hparams_search): minimize for a loss, else maximize.
    `${sft_config_groups:<choices>}` (conf/hydra, --help): see `config_groups`.
    `${sft_product:<a>,<b>}` (conf/experiment/_fixed_steps): a * b.
    `${sft_ranked_by:<monitor>}` (conf/callbacks/early_stopping): see `ranked_by`.
    """
    if not OmegaConf.has_resolver("sft_root"):
        OmegaConf.register_new_resolver("sft_root", work_root)
    if not OmegaConf.has_resolver("sft_config_subdir"):
        # cached: one answer per job's config (Hydra saves there, then it would say "resumed")
        OmegaConf.register_new_resolver("sft_config_subdir", config_subdir, use_cache=True)
    if not OmegaConf.has_resolver("sft_config_groups"):
        OmegaConf.register_new_resolver("sft_config_groups", config_groups)
    if not OmegaConf.has_resolver("sft_env"):
        # conf/paths: an environment variable set empty is unset, as the shell's ${VAR:-default}
        # (oc.env gave '', and `SFT_OUTPUT_DIR= sft-train` wrote to /train, /debug, /tokens);
        # `~` is the home folder, as the shell's (a quoted '~/out' made a folder named ~)
        OmegaConf.register_new_resolver(
            "sft_env",
            lambda name, default: os.path.expanduser(os.environ.get(name, "").strip()) or default,
        )
    if not OmegaConf.has_resolver("sft_mode"):
        # a checkpoint's or early stopping's mode follows its monitor (conf/callbacks): a
        # `monitor=val/loss` kept `mode: max`, and the worst loss was the best checkpoint
        OmegaConf.register_new_resolver("sft_mode", lambda metric: metric_mode(str(metric)))
    if not OmegaConf.has_resolver("sft_ranked_by"):
        # conf/callbacks/early_stopping: the validation metric the best checkpoint is ranked
        # by, else val/acc (a checkpoint callback without a metric, or ranking by step)
        OmegaConf.register_new_resolver("sft_ranked_by", ranked_by)
    if not OmegaConf.has_resolver("sft_product"):
        # conf/experiment/_fixed_steps: an optimizer step's batches (Lightning's validation
        # interval counts batches) times the steps
        OmegaConf.register_new_resolver("sft_product", lambda *values: math.prod(values))
    if not OmegaConf.has_resolver("sft_direction"):
        OmegaConf.register_new_resolver(
            "sft_direction", lambda metric: f"{metric_mode(str(metric))}imize"
        )


def config_groups(choices: Mapping[str, Any] | None = None, config_name: str = "train") -> str:
    """`group: option, ...` for each config group, as Hydra's --help lists them
    ($APP_CONFIG_GROUPS), without the `_*.yaml` bases other options include (`data: _text, ...`
    offered a base that is not a choice: choosing it is an error). `choices`: the command's
    (hydra.runtime.choices), whose groups alone are listed for the commands that take no other
    (sft-predict listed sft-train's, each of which it refuses); sft-train's are all (a group of
    the user's --config-dir is added with +group=)."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():  # the config printed outside Hydra
        return ""
    hydra = GlobalHydra.instance().hydra
    # Hydra's own groups (hydra/...) are --hydra-help's, as in Hydra's page
    groups = [
        g
        for g in hydra.list_all_config_groups()
        if g.partition("/")[0] != "hydra"
        and (choices is None or config_name == "train" or g in choices)
    ]
    options = {g: hydra.config_loader.get_group_options(g) for g in groups}
    return "\n".join(
        f"{group}: {', '.join(o for o in options[group] if not o.startswith('_'))}"
        for group in sorted(groups)
    )


def is_validation_metric(monitor: Any) -> bool:
    """Whether a callback's `monitor` names a metric validation logs: any name but a training
    metric's (sft's model's `train/...`, LearningRateMonitor's `lr-...`) or the step and epoch
    ModelCheckpoint may rank by (null: none)."""
    if not isinstance(monitor, str) or monitor in ("step", "epoch"):
        return False
    return not monitor.startswith(("train/", "lr-"))


def ranked_by(monitor: Any) -> str:
    """`monitor` where it names a validation metric, else val/acc: what early stopping watches
    beside a checkpoint callback ranking by `monitor`."""
    return monitor if is_validation_metric(monitor) else "val/acc"


def metric_mode(metric: str) -> str:
    """ "min" for a loss or an error (its name says so), "max" for everything else: how
    checkpoints, early stopping, sweeps, Optuna's direction and sft-compare rank by a metric
    unless told otherwise (was: val/ece ranked highest first)."""
    name = metric.lower()
    # `ece`: model.metrics' expected calibration error, as a word (not "piece")
    lower = "loss" in name or "error" in name or "ece" in re.split(r"[^a-z0-9]+", name)
    return "min" if lower else "max"


def direction_mode(direction: str) -> str | None:
    """ "max" or "min" for a sweeper's direction, "maximize" or "minimize" (the inverse of
    `${sft_direction:}`); None for anything else."""
    return {"maximize": "max", "minimize": "min"}.get(str(direction))


def config_subdir(run_dir: str) -> str:
    """Where Hydra saves a run's config in `run_dir` (`${sft_config_subdir:...}`, conf/hydra):
    `.hydra` for a new run; `.hydra/resumed_<time>` when the directory holds a run's config
    already (a resumed run, a sweep's job re-run in its directory), so that record is kept."""
    if (Path(run_dir) / ".hydra" / "config.yaml").is_file():
        return f".hydra/resumed_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return ".hydra"


# Hydra's record of a multirun's config in its sweep directory (basic sweeper and ours alike)
MULTIRUN_RECORD = "multirun.yaml"


def as_written(overrides: Sequence[str]) -> list[str]:
    """Override strings of a Hydra config node as written: iterating the node would resolve an
    interpolation in them (`model.lr_head=${model.lr_backbone}`, or a failing `${oc.env:X}`)."""
    if isinstance(overrides, ListConfig):
        return [str(o) for o in OmegaConf.to_container(overrides, resolve=False)]
    return list(overrides)


# the overrides that say where a run starts from, which its resumption leaves out
RUN_START = ("resume=", "ckpt_path=")


def hydra_quoted(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar, which reads it back as it is
    (escapes only its quotes, and the backslashes before them or the end; json.dumps escaped non-ASCII
    letters as \\u..., which Hydra keeps as written)."""
    escaped = re.sub(
        r"(\\*)('|$)", lambda m: m.group(1) * 2 + "\\" * len(m.group(2)) + m.group(2), value
    )
    return f"'{escaped}'"


def hydra_path(value: str) -> str:
    """A path as an override value of a printed command: as it is where Hydra's grammar reads
    it back so, else quoted (`resume=`, `hydra.sweep.dir=` of a folder with a space, `=`, `,`,
    `~` or a non-ASCII letter failed to parse)."""
    try:
        (read,) = OverridesParser.create().parse_overrides([f"key={value}"])
        if read.value() == value:
            return value
    except HydraException:
        pass
    return hydra_quoted(value)


def group_choice(group: str) -> str | None:
    """The option of config group `group` the running Hydra job chose; None outside one."""
    return group_choices().get(group)


def group_choices() -> dict[str, str | None]:
    """{group: option} of each config group the running Hydra job chose; {} outside one."""
    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra job, as written; [] outside one (a
    config composed by hand)."""
    try:
        return as_written(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def config_dir_arguments() -> list[str]:
    """`--config-dir <dir>` when the running Hydra job was given one (the user's own configs),
    for the commands sft prints to run it again (they failed without it: "unknown option");
    [] otherwise."""
    try:
        sources = HydraConfig.get().runtime.config_sources
    except ValueError:
        return []
    return [a for s in sources if s.provider == "command-line" for a in ("--config-dir", s.path)]


def swept_keys() -> list[str]:
    """In a multirun job, the keys the sweep varies: the Optuna sweeper's `params`, and the
    sweep overrides (`a=1,2`) of the command line that Hydra's basic sweeper saved in
    `<sweep dir>/multirun.yaml`; [] in a single run."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return []
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return []
    keys = list((hydra_cfg.sweeper.get("params") or {}).keys())
    multirun = Path(hydra_cfg.sweep.dir) / MULTIRUN_RECORD
    if multirun.is_file():
        task = OmegaConf.load(multirun).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides(as_written(task))
        keys += [o.key_or_group for o in parsed if o.is_sweep_override()]
    return keys


CONFIG_FILE = "config_resolved.yaml"  # each run's resolved config, in its directory


@rank_zero_only
def print_and_save_config(cfg: DictConfig, output_dir: str | Path) -> None:
    """Print the resolved config and write it as `config_resolved.yaml` in the run directory;
    a resumed run's (a sweep job's re-run), beside its Hydra config in `.hydra/resumed_<time>/`,
    so that the first part's is kept (was: written over, the first settings lost).

    Hydra's own `.hydra/config.yaml` keeps interpolations; this file records the values used.
    """
    text = OmegaConf.to_yaml(cfg, resolve=True)
    rich.print(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    folder = Path(output_dir)
    if (folder / CONFIG_FILE).is_file() and (subdir := _resumed_config_subdir()) is not None:
        folder = folder / subdir
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CONFIG_FILE, text)  # whole or not there


def _resumed_config_subdir() -> str | None:
    """Where Hydra saves this run's config when it continues a run's directory
    (`.hydra/resumed_<time>`, config_subdir); None for a new run, or outside Hydra."""
    try:
        subdir = HydraConfig.get().output_subdir
    except ValueError:
        return None
    return subdir if subdir and Path(subdir).parent == Path(".hydra") else None


@contextlib.contextmanager
def hydra_config_of(cfg: DictConfig) -> Iterator[None]:
    """HydraConfig set to `cfg`'s `hydra` node meanwhile, so that `${hydra:...}` resolves as in
    the job (or the printing) it is composed for; the one before is put back."""
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(cfg)
    try:
        yield
    finally:
        hydra_config.cfg = before
