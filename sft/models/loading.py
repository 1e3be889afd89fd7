"""Rebuild an SFTClassifier (and its datamodule) from a checkpoint alone, loading it safely."""

import contextlib
import logging
import pydoc
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sft.contracts import MODEL_TARGET, TOKENIZER_DIGEST, unrecorded_settings
from sft.errors import SFTError
from sft.models.adapters import (
    BASE_WEIGHTS,
    LoraSettings,
    check_base_weights,
    frozen_parameters,
)
from sft.models.backbones import create_backbone, local_paths_read, resolve_input_spec
from sft.models.classifier import SFTClassifier
from sft.models.metrics import is_name_list, unregistered
from sft.utils.checkpoint_io import (
    check_no_interpolations,
    checkpoint_settings,
    read_checkpoint,
    setting_paths,
)
from sft.utils.config_types import check_config_types
from sft.utils.logs import info_left_out
from sft.utils.overrides import quoted_list_override

log = logging.getLogger(__name__)


# What a checkpoint's `_target_`s may name for sft-eval, sft-predict and sft-export to build.
# A checkpoint is data from anywhere, and Hydra's instantiate calls whatever a `_target_` names
# (builtins.open with mode "w" empties a file): weights_only loading alone does not stop that.
# A model's parts and its data are classes of these kinds (a user's own backbone is a class:
# README "Your own configs and code"); the functions are sft's backbone factory and
# transformers' learning-rate schedules. No other function, whatever it says it returns: torch's
# own `torch.fx.graph_module.reduce_graph_module(...) -> nn.Module` runs the code it is given.
# sft-train warns of a run whose checkpoints would be refused (a factory function of one's own).
_BUILDABLE_CLASSES = (
    torch.nn.Module,
    torch.optim.Optimizer,
    torch.optim.lr_scheduler.LRScheduler,
    L.LightningDataModule,
    LoraSettings,  # model.adapter's settings
)
_SCHEDULES_MODULE = "transformers.optimization"


def check_remote_code(checkpoint: dict[str, Any], path: str | Path, allowed: bool) -> None:
    """SFTError for a checkpoint whose settings turn trust_remote_code on, unless this command
    was given trust_remote_code=true: rebuilding it would run the code its model, tokenizer or
    dataset folder ships, on the file's word alone (was: run without a word)."""
    if allowed:
        return
    for where, value in checkpoint_settings(checkpoint):
        # any value but false: transformers reads it as a truth value (1, "true")
        if where.endswith(".trust_remote_code") and value not in (False, None):
            raise SFTError(
                f"checkpoint {path}: {where}={str(value).lower()}: rebuilding its model or data "
                "runs the code their folder or hub repository ships; if you trust that code, "
                "give this command trust_remote_code=true"
            )


def check_buildable_targets(checkpoint: dict[str, Any], path: str | Path) -> None:
    """SFTError for a `_target_` in `checkpoint`'s model or datamodule settings that names
    something other than a class of `_BUILDABLE_CLASSES`, create_backbone or a schedule, or for
    an interpolation (`${...}`) in any of its settings, before anything of it is built. A
    target that cannot be imported is left to the build, which says so (nothing is called
    then). Settings are saved resolved: an interpolation was put there by hand, and Hydra would
    resolve it into a target this check never saw (`${oc.decode:'torch.load'}`)."""
    check_no_interpolations(checkpoint, path)
    refused = unbuildable_targets(checkpoint_settings(checkpoint))
    if refused:
        where, target = refused[0]
        raise SFTError(
            f"checkpoint {path}: {where}={target} is not something sft builds from a "
            f"checkpoint ({BUILDABLE}): refused, as building it would run whatever the file names"
        )


BUILDABLE = (
    "a module, optimizer, LR scheduler, datamodule or LoRA settings class, sft's "
    "create_backbone, a transformers schedule"
)


# the checkpoint's keys that name a class by itself: its datamodule's, its model's
CLASS_KEYS = ("datamodule_target", MODEL_TARGET)


def unbuildable_targets(settings: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The (key, value) of each `_target_` among `settings` that names something sft does not
    build from a checkpoint; one that cannot be imported here is left to the build, which says
    so (nothing is called then)."""
    refused = []
    for where, target in settings:
        if target is None or not (where.endswith("._target_") or where in CLASS_KEYS):
            continue
        if _acts_on_import(str(target)):  # refused before it is imported
            refused.append((where, target))
            continue
        try:  # pydoc: quiet (Hydra's get_object logs an ERROR before the build's own line)
            obj = pydoc.locate(str(target))
        except pydoc.ErrorDuringImport:
            obj = None
        if obj is not None and not _buildable(obj):
            refused.append((where, target))
    return refused


def _acts_on_import(target: str) -> bool:
    """Whether `target` names what is refused before importing it: anything of Python's own
    library, where nothing sft builds is and some modules act as they are imported (`test.
    autotest` runs CPython's tests, `antigravity` opens a browser), and a package's
    `__main__` (`venv.__main__` makes a virtual environment). A module imported already (a
    notebook's `__main__`) runs nothing again."""
    parts = target.split(".")
    if parts[0] in sys.stdlib_module_names or parts[0] == "test":  # (the list leaves test out)
        return True
    for i, part in enumerate(parts):
        if ".".join(parts[: i + 1]) not in sys.modules and part.startswith("__"):
            return True
    return False


def _buildable(obj: Any) -> bool:
    if isinstance(obj, type):
        return issubclass(obj, _BUILDABLE_CLASSES)
    return obj is create_backbone or getattr(obj, "__module__", None) == _SCHEDULES_MODULE


def warn_unloadable_targets(model_cfg: Any, data_cfg: Any) -> None:
    """Warn, as a run starts, of a `_target_` in its model or data settings (a factory function
    of the user's own) that sft-eval, sft-predict and sft-export will refuse to build from its
    checkpoints (was: found only after training)."""
    settings = []
    for node, where in ((model_cfg, "model"), (data_cfg, "data")):
        if node is not None:
            values = (
                OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
            )
            settings += [(k, v) for k, v in setting_paths(values, where) if k != "model._target_"]
    for where, target in unbuildable_targets(settings):
        log.warning(
            f"{where}={target}: sft-eval, sft-predict and sft-export will refuse this run's "
            f"checkpoints, as they build from a checkpoint only {BUILDABLE} (a function could "
            "be anything a crafted file names): make it such a class (a factory's body as an "
            "nn.Module's __init__)"
        )


@contextlib.contextmanager
def importable_code(path: str | Path, whose: str = "model") -> Iterator[None]:
    """One SFTError for a checkpoint whose model (or datamodule: `whose`) names code this process
    cannot import (a user's module, trained with `PYTHONPATH=.`): Hydra's instantiate reports it
    in lines."""
    try:
        yield
    except InstantiationException as exc:
        if not isinstance(exc.__cause__, ImportError):
            raise
        cause = " ".join(str(exc.__cause__).split())
        raise SFTError(
            f"checkpoint {path}: its {whose}'s code cannot be imported here ({cause}); run where it "
            "was trained, or add the folder of that module to PYTHONPATH"
        ) from exc


def load_classifier(
    path: str | Path,
    checkpoint: dict[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
) -> SFTClassifier:
    """The model of a training checkpoint, on CPU, in eval mode (`checkpoint`: the file's
    contents when the caller has read them already, so a large file is loaded once; `metrics`:
    the metrics to log instead of the run's, by name)."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    check_buildable_targets(checkpoint, path)
    hparams = dict(checkpoint["hyper_parameters"])
    if not isinstance(hparams.get("backbone"), dict):  # (was: KeyError traceback)
        raise SFTError(
            f"checkpoint {path}: its model settings name no backbone: not an sft training "
            "checkpoint (or one edited by hand)"
        )
    _check_folders_exist(hparams.get("backbone") or {}, path, BASE_WEIGHTS in checkpoint)
    with importable_code(path):
        input_spec = resolve_input_spec(hparams["backbone"])  # as trained, with its weights
    small = checkpoint.get(BASE_WEIGHTS)  # adapter.save_only_trainable: base weights not in it
    if small is None:
        # The checkpoint holds the weights: skip downloading/reading the pretrained ones.
        backbone = dict(hparams["backbone"])
        backbone.update(
            {k: v for k, v in (("pretrained", False), ("checkpoint", None)) if k in backbone}
        )
        hparams["backbone"] = backbone
    if isinstance(hparams.get("adapter"), dict) and hparams["adapter"].get("init_from"):
        # the adapters' weights are the checkpoint's: the peft folder they started from is not
        # read again (it may be elsewhere by now)
        hparams["adapter"] = {**hparams["adapter"], "init_from": None}
    # compilation speeds up training; evaluating, predicting or exporting a few batches would
    # spend longer compiling than running (and export traces the plain module)
    hparams["compile"] = False
    if metrics is not None:
        hparams["metrics"] = list(metrics)
    elif is_name_list(hparams.get("metrics")) and (unknown := unregistered(hparams["metrics"])):
        # a metric of a plugin not installed here: nothing predicting or exporting needs it
        # (was: "no metric named ..." for sft-predict and sft-export too)
        log.warning(
            f"checkpoint {path}: its run logged {', '.join(unknown)}, which no installed "
            "package registers (an sft.metrics plugin): left out (sft-eval's metrics=[...] "
            "chooses the metrics to score)"
        )
        hparams["metrics"] = [m for m in hparams["metrics"] if m not in unknown]
    cls = _model_class(checkpoint, path)
    try:
        # (was: training's lines, "model: N of N parameters train (100.00 %)", FastDropout's, in
        # sft-eval, sft-predict and sft-export, which train nothing)
        with importable_code(path), info_left_out(logging.getLogger(SFTClassifier.__module__)):
            model = cls(**hparams)
    except TypeError as exc:
        # a subclass whose __init__ does not pass SFTClassifier's arguments on: its hparams
        # hold both classes' (save_hyperparameters reads every __init__ frame)
        if "keyword argument" not in str(exc):
            raise
        if cls is SFTClassifier:  # (was: the TypeError's traceback)
            raise SFTError(
                f"checkpoint {path}: its model settings do not build this sft's SFTClassifier "
                f"({exc}): a checkpoint of another sft version, or one edited by hand"
            ) from exc
        raise SFTError(
            f"checkpoint {path}: its model {cls.__qualname__} cannot be rebuilt from its hparams "
            f"({exc}): its __init__ takes SFTClassifier's arguments as **kwargs and passes them "
            "on to super().__init__"
        ) from exc
    # the tokenizer it was trained with: the datamodule warns when its tokenizer is another
    model.input_spec = replace(
        input_spec,
        tokenizer_digest=checkpoint.get(TOKENIZER_DIGEST),
        max_positions=model.input_spec.max_positions,
    )
    if small is not None:
        check_base_weights(model, small, f"checkpoint {path}")
    try:
        result = model.load_state_dict(checkpoint["state_dict"], strict=small is None)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise SFTError(
            f"checkpoint {path}: weights do not fit the model it describes: {detail}"
        ) from exc
    if small is not None:  # non-strict: only the frozen base weights may be absent
        frozen = frozen_parameters(model)
        wrong = [k for k in result.missing_keys if k not in frozen] + result.unexpected_keys
        if wrong:
            raise SFTError(
                f"checkpoint {path}: weights do not fit the model it describes: "
                f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}"
            )
    return model.eval()


def _model_class(checkpoint: dict[str, Any], path: str | Path) -> type[SFTClassifier]:
    """The class the checkpoint's model was (a subclass of SFTClassifier: was rebuilt as an
    SFTClassifier, silently dropping its own forward or loss); SFTClassifier for a checkpoint
    from before the class was recorded."""
    target = checkpoint.get(MODEL_TARGET)
    if target is None:
        return SFTClassifier
    try:  # pydoc: None when not found (Hydra's get_class logs an error line first)
        cls = pydoc.locate(str(target))
    except pydoc.ErrorDuringImport as err:
        cls, cause = None, f"importing it raised {err.exc.__name__}: {err.value}"
    else:
        cause = f"no {target}"
    if cls is None:
        raise SFTError(
            f"checkpoint {path}: its model's code cannot be imported here ({cause}); run where it "
            "was trained, or add the folder of that module to PYTHONPATH"
        )
    if not (isinstance(cls, type) and issubclass(cls, SFTClassifier)):
        raise SFTError(f"checkpoint {path}: its model class {target} is not an SFTClassifier")
    return cls


def _check_folders_exist(backbone: dict[str, Any], path: str | Path, small: bool) -> None:
    """A file or folder the checkpoint's model reads that has moved: one line saying how to
    point at it. The backbone family names what it reads (a model folder's config and tokenizer
    files); a backbone's own weights file is read only for a small checkpoint
    (adapter.save_only_trainable), which leaves the base weights out."""
    keys = [*local_paths_read(backbone), *(["checkpoint"] if small else [])]
    for key in keys:
        value = backbone.get(key)
        if not isinstance(value, str) or not value.startswith("/") or Path(value).exists():
            continue
        if key == "checkpoint":
            what = "its base weights, which the checkpoint leaves out, are read from there"
        elif small:
            what = (
                "its base weights, which the checkpoint leaves out, and the model's config and "
                "tokenizer files are read from there"
            )
        else:
            what = (
                "the weights are in the checkpoint; the model's config and tokenizer files are "
                "read from there"
            )
        raise SFTError(
            f"checkpoint {path}: its model reads model.backbone.{key}={value}, which no longer "
            f"exists ({what}): put it back, or link it there (ln -s <its new place> {value})"
        )


def datamodule_from_checkpoint(
    path: str | Path, *, checkpoint: dict[str, Any] | None = None, **overrides: Any
) -> Any:
    """The datamodule a checkpoint was trained with, its hparams updated by `overrides`
    (`checkpoint`: the file's contents, as for `load_classifier`); an override the datamodule
    does not take, or of the wrong type, is an SFTError naming `data.<key>`."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path)
    config = {**trained_data_config(path, checkpoint), **overrides}
    if overrides:
        check_config_types(config, "data")
    with importable_code(path, "datamodule"):
        return instantiate(config)


def trained_data_config(path: str | Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The config (`_target_` and settings) of the datamodule `checkpoint` was trained with."""
    check_buildable_targets(checkpoint, path)
    if "datamodule_target" not in checkpoint:
        raise SFTError(f"checkpoint {path}: records no datamodule; choose one with data=<name>")
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    target = checkpoint["datamodule_target"]
    with contextlib.suppress(pydoc.ErrorDuringImport):  # instantiate says so, in one line
        cls = pydoc.locate(target)
        # the training machine's (its token cache folder): this one's defaults instead, e.g.
        # $SFT_CACHE_DIR (was: the training run's folder, another user's or gone)
        for key in getattr(cls, "machine_settings", ()):
            hparams.pop(key, None)
        if cls is not None and (unrecorded := unrecorded_settings(cls, hparams)):
            log.warning(
                f"checkpoint {path}: its datamodule {target} recorded none of its settings "
                f"({', '.join(unrecorded)}): rebuilt with their defaults, which may not be the "
                "training run's"
            )
    return {"_target_": target, **hparams}


def check_class_names(
    found: list[str] | None, trained: list[str] | None, ckpt_path: str | Path
) -> None:
    """The data's classes (None: not known) against those the checkpoint was trained with: the
    model's outputs are by position, so the same names in another order would score or train
    each class as another (SFTError); other names, a warning. Integer labels (names '0', '1',
    ...) name nothing to compare; a different count is the model's own check
    (SFTClassifier.setup)."""
    if found is None:
        return
    found, trained = [str(n) for n in found], [str(n) for n in trained or []]
    if not trained or found == trained or len(found) != len(trained):
        return
    # before the integer labels' pass below: ["1", "0"] are names, read as such, in another order
    if sorted(found) == sorted(trained):
        raise SFTError(
            f"the data's classes are {found} but {ckpt_path} was trained with {trained}: the "
            "model's outputs are by position, so each class would take another's; give them in "
            f"the checkpoint's order ({quoted_list_override('data.label_names', trained)})"
        )
    if any(names == [str(i) for i in range(len(names))] for names in (found, trained)):
        return
    # a name both have, at another position: its examples would score or train as the model's
    # other class (was: a warning, and predictions.csv named the model's `neu` output `mixed`)
    moved = [name for i, name in enumerate(found) if name in trained and trained.index(name) != i]
    if moved:
        name = moved[0]
        raise SFTError(
            f"the data's classes are {found} but {ckpt_path} was trained with {trained}: "
            f"{name!r} is the model's output {trained.index(name)} and the data's class "
            f"{found.index(name)}, and the model's outputs are by position, so its examples would "
            "take another class's; give each class the model has at its position "
            f"({quoted_list_override('data.label_names', trained)}; a class the model was not "
            "trained with cannot be scored)"
        )
    log.warning(
        f"the data's classes {found} are not the ones {ckpt_path} was trained with {trained}: "
        "each takes the model's output at the same position"
    )
