"""TensorBoard HParams for a run: its resolved config as hparams, its real scalars as metrics.

Lightning's `log_hyperparams(params, metrics)` writes the metric values as extra points at step 0
(or `hp_metric = -1`). Instead the session records the hparams at the start, and at the end an
experiment naming the metric tags the run logged as scalars (`val/acc_best`, `test/acc`, ...):
the HParams tab reads each metric's value from the run's own scalar series.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from sft.utils.overrides import override_key

HParamValue = int | float | str
METRIC_PREFIXES = ("val/", "test/")


def flatten_hparams(
    cfg: DictConfig | Mapping[str, Any], prefix: str = ""
) -> dict[str, HParamValue]:
    """`{"model.lr_head": 0.001, ...}`: numbers and strings as they are, the rest as strings
    (booleans as "true"/"false": torch's summary would turn them into 1.0/0.0)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, HParamValue] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_hparams(value, f"{name}."))
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            flat[name] = value
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


# What a researcher compares lives in model / data / trainer / seed / tags; these do not.
PLUMBING_GROUPS = ("callbacks", "logger", "paths", "hydra")
PLUMBING_KEYS = ("trainer.plugins", "ckpt_path", "resume", "task_name", "train", "test")


def _is_plumbing(key: str) -> bool:
    last = key.rpartition(".")[2]
    return (
        last.startswith("_")  # _target_, _recursive_, _partial_
        or last.endswith(("_dir", "_path"))  # where things are, not what was run
        or key in PLUMBING_KEYS
        or key.startswith(tuple(f"{k}." for k in PLUMBING_KEYS))
    )


def comparable_hparams(
    cfg: DictConfig | Mapping[str, Any],
    swept: Iterable[str] = (),
    overrides: Iterable[str] = (),
    choices: Mapping[str, str | None] | None = None,
) -> dict[str, HParamValue]:
    """The run's knobs for the HParams tab: the keys of the `swept` overrides, then of the
    other `overrides`, first (as typed, `+`/`++`/`~` dropped), then model, data, optimiser and
    trainer settings in config order; `_target_`s, paths, callbacks and loggers left out,
    unless swept (a sweep over `data.data_dir` or `model.optimizer._target_` listed its jobs
    with the same values). A config group among them is its option in `choices` (the job's
    `hydra.runtime.choices`): `model: my_tiny2` (was: left out, so a sweep over two model
    configs that differ in their `_target_`s listed its jobs with the same values)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    kept = flatten_hparams({k: v for k, v in cfg.items() if k not in PLUMBING_GROUPS})
    given = {*map(override_key, swept), *map(override_key, overrides)}
    chosen = {
        g: o
        for g, o in (choices or {}).items()
        if g in given and g.partition("/")[0] not in PLUMBING_GROUPS
    }
    kept |= flatten_hparams(chosen)
    flat = {k: v for k, v in kept.items() if not _is_plumbing(k)}
    swept_keys = [k for k in dict.fromkeys(map(override_key, swept)) if k in kept]
    first = [*swept_keys, *(k for k in map(override_key, overrides) if k in flat)]
    first = list(dict.fromkeys(first))
    return {k: kept[k] for k in first} | {k: v for k, v in flat.items() if k not in first}


class TensorBoardHParams:
    """One HParams session per run in each TensorBoard logger's directory.

    start() when the run begins; end(metric names) when its metrics are final. A run that
    fails in between keeps its session (status unknown) with the scalars it logged. With a
    sweep directory as logdir, TensorBoard takes the experiment (hparam and metric names) from
    one of the runs: a grid's jobs share them.
    """

    def __init__(
        self,
        loggers: Iterable[Logger],
        cfg: DictConfig | Mapping[str, Any],
        swept: Iterable[str] = (),
        overrides: Iterable[str] = (),
        measured: Mapping[str, HParamValue] | None = None,
        choices: Mapping[str, str | None] | None = None,
    ):
        """`swept`: the keys a sweep varies; `overrides`: the run's command-line overrides.
        Both come first; TensorBoard lists the swept ones first (marked as differing).
        `measured`: facts about the run beside its settings (e.g. trainable parameters);
        `choices`: the options of the config groups chosen (`comparable_hparams`)."""
        self.loggers = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
        self.swept = [override_key(o) for o in swept]
        self.hparams = comparable_hparams(cfg, self.swept, overrides, choices) | dict(
            measured or {}
        )

    def _write(self, summary: Any) -> None:
        for logger in self.loggers:
            # the SummaryWriter's own event file (torch's add_hparams writes to a new sub-run);
            # _get_file_writer() reopens it if Lightning closed it at the end of fit
            writer = logger.experiment._get_file_writer()
            writer.add_summary(summary)
            writer.flush()

    @rank_zero_only
    def start(self) -> None:
        _, session_start, _ = hparams_summaries(self.hparams, {})
        self._write(session_start)

    @rank_zero_only
    def end(self, metric_names: Iterable[str], optimized_metric: str | None = None) -> None:
        """Name the final metrics (validation and test ones, the optimized metric first)."""
        names = sorted(
            {m for m in metric_names if m.startswith(METRIC_PREFIXES) or m == optimized_metric}
        )
        if optimized_metric in names:
            names.remove(optimized_metric)
            names.insert(0, optimized_metric)
        # only the metric names are used: the values come from the run's scalars
        experiment, _, session_end = hparams_summaries(self.hparams, dict.fromkeys(names, 0.0))
        self._write(mark_differing(experiment, set(self.swept)))
        self._write(session_end)
        for logger in self.loggers:
            # the run's last write: closed as Lightning's finalize had (was: a writer thread
            # left per run, in a notebook or an in-process sweep that trains many)
            logger.experiment.close()


def mark_differing(experiment: Any, names: set[str]) -> Any:
    """The experiment summary with `names` marked as hparams that differ between runs:
    TensorBoard's HParams tab lists those first, then the rest by name (torch's summary writer
    leaves the mark unset, and TensorBoard only sets it when it builds the experiment itself)."""
    if not names:
        return experiment
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        if info.name in names:
            info.differs = True
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment
