"""LoRA adapters inside the backbone, built on `peft`: the fused branch idea applied per layer.

A target layer computes `W x + (alpha / r) B A x` with `B` zero at the start, so the model's
outputs at step 0 are the pretrained backbone's, exactly as the fused head's branch starts at
zero; `merge_adapters` folds each pair back into one weight `W + (alpha / r) B A` (sft-export).
peft's `inject_adapter_in_model` wraps the layers in place (it also freezes everything but the
adapters; `bias` and `train_norms` choose what else trains), so the state_dict keeps the
backbone's own names plus `<layer>.lora_A/B.default.weight`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import torch
from annotated_types import Gt, Interval
from torch import nn

from sft.errors import SFTError, first_line
from sft.utils.config_types import check_value
from sft.utils.logs import first_few

log = logging.getLogger(__name__)

# parameters of the adapters (peft's LoRA layers): their own learning-rate group
ADAPTER_MARKER = "lora_"
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
# norm layers of other libraries, by their class name: transformers' T5LayerNorm and
# LlamaRMSNorm, timm's LayerNorm2d (was: T5-style encoders trained no norm under train_norms)
NORM_NAME = re.compile(r"Norm(\dd)?$")
# peft's shorthand for every Linear layer of a model (for a PreTrainedModel only, there)
ALL_LINEAR = "all-linear"


def is_norm(module: nn.Module) -> bool:
    """Whether `module` normalises (and has weights to train)."""
    named = NORM_NAME.search(type(module).__name__) is not None
    return (isinstance(module, NORMS) or named) and any(True for _ in module.parameters(False))


@dataclass(frozen=True)
class LoraSettings:
    """`adapter=lora` (conf/adapter/lora.yaml). target_modules: None for the backbone family's
    default (every Linear and every non-grouped Conv2d: attention q/k/v/output and the FFN of
    BERT-family encoders, the convolutions of CNNs but their depthwise ones), `all-linear`
    (every Linear), a list of module names or name suffixes, or one regular expression over the
    full names (peft's rules)."""

    # bounds in the annotations: a swept value is checked before any job runs
    r: Annotated[int, Gt(0)] = 8
    alpha: Annotated[float, Gt(0)] = 16.0
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0
    target_modules: Sequence[str] | str | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    train_norms: bool = False
    # backbone modules (names or name suffixes) that train whole, at lr_backbone, beside the
    # adapters: peft's modules_to_save (e.g. the embeddings, the last block)
    modules_to_save: Sequence[str] | None = None
    save_only_trainable: bool = False
    # peft's variants: rank-stabilised scaling alpha / sqrt(r); DoRA's learned magnitude per
    # output (both start at the pretrained model, and merge)
    use_rslora: bool = False
    use_dora: bool = False
    # a peft LoRA adapter folder (PeftModel.save_pretrained's) to start from, made for this
    # backbone: its weights, with its settings
    init_from: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping) -> LoraSettings:
        cfg = dict(cfg)
        target = cfg.pop("_target_", f"{__name__}.{cls.__name__}")
        if target != f"{__name__}.{cls.__name__}":
            raise SFTError(
                f"adapter: sft's adapters are LoRA ({__name__}.{cls.__name__}), got {target}"
            )
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise SFTError(
                f"adapter: unknown option(s) {', '.join(unknown)}; known: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        settings = cls(**cfg)
        # the annotations are the one statement of each bound (sweeps are checked against
        # them before their jobs run); a model built in Python gets the same line
        hints = typing.get_type_hints(cls, include_extras=True)
        for field in fields(cls):
            check_value(getattr(settings, field.name), hints[field.name], f"adapter.{field.name}")
        if settings.target_modules is not None and not settings.target_modules:
            raise SFTError(
                "adapter.target_modules is empty: name the layers to adapt, or null for the "
                "backbone's Linear and Conv2d layers"
            )
        return settings


@functools.cache
def same_padded_convs() -> tuple[type, ...]:
    """timm's TF-SAME convolutions: they pad, then run torch's convolution of their weight."""
    try:
        from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport
    except ImportError:  # without timm (sft[vision]) its layers cannot be in the model
        return ()
    return Conv2dSame, Conv2dSameExport


def mergeable_conv(module: nn.Module) -> bool:
    """A convolution that is torch's of its weight (padded first, for timm's SAME ones), into
    which an adapter's B A merges; not one computing with a function of its weight (timm's
    weight-standardised StdConv2d of BiT and NFNet models)."""
    return type(module) in (nn.Conv1d, nn.Conv2d, nn.Conv3d, *same_padded_convs())


def default_targets(backbone: nn.Module) -> list[str]:
    """Every Linear and every mergeable Conv2d without groups (peft cannot merge grouped ones)."""
    return [
        name
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear)
        or (isinstance(module, nn.Conv2d) and mergeable_conv(module) and module.groups == 1)
    ]


def linear_layers(backbone: nn.Module) -> list[str]:
    """`all-linear`: every Linear, and transformers' Conv1D (GPT-2's linear layers), as peft
    counts them."""
    return [
        name
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    ]


def adapter_layers(module: nn.Module) -> list[str]:
    """The names of `module`'s layers that hold LoRA adapters."""
    from peft.tuners.lora import LoraLayer

    return [name for name, layer in module.named_modules() if isinstance(layer, LoraLayer)]


def exactly(names: list[str]) -> str:
    """A peft target (one regular expression, matched against whole names) of these modules
    alone: a list matches name ends, so a Linear `proj` took a Conv2d `block.proj` too."""
    return "|".join(re.escape(name) for name in names)


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith(f".{target}")


def check_targets(
    backbone: nn.Module,
    targets: Sequence[str] | str,
    backbone_name: str,
    key: str = "adapter.target_modules",
) -> None:
    """One line for a target that matches no module, listing the names that exist."""
    names = [name for name, _ in backbone.named_modules() if name]
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        # one string is peft's regular expression over whole names: `query` matched nothing
        # while `model.encoder.layer.0.attention.self.query` was in the list printed
        regex = (
            f" (one string is a regular expression over whole module names, as peft reads it: "
            f"a list, [{targets}], matches names ending in it)"
            if isinstance(targets, str)
            else ""
        )
        raise SFTError(
            f"{key}: {', '.join(map(repr, missing))} match(es) no module of "
            f"backbone {backbone_name!r}{regex}; its modules ({len(names)}): "
            f"{first_few(names, 20)}"
        )


def add_lora(backbone: nn.Module, settings: LoraSettings, backbone_name: str) -> nn.Module:
    """Inject LoRA adapters into `backbone` in place; only they (and the chosen biases and norms)
    stay trainable. SFTError for targets that match nothing or layers peft cannot wrap."""
    from peft import LoraConfig, inject_adapter_in_model  # late: peft imports transformers

    targets = settings.target_modules
    inner = getattr(backbone, "wrapped_prefix", "")  # a transformers model inside a wrapper
    saved = modules_saved(backbone, settings.modules_to_save or [], backbone_name)
    start = read_peft_adapter(settings, inner) if settings.init_from else None
    if start is not None:
        check_saved_modules(backbone, saved, start, inner, str(settings.init_from))
        if targets is None:
            targets = start.targets
    if targets == ALL_LINEAR:  # the backbone's Linear layers (the head is not in it)
        names = [n for n in linear_layers(backbone) if not within(n, saved)]
        if not names:
            raise SFTError(
                f"adapter.target_modules={ALL_LINEAR}: backbone {backbone_name!r} has no Linear "
                "layer; null adapts its Linear and Conv2d layers"
            )
        targets = exactly(names)
    elif targets is None:
        names = [n for n in default_targets(backbone) if not within(n, saved)]
        if not names:
            raise SFTError(
                f"adapter=lora: backbone {backbone_name!r} has no Linear or Conv2d layer whose "
                "adapter could merge into it"
                + (" outside adapter.modules_to_save" if saved else "")
                + " (depthwise convolutions and convolutions of their own, such as timm's "
                "StdConv2d, are left out): fine-tune it without adapters"
            )
        targets = exactly(names)
    else:
        targets = targets if isinstance(targets, str) else list(targets)
        check_targets(backbone, targets, backbone_name)
        check_mergeable_targets(backbone, targets, backbone_name)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=float(settings.dropout),
        target_modules=targets,
        bias=settings.bias,
        use_rslora=settings.use_rslora,
        use_dora=settings.use_dora,
    )
    try:
        with warnings.catch_warnings():
            # a grouped convolution's: said below, as the error it is
            warnings.filterwarnings("ignore", "Merging is not supported", UserWarning)
            with convs_peft_can_copy(backbone):
                inject_adapter_in_model(config, backbone)
    except (ValueError, TypeError, NotImplementedError) as exc:
        reason = " ".join(str(exc).split())[:300]
        # peft names the layer by its whole repr (a BertEmbeddings' is a screenful): by its class
        if unsupported := re.match(r"Target module (\w+)\(", str(exc)):
            reason = (
                f"adapter.target_modules matches a {unsupported.group(1)}, which LoRA cannot "
                "wrap; name Linear, Embedding or Conv layers"
            )
        raise SFTError(f"adapter=lora cannot wrap backbone {backbone_name!r}: {reason}") from exc
    check_mergeable(backbone, backbone_name)
    if settings.use_dora and settings.dropout > 0:
        check_dora_dropout(backbone, settings.dropout)
    if both := [name for name in adapter_layers(backbone) if within(name, saved)]:
        raise SFTError(
            f"adapter.modules_to_save: {first_few(both, 3)} hold(s) adapters too "
            "(adapter.target_modules): a module trains whole or through adapters, not both; "
            "leave it out of one of them"
        )
    for name in saved:  # all of its weights, as peft's copy of it trains
        for parameter in backbone.get_submodule(name).parameters():
            parameter.requires_grad_(True)
    if start is not None:
        load_peft_weights(backbone, start.weights, saved, str(settings.init_from))
    freed = [n for n, p in backbone.named_parameters() if p.requires_grad and n.endswith(".bias")]
    if settings.bias != "none" and not freed:
        log.warning(
            f"adapter.bias={settings.bias}: the {'adapted ' * (settings.bias == 'lora_only')}"
            f"layers of backbone {backbone_name!r} have no biases, so it adds nothing that trains"
        )
    if settings.train_norms:
        norms = [module for module in backbone.modules() if is_norm(module)]
        if not norms:
            log.warning(
                f"adapter.train_norms=true: backbone {backbone_name!r} has no norm layer, so it "
                "adds nothing that trains"
            )
        for module in norms:  # its own scale and shift, not a child's (a Linear inside)
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(True)
    return backbone


@functools.cache
def _dropping_padding_mode(conv_class: type) -> type:
    """A subclass of `conv_class` whose construction drops `padding_mode` (zeros: what a conv
    class without the argument pads with) and returns a plain `conv_class` instance."""

    def __new__(cls: type, *args: object, padding_mode: str = "zeros", **kwargs: object):
        if padding_mode != "zeros":
            raise ValueError(f"{conv_class.__name__} pads with zeros, not {padding_mode}")
        return conv_class(*args, **kwargs)  # not a `cls`: Python skips `cls.__init__`

    return type(conv_class.__name__, (conv_class,), {"__new__": __new__})


@contextmanager
def convs_peft_can_copy(backbone: nn.Module) -> Iterator[None]:
    """While peft injects adapters: peft (0.22 on) builds a conv adapter's A as
    `type(base)(..., padding_mode=base.padding_mode)`, to keep the base's geometry, which
    timm's SAME-padding Conv2dSame refuses: its constructor takes no padding_mode
    (EfficientNet-Lite's strided convolutions; was: adapter=lora failed on EfficientNet-Lite0).
    Such a conv is of a subclass meanwhile that drops the argument, so A is a `Conv2dSame` and
    pads as its base does; each conv gets its own class back after. Other convolutions of
    their own are not adapted (`check_mergeable_targets`)."""
    swapped = []
    for module in backbone.modules():
        conv_class = type(module)
        if conv_class in same_padded_convs():
            module.__class__ = _dropping_padding_mode(conv_class)
            swapped.append((module, conv_class))
    try:
        yield
    finally:
        for module, conv_class in swapped:
            module.__class__ = conv_class


def modules_saved(backbone: nn.Module, names: Sequence[str], backbone_name: str) -> list[str]:
    """The backbone modules `adapter.modules_to_save` names (whole names or name ends), the
    outermost of nested ones; SFTError for a name that matches none."""
    if not names:
        return []
    check_targets(backbone, list(names), backbone_name, key="adapter.modules_to_save")
    return outermost_matches(backbone, names)


def outermost_matches(backbone: nn.Module, patterns: Sequence[str], prefix: str = "") -> list[str]:
    """The modules of `backbone` under `prefix` whose names without it match one of `patterns`
    (whole names or name ends, as peft matches), the outermost of nested ones."""
    found: list[str] = []
    for name, _ in backbone.named_modules():
        if not name.startswith(prefix) or not (own := name.removeprefix(prefix)):
            continue
        if any(_matches(own, p) for p in patterns) and not within(name, found):
            found.append(name)
    return found


def saved_module_parameters(backbone: nn.Module, saved: Sequence[str]) -> dict[str, nn.Parameter]:
    """The weights of the modules trained whole, by their own names in `backbone`: as peft's
    adapter file holds them (it drops its wrapper's names)."""
    return {
        f"{module}.{name}": parameter
        for module in saved
        for name, parameter in backbone.get_submodule(module).named_parameters()
    }


def within(name: str, modules: Sequence[str]) -> bool:
    """Whether module `name` is one of `modules` or inside one."""
    return any(name == m or name.startswith(f"{m}.") for m in modules)


# where PeftModel names the model it wraps, in its saved adapters
PEFT_MODEL_NAMES = "base_model.model."
PEFT_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class PeftStart(NamedTuple):
    """What a peft LoRA adapter folder holds, in the backbone's names (`inner` before the
    transformers model's): its target modules, its weights (the adapters', and those of the
    modules it trains whole), and those modules as its config names them (the model's names)."""

    targets: Sequence[str] | str
    weights: dict[str, torch.Tensor]
    modules_to_save: list[str]


def read_peft_adapter(settings: LoraSettings, inner: str) -> PeftStart:
    """The peft LoRA adapter folder `settings.init_from`; SFTError for a folder that holds none,
    or an adapter of other settings than `settings` (which must say them: the run's record and
    checkpoints keep them)."""
    from peft import LoraConfig

    path = str(settings.init_from)
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise SFTError(
            f"adapter.init_from={path}: no adapter_config.json there; expected a peft adapter "
            "folder (as PeftModel.save_pretrained or sft-export formats=[peft] write one)"
        )
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise SFTError(
            f"adapter.init_from={path}: a {config.get('peft_type')} adapter; sft's adapters "
            "are LoRA"
        )
    theirs = {
        "r": config.get("r", LoraConfig.r),
        "alpha": float(config.get("lora_alpha", LoraConfig.lora_alpha)),
        "use_rslora": bool(config.get("use_rslora")),
        "use_dora": bool(config.get("use_dora")),
    }
    differ = [k for k, v in theirs.items() if v != getattr(settings, k)]
    if differ:
        raise SFTError(
            f"adapter.init_from={path}: the adapter there has "
            f"{', '.join(f'{k}={theirs[k]}' for k in differ)} (this run: "
            f"{', '.join(f'{k}={getattr(settings, k)}' for k in differ)}): set "
            f"{' '.join(f'adapter.{k}={theirs[k]}' for k in differ)}"
        )
    # initialisations that change the base weights (the adapter starts from a residual base,
    # which a folder not converted back holds, and sft's base is the published one)
    init = str(config.get("init_lora_weights", True)).lower()
    if init.startswith(("pissa", "olora", "corda", "loftq")):
        raise SFTError(
            f"adapter.init_from={path}: the adapter there was initialised with "
            f"init_lora_weights={config.get('init_lora_weights')}, which changes the base "
            "weights it adapts; convert it to a plain LoRA adapter first (peft's "
            "path_initial_model_for_weight_conversion when saving)"
        )
    extras = [k for k in ("rank_pattern", "alpha_pattern") if config.get(k)]
    if extras or config.get("bias", "none") != "none":
        raise SFTError(
            f"adapter.init_from={path}: the adapter there uses "
            f"{', '.join(extras) or 'bias=' + str(config.get('bias'))}, which sft's adapters "
            "do not take"
        )
    targets = config.get("target_modules")
    if isinstance(targets, str):  # a regular expression over the transformers model's names
        targets = f"{re.escape(inner)}(?:{targets})"
    weights = next((folder / name for name in PEFT_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise SFTError(f"adapter.init_from={path}: no {' or '.join(PEFT_WEIGHT_FILES)} there")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    weights = {inner + k.removeprefix(PEFT_MODEL_NAMES): v for k, v in state.items()}
    return PeftStart(targets, weights, list(config.get("modules_to_save") or []))


def check_saved_modules(
    backbone: nn.Module, saved: list[str], start: PeftStart, inner: str, path: str
) -> None:
    """SFTError unless this run trains whole (adapter.modules_to_save) the modules the peft
    folder does: its weights of them are read into them, and no others would train."""
    # peft matches its modules_to_save as name ends of the transformers model's modules
    absent = [m for m in start.modules_to_save if not outermost_matches(backbone, [m], inner)]
    if absent:
        raise SFTError(
            f"adapter.init_from={path}: the adapter there trains {', '.join(absent)} whole "
            "(modules_to_save), which this backbone has no module of (sft's Hugging Face "
            "backbones leave out the pooler, which their pooling does not use): an adapter "
            "without them starts this run"
        )
    theirs = outermost_matches(backbone, start.modules_to_save, inner)  # as modules_saved's
    if sorted(theirs) != sorted(saved):
        given = f"[{','.join(start.modules_to_save)}]" if start.modules_to_save else "null"
        raise SFTError(
            f"adapter.init_from={path}: the adapter there trains "
            f"{'modules ' + given if start.modules_to_save else 'no module'} whole "
            f"(modules_to_save), this run {first_few(saved, 3) if saved else 'none'}: set "
            f"adapter.modules_to_save={given}"
        )


def load_peft_weights(
    backbone: nn.Module, state: dict[str, torch.Tensor], saved: list[str], path: str
) -> None:
    """A peft adapter's weights into the adapters just injected into `backbone` and into the
    modules it trains whole (`saved`); SFTError when they are not exactly those (other layers,
    other shapes)."""
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    # the names peft saves these adapters under (DoRA's magnitudes, an Embedding's A and B too)
    adapters = set(get_peft_model_state_dict(backbone, adapter_name="default"))
    whole = saved_module_parameters(backbone, saved)
    ours = adapters | set(whole)
    missing, unexpected = sorted(ours - set(state)), sorted(set(state) - ours)
    if missing or unexpected:
        raise SFTError(
            f"adapter.init_from={path}: its weights are not this run's adapters ("
            + "; ".join(
                f"{what} {first_few(keys, 3)}"
                for what, keys in (("missing:", missing), ("not adapters here:", unexpected))
                if keys
            )
            + "): was it made for this backbone, with these adapter.target_modules?"
        )
    try:
        set_peft_model_state_dict(
            backbone, {k: v for k, v in state.items() if k in adapters}, adapter_name="default"
        )
        with torch.no_grad():
            for name, parameter in whole.items():
                parameter.copy_(state[name])
    except RuntimeError as exc:  # shapes
        raise SFTError(f"adapter.init_from={path}: {first_line(exc)}") from exc


def check_mergeable_targets(
    backbone: nn.Module, targets: Sequence[str] | str, backbone_name: str
) -> None:
    """SFTError for a target convolution that is not torch's (or timm's SAME-padded one), before
    peft wraps it: it computes with a function of its weight, so its adapter would train but
    not merge (was: timm's StdConv2d trained, then sft-export's parity check failed)."""
    for name, module in backbone.named_modules():
        matched = (
            re.fullmatch(targets, name) is not None
            if isinstance(targets, str)
            else any(_matches(name, t) for t in targets)
        )
        if matched and isinstance(module, nn.modules.conv._ConvNd) and not mergeable_conv(module):
            raise SFTError(
                f"adapter.target_modules matches {name}, a {type(module).__name__} of backbone "
                f"{backbone_name!r}, a convolution of its own, not torch's: an adapter's B A "
                "merges only into torch's (and timm's SAME-padded ones), so sft-export could not "
                "fold it: leave it out (null adapts every Linear and plain Conv2d)"
            )


def check_mergeable(backbone: nn.Module, backbone_name: str) -> None:
    """SFTError for an adapter on a grouped (depthwise) convolution: peft trains it but cannot
    merge it into its layer, so sft-export could not fold it (was: a run that trained, then
    sft-export's NotImplementedError traceback)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in backbone.named_modules():
        base = layer.get_base_layer() if isinstance(layer, BaseTunerLayer) else None
        if isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d) and base.groups > 1:
            raise SFTError(
                f"adapter.target_modules matches {name}, a grouped (depthwise) convolution "
                f"(groups={base.groups}) of backbone {backbone_name!r}, whose adapter peft "
                "cannot merge into it (sft-export could not fold it): leave it out (null adapts "
                "every Linear and non-grouped Conv2d)"
            )


def adapters_in_contiguous_layout(module: nn.Module) -> None:
    """The adapters' weights back in the contiguous layout after `module` went channels_last:
    peft's DoRA reshapes its conv adapters' weights with `.view`, which a channels_last weight
    refuses (was: adapter.use_dora=true failed on every channels_last CNN)."""
    from peft.tuners.lora import LoraLayer

    for layer in module.modules():
        if isinstance(layer, LoraLayer):
            for parameter in [*layer.lora_A.parameters(), *layer.lora_B.parameters()]:
                parameter.data = parameter.data.contiguous()


def check_dora_dropout(backbone: nn.Module, dropout: float) -> None:
    """SFTError for DoRA with dropout on timm's SAME-padded convolutions: peft's DoRA then
    convolves the dropped-out input through `_conv_forward`, which does not pad as their
    forward does (was: a shape error on EfficientNet-Lite0's stem, said as the image size)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in backbone.named_modules():
        if (
            isinstance(layer, BaseTunerLayer)
            and type(layer.get_base_layer()) in same_padded_convs()
        ):
            raise SFTError(
                f"adapter.use_dora=true with adapter.dropout={dropout}: peft's DoRA convolves "
                f"{name}, timm's SAME-padded Conv2dSame, without its padding then; set "
                "adapter.dropout=0, or leave it out of adapter.target_modules"
            )


def is_adapter_parameter(name: str) -> bool:
    return ADAPTER_MARKER in name


def merge_adapters(module: nn.Module) -> nn.Module:
    """Fold every LoRA layer of `module` into its base layer (`W + scale * B A`) and put the
    base layer back in its place, in place: a plain module with the same outputs. peft's
    `merge_and_unload` does this on a `PeftModel`; `inject_adapter_in_model` leaves none, so
    this applies its two steps (`merge`, `get_base_layer`) to each layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in list(module.named_modules()):
        if not isinstance(layer, BaseTunerLayer):
            continue
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    return module


# Small checkpoints (adapter.save_only_trainable): the state_dict without the frozen base
# weights, and under this key what rebuilds and checks them (the backbone config, a hash).
BASE_WEIGHTS = "base_weights"


def frozen_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that do not train (with adapters: the pretrained base weights), by
    state_dict name."""
    return {name: p for name, p in model.named_parameters() if not p.requires_grad}


def weights_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and values (as float32, so a run in bf16-true precision and
    its fp32 evaluation agree): identical only for identical weights."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        t = t.float() if t.is_floating_point() else t
        digest.update(f"{name}:{tuple(t.shape)};".encode())
        # a flat copy: any memory layout (channels_last, size-1 dims) hashes by its values
        digest.update(t.reshape(-1).clone().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_base_weights(
    model: nn.Module, recorded: Mapping, where: str, found: str | None = None
) -> None:
    """SFTError unless `model`'s frozen weights are those a small checkpoint was trained on.
    `found`: their hash taken before (else hashed now)."""
    found = found or weights_hash(frozen_parameters(model))
    if found != recorded.get("sha256"):
        backbone = recorded.get("backbone", {})
        source = (
            backbone.get("model_name_or_path") or backbone.get("name") or backbone.get("_target_")
        )
        how = (
            "load it where the same base weights are installed"
            if backbone.get("pretrained") or backbone.get("checkpoint")
            # random base weights: only the training run's seed rebuilds them
            else "its backbone loads no weights, so its random base weights come back only in a "
            "process seeded as the training run was (resume=, sft-eval with that seed)"
        )
        raise SFTError(
            f"{where} holds only the trained weights (adapter.save_only_trainable); the base "
            f"weights of backbone {source!r} found here differ from those it was trained on "
            f"(sha256 {found[:12]} vs {str(recorded.get('sha256'))[:12]}): {how}"
        )
