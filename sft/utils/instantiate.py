"""Build the trainer, and the lists of callbacks and loggers from their config groups (one entry
per key)."""

import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from sft.errors import SFTError
from sft.utils.config_types import check_config_types
from sft.utils.logs import ignore_lightning_internal_warnings
from sft.utils.sync_norms import norm_sync_as_asked

log = logging.getLogger(__name__)


def _instantiate_entries(
    cfg: DictConfig | None, group: str, chosen: str | None = None, typed: Collection[str] = ()
) -> list:
    # Entries set to null (or empty) are switched-off slots, e.g. `callbacks.early_stopping=null`.
    # `chosen`: the group's option the command line chose instead of its default; an entry
    # without a _target_ that the command line (`typed`: the keys it sets) does not set holds
    # settings another config (an experiment's) gives an entry that option leaves out
    if not cfg:
        return []
    for name, entry in cfg.items():
        where = f"{group}.{name}"
        if entry is not None and not isinstance(entry, Mapping):
            raise SFTError(
                f"{where}={entry}: expected a config with a _target_ (e.g. +{where}._target_="
                f"<module.Class>), or null to switch it off"
            )
        if entry and "_target_" not in entry:
            keys = ", ".join(map(str, entry))
            if chosen and not any(k == where or k.startswith(f"{where}.") for k in typed):
                # (was: an error naming settings the user never wrote, for callbacks=none or
                # callbacks=model_checkpoint with experiment=cifar10_resnet18)
                log.info(f"{group}={chosen}: {where} ({keys}, set by another config) is left out")
                continue
            # was: left out without a word, a misspelt `_tagret_` included
            raise SFTError(
                f"{where}: no _target_ (it sets {keys}): name the class to build in "
                f"{where}._target_, or set {where}=null to switch it off"
            )
        check_config_types(entry, where)  # its _target_ importable, its keys ones it takes
    built = []
    for name, entry in cfg.items():
        if entry and "_target_" in entry:
            # a value Lightning's callbacks refuse (save_top_k=-2, mode=maximum): was Hydra's
            # block around Lightning's message
            with lightning_refusals(setting=f"{group}.{name}"):
                made = instantiate(entry)
            _check_kind(made, group, f"{group}.{name}", entry["_target_"])
            built.append(made)
    return built


# what each group's entries must be, and where the other kind goes
_GROUP_KINDS = {
    "callbacks": (Callback, "a Lightning Callback", "+callbacks.<name>="),
    "logger": (Logger, "a Lightning Logger", "+logger.<name>="),
}


def _check_kind(made: Any, group: str, where: str, target: str) -> None:
    """SFTError when `made` is not what the Trainer takes in `group` (was: an AttributeError
    traceback from inside fit, 'JsonLogger' object has no attribute 'on_exception', for a logger
    among the callbacks)."""
    kind, named, _ = _GROUP_KINDS[group]
    if isinstance(made, kind):
        return
    other = [
        f"{name}, which goes in {to}{{...}}"
        for g, (k, name, to) in _GROUP_KINDS.items()
        if g != group and isinstance(made, k)
    ]
    name = type(made).__qualname__
    what = other[0] if other else f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"
    raise SFTError(
        f"{where}._target_={target}: the trainer's {group} are each {named}, and this builds {what}"
    )


def instantiate_callbacks(
    cfg: DictConfig | None,
    progress_bar: bool = True,
    validates: bool = True,
    logs: bool = True,
    chosen: str | None = None,
    typed: Collection[str] = (),
) -> list[Callback]:
    """The configured callbacks; without progress bars when `trainer.enable_progress_bar=false`
    (Lightning refuses a progress-bar callback then, and plain logs are what the user asked for),
    when no validation runs (`validates` false), without early stopping on a validation
    metric: Lightning raises at the first epoch's end for the missing metric; and without a
    logger (`~logger`, `logs` false), without the learning-rate monitor, which Lightning
    refuses then (was: "Cannot use LearningRateMonitor callback with Trainer that has no
    logger", which did not say what to do). `chosen`: the `callbacks` option chosen instead of
    the default, `typed`: the keys the command line sets (`_instantiate_entries`)."""
    callbacks = _instantiate_entries(cfg, "callbacks", chosen, typed)
    kept = []
    for callback in callbacks:
        if isinstance(callback, ProgressBar) and not progress_bar:
            continue
        if isinstance(callback, LearningRateMonitor) and not logs:
            log.info("no logger: the learning-rate monitor (callbacks.lr_monitor) is left out")
            continue
        on_validation = isinstance(callback, EarlyStopping) and callback.monitor.startswith("val/")
        if on_validation and not validates:
            log.warning(
                f"no validation runs (trainer.limit_val_batches=0): early stopping on "
                f"{callback.monitor} is off for this run"
            )
            continue
        kept.append(callback)
    return kept


def checkpointing(trainer_cfg: DictConfig, callbacks: list[Callback]) -> dict[str, Any]:
    """`enable_checkpointing=False` for a trainer whose callbacks hold no checkpoint callback
    (`callbacks=none`), unless its config sets it: Lightning would add a ModelCheckpoint of its
    own, saving under the logger's folder (`tensorboard/checkpoints/`), where sft's `resume=` and
    tools never look."""
    if any(isinstance(c, Checkpoint) for c in callbacks) or "enable_checkpointing" in trainer_cfg:
        return {}
    log.info("no checkpoint callback (callbacks=...): this run writes no checkpoints")
    return {"enable_checkpointing": False}


def runs_validation(trainer_cfg: DictConfig) -> bool:
    """Whether `trainer_cfg` validates at all (`limit_val_batches` 0 or 0.0 turns it off)."""
    limit = trainer_cfg.get("limit_val_batches")
    return limit is None or limit != 0


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_entries(cfg, "logger")


_LIGHTNING_DIR = Path(lightning.pytorch.__file__).parent


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip:")


# the Trainer arguments sft builds from config groups of their own, and how to set them there
_FROM_GROUPS = {
    "logger": "~logger for none, or logger=csv|tensorboard|many_loggers",
    "callbacks": "callbacks=none for none, or +callbacks.<name>={_target_:<module.Class>}",
}


def build_trainer(cfg: DictConfig, **kwargs: Any) -> Trainer:
    """`instantiate(cfg, **kwargs)`; Lightning's refusal of a setting (e.g. max_epochs=-3) is a
    user error: its own message, as one line. `trainer.logger` / `trainer.callbacks` are
    refused: the `logger` and `callbacks` groups give them (was: `+trainer.logger=false`
    recorded, and the run logged to TensorBoard anyway); so is a minimum of epochs or steps
    above the maximum."""
    if given := sorted(_FROM_GROUPS.keys() & kwargs.keys() & set(cfg)):
        key = given[0]
        raise SFTError(
            f"trainer.{key}={cfg[key]}: sft builds the trainer's {key} from the `{key}` config "
            f"group, and would pass this over: {_FROM_GROUPS[key]}"
        )
    for unit in ("epochs", "steps"):
        least, most = cfg.get(f"min_{unit}"), cfg.get(f"max_{unit}")
        numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (least, most))
        if numbers and 0 < most < least:  # max_epochs=0 (a probe only) beside min 1: meant
            # (was: the run ended at max, the minimum passed over without a word)
            raise SFTError(
                f"trainer.min_{unit}={least} is above trainer.max_{unit}={most}, where the run "
                f"ends: lower trainer.min_{unit} or raise trainer.max_{unit}"
            )
    # Lightning's info lines advertising its cloud services ("💡 Tip: ... try installing
    # litlogger"), twice in every run's log: not about the run
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_a_tip not in tips.filters:
        tips.addFilter(_not_a_tip)
    ignore_lightning_internal_warnings()
    # and its TypeError for a value of the wrong kind (trainer.devices=abc), here only: while
    # training, one may be a bug's
    with lightning_refusals(TypeError):
        return instantiate(norm_sync_as_asked(cfg), **kwargs)


@contextmanager
def lightning_refusals(*also: type[Exception], setting: str = "trainer") -> Iterator[None]:
    """Lightning's refusal of a setting is a user error: its own message, as one line naming
    the config it is in (`setting`: the trainer's, or e.g. `callbacks.early_stopping`). It
    refuses when the trainer is built (through instantiate) or when fit/test set up their loops
    (an int val_check_interval above the batch count, limit_train_batches rounding to no batch),
    with a MisconfigurationException or a ValueError raised by its own code (or an exception of a
    type in `also`), or a ModuleNotFoundError for a package a setting needs
    (trainer.precision=transformer-engine)."""
    try:
        yield
    except (
        InstantiationException,
        MisconfigurationException,
        ValueError,
        ModuleNotFoundError,
        *also,
    ) as exc:
        cause = exc.__cause__ if isinstance(exc, InstantiationException) else exc
        if not _refused_by_lightning(cause, also):
            raise
        message = " ".join(str(cause).split())
        raise SFTError(f"{setting}: {message}") from exc


def answers_ctrl_c(exc: SystemExit) -> bool:
    """Whether `exc` is Lightning's answer to Ctrl-C in fit, test, validate or predict:
    sys.exit(1), raised while it handles the KeyboardInterrupt (other exits are not)."""
    return type(exc) is SystemExit and isinstance(exc.__context__, KeyboardInterrupt)


def _refused_by_lightning(exc: BaseException | None, also: tuple[type[Exception], ...]) -> bool:
    if isinstance(exc, MisconfigurationException):
        return True
    if not isinstance(exc, (ValueError, ModuleNotFoundError, *also)) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:  # the frame that raised it
        tb = tb.tb_next
    # a missing package is named by lightning.fabric's plugins too (RequirementCache), a device
    # count of the wrong type by its accelerators
    lightning_dir = _LIGHTNING_DIR if isinstance(exc, ValueError) else _LIGHTNING_DIR.parent
    return Path(tb.tb_frame.f_code.co_filename).is_relative_to(lightning_dir)
