"""Parameter groups: separate learning rates for backbone, adapters and head, no decay on norms
and biases, and optionally layer-wise learning-rate decay through the backbone; the LR schedule."""

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from sft.errors import SFTError
from sft.models.backbones import inner_model, layer_numbering
from sft.utils.logs import first_few, rank_zero_warning

NamedParameters = Sequence[tuple[str, nn.Parameter]]

log = logging.getLogger(__name__)


def param_groups(params: NamedParameters, lr: float, weight_decay: float, name: str) -> list[dict]:
    """Two groups of the trainable `params`: decayed weights, and 1-D tensors without decay.

    1-D tensors are biases and norm scales/shifts; decaying them hurts (the usual timm/HF rule).
    """
    return _split([p for _, p in params], lr, weight_decay, name)


def layerwise_param_groups(
    backbone: nn.Module,
    params: NamedParameters,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    name: str,
) -> list[dict]:
    """Layer-wise LR decay (LLRD): parameters of layer k get lr * layer_decay ** (L + 1 - k).

    The backbone numbers its layers with `layer_id(param_name)`, 0 (embeddings) to
    `num_layers` + 1 (after the last layer), so the bottom layers, which hold the most general
    features, move least. `params`: (name, parameter) pairs of `backbone`. Each layer keeps the decay / no-decay split ("name/layer_03",
    "name/layer_03/no_decay").
    """
    numbering = layer_numbering(backbone)
    if numbering is None:
        raise SFTError(
            "model.layer_decay needs a backbone with layer ids (the huggingface text backbone, "
            f"timm models); {type(inner_model(backbone)).__name__} has none: set "
            "model.layer_decay=null"
        )
    if not 0.0 < layer_decay <= 1.0:
        raise SFTError(f"model.layer_decay must be in (0, 1], got {layer_decay!r}")
    layer_id, top = numbering
    # every layer named by some weight of it (ALBERT's one shared layer is named by none: its
    # weights would all train at the top rate, and the decay would not happen)
    named = {layer_id(param_name) for param_name, _ in backbone.named_parameters()}
    unnamed = [k for k in range(1, top) if k not in named]
    if unnamed:
        raise SFTError(
            f"model.layer_decay: no weight of the backbone is named after its layer(s) "
            f"{first_few(unnamed, 5)} of 1..{top - 1} (layers shared, as in ALBERT, or named "
            "otherwise); set model.layer_decay=null"
        )
    layers: dict[int, list[nn.Parameter]] = {}
    for param_name, p in params:
        layers.setdefault(layer_id(param_name), []).append(p)
    groups = []
    for k in sorted(layers):
        scale = layer_decay ** (top - k)
        groups += _split(layers[k], lr * scale, weight_decay, f"{name}/layer_{k:02d}")
    return groups


def _split(params: list[nn.Parameter], lr: float, weight_decay: float, name: str) -> list[dict]:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"name": f"{name}", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": f"{name}/no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def create_scheduler(
    cfg: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float,
    set_up_check: bool = False,
) -> Any:
    """The LR schedule of `cfg` (model.scheduler), stepped once per optimizer step.

    A schedule that takes `num_training_steps` / `num_warmup_steps` (transformers' schedules)
    gets `total_steps` and ceil(warmup_ratio * total_steps), HF Trainer's count, unless `cfg`
    sets them; any other (torch's) takes only its own settings from `cfg` (was: both passed to
    every schedule, a TypeError traceback for `get_constant_schedule_with_warmup` or torch's
    `CosineAnnealingLR`). `set_up_check`: a run of a batch to check the set-up (fast_dev_run),
    whose step counts are not the run's to warn of."""
    make = instantiate(cfg, _partial_=True)
    # transformers' get_reduce_on_plateau_schedule takes **kwargs: a TypeError otherwise
    if (
        _is_subclass(make.func, ReduceLROnPlateau)
        or getattr(make.func, "__name__", "") == "get_reduce_on_plateau_schedule"
    ):
        raise SFTError(_steps_on_a_metric(cfg))
    steps = {
        "num_warmup_steps": math.ceil(total_steps * warmup_ratio),
        "num_training_steps": total_steps,
    }
    taken = inspect.signature(make).parameters
    anything = any(p.kind is p.VAR_KEYWORD for p in taken.values())
    given = {k: v for k, v in steps.items() if (k in taken or anything) and k not in cfg}
    if warmup_ratio and "num_warmup_steps" not in given and "num_warmup_steps" not in cfg:
        rank_zero_warning(
            log,
            f"model.warmup_ratio={warmup_ratio}: {cfg.get('_target_')} takes no "
            "num_warmup_steps, so model.warmup_ratio is not applied (a warm-up of the "
            "schedule's own, e.g. OneCycleLR's pct_start, is its settings'); set "
            "model.warmup_ratio=0",
        )
    if not set_up_check:
        _warn_of_steps_off_the_run(cfg, given, total_steps)
    try:
        scheduler = make(optimizer, **given)
    except TypeError as exc:
        settings = ", ".join(f"{k}={v}" for k, v in given.items()) or "no step counts"
        raise SFTError(
            f"model.scheduler: {cfg.get('_target_')}(optimizer, {settings}) failed: {exc}; "
            "give the schedule's own settings under model.scheduler (e.g. "
            "+model.scheduler.T_max=<steps>; it steps once per optimizer step)"
        ) from exc
    if isinstance(scheduler, ReduceLROnPlateau):  # a function of a user's that makes one
        raise SFTError(_steps_on_a_metric(cfg))
    return scheduler


def _warn_of_steps_off_the_run(
    cfg: Mapping[str, Any], given: Mapping[str, int], total_steps: int
) -> None:
    """A schedule's step counts that do not fit the run's optimizer steps (were accepted without
    a word): its training steps set to fewer than the run's (the rest at the schedule's end
    rate, 0 for transformers' linear and cosine) or more (it never ends), a warm-up longer than
    the run (the peak rate never reached), model.warmup_ratio's warm-up covering every step of
    a short run (its one step at rate 0)."""
    steps = {**given, **{k: cfg[k] for k in ("num_training_steps", "num_warmup_steps") if k in cfg}}
    training, warmup = steps.get("num_training_steps"), steps.get("num_warmup_steps")
    said = f"the run takes {total_steps} optimizer step{'s' * (total_steps != 1)}"
    if "num_training_steps" in cfg and training != total_steps:
        rank_zero_warning(
            log,
            f"model.scheduler.num_training_steps={training}, but {said}: "
            + (
                f"its last {total_steps - training} at the schedule's end rate (0 for a linear "
                "or cosine decay)"
                if training < total_steps
                else "the schedule is stopped part-way"
            )
            + "; leave it out to get the run's count",
        )
    # (a run of no steps, max_steps=0, is warned of as one)
    if (
        warmup is not None
        and total_steps > 0
        and warmup >= min(total_steps, training or total_steps)
    ):
        key = (
            "model.scheduler.num_warmup_steps"
            if "num_warmup_steps" in cfg
            else "model.warmup_ratio"
        )
        rank_zero_warning(
            log,
            f"{key}: a warm-up of {warmup} step{'s' * (warmup != 1)}, and {said}: every step is "
            "a warm-up step at a rate below the peak (the first at 0); a shorter warm-up, or "
            "model.warmup_ratio=0 for a run this short",
        )


def _steps_on_a_metric(cfg: Mapping[str, Any]) -> str:
    # (was: Lightning's "The lr scheduler dict must include a monitor", which asked for code)
    return (
        f"model.scheduler: {cfg.get('_target_')} steps on a metric, and sft steps its schedule "
        "with the optimizer, once per step: give a schedule of steps (e.g. "
        "transformers.get_linear_schedule_with_warmup, torch.optim.lr_scheduler.StepLR)"
    )


def _is_subclass(target: Any, cls: type) -> bool:
    return isinstance(target, type) and issubclass(target, cls)
