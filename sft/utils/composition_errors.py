"""One line for a mistake Hydra's loader reports while composing: an unknown key (with the closest
one), a key deleted that is not there, a group added twice, a value a typed key refuses, a config
file that is not valid YAML. Each function returns the line, or None for what it does not know."""

import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    InterpolationResolutionError,
    ValidationError,
)

from sft.utils.config_files import GROUP_TWICE, SAME_CHOICE_TWICE, config_file
from sft.utils.overrides import SEARCH_SPACE, override_key, trainer_arguments
from sft.utils.suggest import did_you_mean, nearest_names

# Hydra's messages for the mistakes it does not raise as typed exceptions (hydra-core 1.3)
NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


NOT_DELETABLE = re.compile(r"Could not delete from config\. '([^']+)' does not exist")


ALREADY_THERE = re.compile(r"Could not append to config\. An item is already at '([^']+)'")


MERGE_FAILED = re.compile(r"Error merging override ")


# a key a config file sets that a typed node (Hydra's own settings, a plugin's) lacks
TYPED_FILE_KEY = re.compile(
    r"^In '([^']+)': ConfigKeyError raised while composing config:\nKey '[^']+' not in "
    r"'(\w+)'\n\s+full_key: (\S+)"
)


def unresolvable_message(err: InterpolationResolutionError, where: str) -> str:
    """One line for a value that reads a setting the composed config lacks: most often config
    groups of different kinds (text data, whose tokenizer is the model's, with an image model)."""
    reason = str(err).splitlines()[0]
    missing = re.search(r"Interpolation key '([^']+)' not found", reason)
    hint = ""
    if missing and where == "data" and missing.group(1).startswith("model."):
        hint = (
            ": this data config reads a setting of the model config, which it lacks; choose a "
            "model for this kind of input (text data: a text model such as model=minilm_fused)"
        )
    return f"{err.full_key or where}: {reason}{hint}"


def _null_search_space_set(config_name: str, overrides: list[str], loader: Any) -> str | None:
    """One line for `hydra.sweeper.params...=` given where the sweeper's params are null (the
    basic sweeper's): Hydra cannot merge into them (was: omegaconf's AttributeError or
    AssertionError traceback)."""
    given = [o for o in overrides if o.lstrip("+~").startswith(SEARCH_SPACE)]
    if not given:
        return None
    rest = [o for o in overrides if o not in given]
    try:
        composed = loader.load_configuration(config_name, rest, run_mode=RunMode.MULTIRUN)
    except Exception:  # another override's mistake: said as such
        return None
    if OmegaConf.select(composed, SEARCH_SPACE, default=None) is not None:
        return None
    return (
        f"{given[0].lstrip('+~')}: this sweeper (Hydra's basic one) has no {SEARCH_SPACE} to "
        f"set on the command line: give the values there (-m seed=0,1,2), or set "
        f"{SEARCH_SPACE} in a config file (your experiment's hydra: section)"
    )


def describe_composition_error(
    exc: Exception, config_name: str, overrides: list[str], loader: Any
) -> str | None:
    """One line for an unknown key (override or delete), a `+key` that exists or a value a typed
    key cannot take; else None."""
    message = str(exc)
    if line := _null_search_space_set(config_name, overrides, loader):
        return line
    if (match := NOT_OVERRIDABLE.match(message)) and isinstance(
        exc.__cause__, (ConfigAttributeError, ConfigKeyError)
    ):
        key = match.group(1)
        deeper = str(getattr(exc.__cause__, "full_key", "") or "")
        if deeper.startswith(f"{key}."):
            # `key={...}` merges into the configured node: one of its keys is new (was: "unknown
            # config key '<key>'", which the config has)
            return (
                f"unknown config key '{deeper}' in {key}={{...}}: the configured {key} has no "
                f"such setting; add it with +{deeper}=... (and set the others as "
                f"{key}.<setting>=...)"
            )
        hint = options_having(key, config_name, overrides, loader) or closest_key(
            key, config_name, overrides, loader
        )
        if hint and key.startswith("model."):
            # the model's and its backbone's options are more than any config lists
            hint += " " if hint.endswith("?") else ". "
            hint += f"An option the config does not list is added with +{key}=..."
        return f"unknown config key '{key}' ({hint or f'to add a new key write +{key}=...'})"
    if match := NOT_DELETABLE.search(message):
        key = match.group(1)
        if _composed_without_deletions(config_name, overrides, loader, key) is None:
            # Hydra takes a null key for a missing one (was: "no such config key (did you
            # mean '<the same key>'?)")
            return f"cannot delete '{key}': it is null already; leave ~{key} out"
        hint = closest_key(key, config_name, overrides, loader)
        return f"cannot delete '{key}': no such config key" + (f" ({hint})" if hint else "")
    if (match := GROUP_TWICE.search(message) or SAME_CHOICE_TWICE.search(message)) and any(
        o.startswith(f"+{match.group(1)}=") for o in overrides
    ):
        # the defaults list has the group already (`experiment: null` too): `+` adds it again
        # (was, with `group=a +group=b`: Hydra's "appears more than once" lines)
        group = match.group(1)
        given = " ".join(o for o in overrides if o.lstrip("+").startswith(f"{group}="))
        # Hydra's own groups (hydra/sweeper) are in Hydra's defaults, not the primary config's
        where = "Hydra's" if group.startswith("hydra/") else f"{config_name}.yaml's"
        return (
            f"{given}: {where} defaults list has the group {group} already, and "
            f"+{group}=... adds it a second time: choose one option, as {group}=<option>"
        )
    if (
        MERGE_FAILED.match(message)
        and isinstance(exc.__cause__, ConfigTypeError)
        and "does not support deletion" in str(exc.__cause__)
    ):
        # `~hydra.sweeper.enqueue_trials`: a typed config (Hydra's own, a plugin's) keeps every
        # key (was: Hydra's three raw lines)
        key = str(exc.__cause__.full_key)
        return (
            f"cannot delete '{key}': its config is typed and keeps every key; set it instead: "
            + (_emptied(key, config_name, overrides, loader))
        )
    if (
        MERGE_FAILED.match(message)
        and isinstance(exc.__cause__, ConfigTypeError)
        and str(exc.__cause__).startswith("Cannot merge ")
    ):
        # `model.metrics={a:1}` for a list, `model.head=[a]` for a mapping, `model={metrics:
        # {a:1}}` deeper (was: Hydra's four lines, "Cannot merge DictConfig with ListConfig")
        key = str(exc.__cause__.full_key)  # the override's key, however deep the mismatch
        # the one Hydra names (`model=<option> 'model={...}'` share the key): the config as
        # the others make it, else as the overrides before it did (another may be wrong too)
        failed = message.splitlines()[0].removeprefix("Error merging override ").strip()
        at = next(
            (i for i, o in enumerate(overrides) if o == failed),
            next((i for i, o in enumerate(overrides) if override_key(o) == key), None),
        )
        given = key if at is None else overrides[at]
        cfg = (
            None
            if at is None
            else _composed(config_name, overrides[:at] + overrides[at + 1 :], loader)
            or _composed(config_name, overrides[:at], loader)
        )
        if cfg is not None and (
            found := _list_or_mapping_mismatch(_node_at(cfg, key), _override_value(given), key)
        ):
            where, is_list = found
            if is_list:
                return f"{given}: {where} is a list, not a mapping: give a list, {where}=[...]"
            return f"{given}: {where} is a mapping, not a list: set its keys, {where}.<setting>=..."
        return (
            f"{given}: a mapping given where the config has a list, or a list where it has a "
            f"mapping ({str(exc.__cause__).splitlines()[0]})"
        )
    if MERGE_FAILED.match(message) and isinstance(exc.__cause__, ValidationError):
        # a value of the wrong type for a typed key (Hydra's own settings, e.g. a sweeper's)
        cause = exc.__cause__
        return f"{cause.full_key}: {cause.msg.splitlines()[0]}"
    if match := ALREADY_THERE.search(message):
        key = match.group(1)
        return (
            f"config key '{key}' already exists: set it with {key}=... "
            f"(or ++{key}=... to add or override)"
        )
    if match := TYPED_FILE_KEY.match(message):  # (was: Hydra's four lines)
        path, type_name, key = match.groups()
        parent, _, name = key.rpartition(".")
        close = difflib.get_close_matches(name, typed_fields(type_name), n=1)
        hint = (
            f"did you mean '{parent}.{close[0]}'?" if close else f"{type_name} has no such setting"
        )
        return f"{config_file(loader, path)}: unknown config key '{key}' ({hint})"
    if (bad := _yaml_error(exc)) is not None:  # a config file of the user's (was: a traceback)
        mark = bad.problem_mark
        return (
            f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML "
            f"({bad.problem}{', ' + bad.context if bad.context else ''})"
        )
    return None


_ABSENT = object()


def _composed(config_name: str, overrides: list[str], loader: Any) -> DictConfig | None:
    """The config composed with `overrides`; None where they do not compose (that mistake is
    said once the one reported is fixed)."""
    try:
        return loader.load_configuration(config_name, overrides, RunMode.RUN)
    except Exception:
        return None


def _composed_without_deletions(
    config_name: str, overrides: list[str], loader: Any, key: str
) -> Any:
    """The value of `key` in the config composed without the `~key` overrides; `_ABSENT` where
    the key is not there (or the others do not compose)."""
    cfg = _composed(config_name, [o for o in overrides if not o.startswith("~")], loader)
    return _ABSENT if cfg is None else OmegaConf.select(cfg, key, default=_ABSENT)


def _override_value(override: str) -> Any:
    """The value an override gives, as Python (a dict for `{...}`, a list for `[...]`); None
    for one that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).value()
    except Exception:
        return None


def _node_at(cfg: DictConfig, key: str) -> Any:
    """The config node at the dotted `key`, its interpolations unresolved; None where absent."""
    node: Any = cfg
    for name in key.split("."):
        node = node._get_node(name) if OmegaConf.is_dict(node) and name in node else None
    return node


def _list_or_mapping_mismatch(node: Any, value: Any, key: str) -> tuple[str, bool] | None:
    """Where `value`, merged into the config `node` at `key`, gives a mapping for a list or a
    list for a mapping: the full key and whether the config has a list there. A list replaces
    a list whole, so the search stops at lists."""
    if isinstance(value, dict):
        if OmegaConf.is_list(node):
            return key, True
        if OmegaConf.is_dict(node):
            for name, inner in value.items():
                # the node, not its value: an interpolation is not resolved
                child = node._get_node(name) if name in node else None
                if found := _list_or_mapping_mismatch(child, inner, f"{key}.{name}"):
                    return found
    elif isinstance(value, list) and OmegaConf.is_dict(node):
        return key, False
    return None


def _emptied(key: str, config_name: str, overrides: list[str], loader: Any) -> str:
    """`key=[]` or `key={}`, the override that empties `key`, by its value; `key=<value>` for
    a scalar."""
    value = _composed_without_deletions(config_name, overrides, loader, key)
    # a typed scalar may not take null (hydra.run.dir): another value
    empty = "[]" if OmegaConf.is_list(value) else "{}" if OmegaConf.is_dict(value) else "<value>"
    return f"{key}={empty}"


def _yaml_error(exc: BaseException | None) -> yaml.MarkedYAMLError | None:
    """The YAML syntax error (with its file and position) behind a composition error, if any."""
    while exc is not None:
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def options_having(key: str, config_name: str, overrides: list[str], loader: Any) -> str | None:
    """`adapter.r=4` with adapter=none: which options of the key's config group have it."""
    group, _, rest = key.partition(".")
    if not rest or not loader.repository.group_exists(group):
        return None
    others = [o for o in overrides if override_key(o) not in (key, group)]
    having = []
    for option in loader.get_group_options(group):
        if option.startswith("_"):
            continue
        try:
            cfg = loader.load_configuration(
                config_name, [*others, f"{group}={option}"], run_mode=RunMode.RUN
            )
        except Exception:
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT:
            having.append(f"{group}={option}")
    if not having:
        return None
    verb = "has" if len(having) == 1 else "have"
    return f"the {group} chosen has no such setting; {', '.join(having)} {verb} it"


def typed_fields(type_name: str) -> list[str]:
    """The fields of the structured config class named `type_name` among ConfigStore's nodes
    (Hydra's own settings, its plugins'), nested ones included (HydraConf's JobConf)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if not isinstance(node, DictConfig) or found:
            return
        kind = OmegaConf.get_type(node)
        if kind is not None and kind.__name__ == type_name:
            found.extend(str(k) for k in node)
            return
        for k in node:
            walk(node._get_node(k))

    def stored(repo: dict) -> Iterator[Any]:
        for value in repo.values():
            yield from stored(value) if isinstance(value, dict) else [value.node]

    for node in stored(ConfigStore.instance().repo):
        walk(node)
    return found


# settings HF Trainer (TrainingArguments) and timm's train.py name otherwise: the key that sets
# each here (was: a suggestion by spelling, `max_grad_norm` -> trainer.max_time)
NAMED_ELSEWHERE = {
    "learning_rate": "model.lr_backbone, with model.lr_head for the head",
    "max_grad_norm": "trainer.gradient_clip_val",
    "clip_grad": "trainer.gradient_clip_val",
    "num_train_epochs": "trainer.max_epochs",
    "epochs": "trainer.max_epochs",
    "per_device_train_batch_size": "data.batch_size",
    "per_device_eval_batch_size": "data.eval_batch_size",
    "gradient_accumulation_steps": "trainer.accumulate_grad_batches",
    "grad_accum_steps": "trainer.accumulate_grad_batches",
    "warmup_steps": "model.warmup_ratio (a fraction of the run's steps)",
    "warmup_epochs": "model.warmup_ratio (a fraction of the run's steps)",
    "lr_scheduler_type": "model.scheduler._target_",
    "sched": "model.scheduler._target_",
    "eval_steps": "trainer.val_check_interval",
    "logging_steps": "trainer.log_every_n_steps",
    "save_total_limit": "callbacks.model_checkpoint.save_top_k",
    "metric_for_best_model": "callbacks.model_checkpoint.monitor",
    "eval_metric": "callbacks.model_checkpoint.monitor",
    "smoothing": "model.label_smoothing",
    "label_smoothing_factor": "model.label_smoothing",
    "data_seed": "data.seed",
    "dataloader_num_workers": "data.num_workers",
    "drop_path": "model.backbone.drop_path_rate",
    "img_size": "model.backbone.input_size",
    "weight_decay": "model.weight_decay",
}


# flags of timm's train.py and HF's example scripts (as keys: `--batch-size` -> batch_size)
# beyond NAMED_ELSEWHERE's keys; read for flags alone (`seed` is sft's own key, `lr` a key of
# torch's optimizers)
FLAGS_ELSEWHERE = {
    "lr": "model.lr_backbone, with model.lr_head for the head",
    "batch_size": "data.batch_size",
    "max_steps": "trainer.max_steps",
    "amp": "trainer.precision=bf16-mixed",
    "channels_last": "model.channels_last",
    "layer_decay": "model.layer_decay",
    "checkpoint_hist": "callbacks.model_checkpoint.save_top_k",
    "opt": "model.optimizer._target_ (a torch.optim class)",
    "initial_checkpoint": "+model.backbone.checkpoint",
    "drop_path": "+model.backbone.drop_path_rate (timm models)",
    "aa": "data.rand_augment (a magnitude)",
    "reprob": "data.random_erasing",
    "mixup": "data.mixup_alpha",
    "cutmix": "data.cutmix_alpha",
    "num_classes": "model.num_classes",
    "data_dir": "data.data_dir",
    "workers": "data.num_workers",
    "output_dir": "hydra.run.dir",
    "output": "hydra.run.dir",
    "seed": "seed",
}
# the flags whose value is the setting's value too (e.g. not --opt adamw, --sched cosine,
# --warmup-steps 500: a class, a schedule's name, a count for a fraction)
FLAG_VALUE_CARRIES = {
    *("lr", "learning_rate", "batch_size", "per_device_train_batch_size", "epochs"),
    *("num_train_epochs", "max_steps", "weight_decay", "max_grad_norm", "clip_grad"),
    *("gradient_accumulation_steps", "grad_accum_steps", "logging_steps", "smoothing"),
    *("label_smoothing_factor", "layer_decay", "reprob", "mixup", "cutmix", "num_classes"),
    *("data_dir", "workers", "dataloader_num_workers", "data_seed", "seed", "output_dir"),
    "output",
}
# Lightning's Trainer arguments that sft sets through config groups, not trainer.<name>
SET_BY_GROUPS = {"logger": "logger=<option>", "callbacks": "callbacks=<option>"}


def flag_mistake(unknown: Sequence[str], argv: Sequence[str], config_name: str) -> str:
    """The line for a flag Hydra's parser does not know (`--lr 0.1`, as timm's train.py and
    HF's example scripts take settings; was: argparse's usage block and exit status 2): the
    key that sets it, for sft-train."""
    flag = next(a for a in unknown if a.startswith("-"))
    written, _, value = flag.partition("=")
    name = written.lstrip("-").replace("-", "_")
    at = list(argv).index(flag) if flag in argv else -1
    if not value and 0 <= at < len(argv) - 1 and not argv[at + 1].startswith("-"):
        value = argv[at + 1] if "=" not in argv[at + 1] else ""
    line = (
        f"{written}: sft-{config_name} takes Hydra overrides, key=value, and Hydra's flags (--help)"
    )
    known = None
    if config_name == "train":  # (Lightning's Trainer arguments: `--max_epochs=3`)
        trainer = f"trainer.{name}" if name in trainer_arguments() else None
        known = (
            FLAGS_ELSEWHERE.get(name)
            or NAMED_ELSEWHERE.get(name)
            or SET_BY_GROUPS.get(name)
            or trainer
        )
    if known is None:
        return line
    carries = name in FLAG_VALUE_CARRIES or (known == trainer and name not in SET_BY_GROUPS)
    example = ""
    if carries and value and not value.startswith(("~", "+", "-")):
        setting = re.match(r"[+\w.]+", known).group()
        example = f" (e.g. {setting}={value})"
    return f"{line}; {written} is set here by {known}{example}"


def closest_key(key: str, config_name: str, overrides: list[str], loader: Any) -> str | None:
    """'did you mean ...?' from the keys of the config composed without the bad override."""
    others = [o for o in overrides if override_key(o) != key]
    keys: list[str] = []
    for attempt in (others, [o for o in others if "." not in o.partition("=")[0]], []):
        try:
            cfg = loader.load_configuration(config_name, attempt, run_mode=RunMode.RUN)
        except Exception:
            continue
        keys = list(dotted_keys(cfg))
        break
    if "trainer" in keys:  # Lightning's arguments are valid keys even where conf/trainer omits them
        keys += [f"trainer.{name}" for name in sorted(trainer_arguments())]
    parent = key.rpartition(".")[0]
    # a top-level name may be a config group misspelt (`experiments=...`)
    groups = [g for g in loader.list_groups("") if g != "hydra"] if not parent else []
    siblings = [k for k in keys if k.rpartition(".")[0] == parent] + groups
    # the right name at another depth of the same node (`model.pooling` for
    # `model.backbone.pooling`; was: "did you mean 'model.label_smoothing'?")
    top, name = key.partition(".")[0], key.rpartition(".")[2]
    elsewhere = [k for k in keys if k.partition(".")[0] == top and k.rpartition(".")[2] == name]
    if parent and elsewhere:
        return f"did you mean '{elsewhere[0]}'?"
    if known := NAMED_ELSEWHERE.get(name):
        setting = re.match(r"[\w.]+", known).group()
        if setting in keys or setting.rpartition(".")[0] in keys:  # (a backbone's: added)
            added = "" if setting in keys else "+"
            return f"{name} (HF Trainer's or timm's name) is set here by {added}{known}"
    close = nearest_names(key, siblings) or difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
    if close and close[0] in groups:
        return f"did you mean the config group {close[0]}=<option>?"
    return did_you_mean([f"'{name}'" for name in close]) if close else None


def dotted_keys(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Every key of a config as `a.b.c`, without resolving interpolations."""
    for name, child in node.items_ex(resolve=False):
        key = f"{prefix}{name}"
        yield key
        # a typed sub-config node may stand for None (it compares equal to None) or be missing
        is_none = child == None  # noqa: E711 (DictConfig's own comparison)
        if isinstance(child, DictConfig) and not is_none and not OmegaConf.is_missing(node, name):
            yield from dotted_keys(child, f"{key}.")
