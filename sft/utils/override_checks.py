"""Checks of the command line's overrides against the configs they compose: a group removed that
the run reads, added twice or chosen null, a base config chosen, a key no config reads, a
`--config-dir` file shadowed by sft's own, a method's choice undone. Each raises OverrideMistake."""

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sft.utils.composition_errors import closest_key
from sft.utils.config_files import overridden_choices, unknown_option
from sft.utils.overrides import SEARCH_SPACE, OverrideMistake, override_key


def check_not_a_hydra_sweep(override: Override) -> None:
    """Hydra's "Sweeping over Hydra's configuration is not supported" (and a traceback hint)
    for `hydra.sweeper.params.<key>=interval(...)`: a search dimension added the way the
    shipped searches list theirs; the key itself, as an override, is one. `~hydra.sweeper.params`
    (Hydra's lines) and `~hydra.sweeper.params.<key>` ("no such key": the key holds dots)
    are answered with what leaves a key out of the search."""
    key = override.key_or_group
    line = override.input_line.lstrip("+")
    if override.is_delete() and (key == SEARCH_SPACE or key.startswith(f"{SEARCH_SPACE}.")):
        searched = key.removeprefix(SEARCH_SPACE).lstrip(".") or "model.lr_head"
        raise OverrideMistake(
            f"{override.input_line}: a search's keys are not deleted; give a key one value to "
            f"leave it out of the search ({searched}=<value>: every trial has it), or write your "
            "own hparams_search config"
        )
    if not override.is_sweep_override() or not key.startswith("hydra."):
        return
    value = override.input_line.partition("=")[2]
    if key.startswith(f"{SEARCH_SPACE}."):
        raise OverrideMistake(
            f"{line}: to search a key (or change its range), give it as an override of its "
            f"own: '{key.removeprefix(f'{SEARCH_SPACE}.')}={value}' (it wins over "
            "hydra.sweeper.params)"
        )
    raise OverrideMistake(f"{line}: Hydra's own settings take one value, not a sweep")


def check_new_top_level_keys(
    parsed: list[Override], overrides: list[str], config_name: str, loader: Any
) -> None:
    """`+experiments=my_exp`, `+lr=0.1`: a top-level key no config has and no group names is
    read by nothing (was: added, and the run went on without it)."""
    added = [
        o.key_or_group
        for o in parsed
        if (o.is_add() or o.is_force_add())
        and not re.search(r"[./@]", o.key_or_group)
        and not loader.repository.group_exists(o.key_or_group)
    ]
    if not added:
        return
    others = [o for o in overrides if override_key(o) not in added]
    try:
        known = loader.load_configuration(config_name, others, run_mode=RunMode.RUN)
    except Exception:  # another override reads the added key: it is not read by nothing
        return
    # a config may read the key through an interpolation (`model.lr_head: ${lr}`)
    read = OmegaConf.to_yaml(known)
    for key in added:
        if key not in known and not re.search(rf"\$\{{[^}}]*\b{re.escape(key)}\b", read):
            hint = closest_key(key, config_name, overrides, loader)
            raise OverrideMistake(
                f"unknown config key '{key}': sft-{config_name} reads no such setting"
                + (f" ({hint})" if hint else "")
            )


def may_add(key: str, adds: Sequence[str]) -> bool:
    """Whether `+key=` adds under `adds`: a name takes the key or group itself and anything
    under it (`debug`, `hydra/launcher`); a name ending in "." only settings under it (`data.`:
    `+data.data_dir=`, not `+data=cifar10`)."""
    top = re.split(r"[./]", key)[0]
    return any(key.startswith(a) if a.endswith(".") else top == a for a in adds)


def ignored_addition(key: str, config_name: str, adds: Sequence[str]) -> str:
    """The refusal of `+key=...` on a command that would not read it."""
    command = f"sft-{config_name}"
    top = re.split(r"[./]", key)[0]
    if top == "model":
        return f"{key}: {command} takes the model from its checkpoint (ckpt_path) as trained"
    if f"{key}." in adds:  # the group itself: `+data=cifar10`
        return (
            f"{key}=...: {command} reads the checkpoint's {key}; +{key}.<setting>=... changes "
            "one of its settings"
        )
    if top == "trainer":  # `trainer.accelerator=cpu` reaches here as `++trainer.accelerator`
        return f"{key}: {command} has no trainer settings ({command} --cfg job lists its own)"
    under = ", ".join(a if a.endswith(".") else f"{a}." for a in adds)
    return (
        f"unknown config key '{key}': {command} reads no such setting ('+' adds settings under "
        f"{under} only)"
    )


def check_not_shadowed(
    loader: Any,
    config_name: str,
    overrides: list[str],
    swept: dict[str, list[str]],
    config_dir: str,
    extra_dir: str | None,
) -> None:
    """OverrideMistake for a config file the run composes (the primary config, each chosen
    option, the configs their defaults lists include) or a swept option, that a `--config-dir`
    file of the same name would give: Hydra searches the package first, so the user's file is
    never read (was: the packaged config ran, without a word; for a config included by
    another, e.g. callbacks/lr_monitor by callbacks/default, or a list's item, even after
    the top-level choices were checked)."""
    if extra_dir is None:
        return
    composed = loader.compute_defaults_list(config_name, overrides, RunMode.RUN).defaults
    paths = [d.config_path for d in composed if d.config_path]
    paths += [f"{group}/{option}" for group, options in swept.items() for option in options]
    for path in dict.fromkeys(paths):
        name = f"{path}.yaml"
        mine, packaged = Path(extra_dir, name), Path(config_dir, name)
        if not mine.is_file() or not packaged.is_file():
            continue
        if mine.read_bytes() != packaged.read_bytes():  # a copy of sft's (all of conf/) reads alike
            run_it = " and run it with --config-name <name>" if path == config_name else ""
            raise OverrideMistake(
                f"--config-dir {extra_dir}: {name} has the name of one of sft's configs, which "
                f"Hydra reads instead (the package is searched first): give yours another "
                f"name{run_it}"
            )


def check_group_is_chosen_here(
    override: Override, config_name: str, loader: Any, adds: Sequence[str], chosen: set[str | None]
) -> None:
    """`sft-eval ... model=resnet18_cifar`: a group the command's config does not choose, where
    the checkpoint holds that part of the run (was: Hydra's "Could not override 'model'. No
    match in the defaults list", whose advice, +model=..., is then refused)."""
    group = override.key_or_group
    if override.is_add() or override.is_force_add() or override.is_delete():
        return
    if group in chosen or group.startswith("hydra") or not loader.repository.group_exists(group):
        return
    command = f"sft-{config_name}"
    if may_add(group, adds):  # debug: none chosen by default, so added
        raise OverrideMistake(f"{group}=...: {command} chooses none by default: write +{group}=...")
    if group == "model":
        raise OverrideMistake(ignored_addition(group, config_name, ()))
    raise OverrideMistake(
        f"{group}=...: {command} has no {group} to choose; it runs the checkpoint (ckpt_path) "
        f"with the settings it was trained with ({command} --cfg job lists what it takes)"
    )


def check_not_a_base(override: Override, loader: Any) -> None:
    """`experiment=_fixed_steps`: a `_*.yaml` of a group is a base other options include, and
    alone it lacks what they add (was: a traceback for the first value it leaves unset)."""
    group = override.key_or_group
    if override.is_sweep_override() or not loader.repository.group_exists(group):
        return
    option = override.value()
    if isinstance(option, str) and option.startswith("_"):
        options = loader.get_group_options(group)
        raise OverrideMistake(
            f"{unknown_option(group, option, options)}; {group}/{option}.yaml is a base that "
            "other options include, not one to choose"
        )


# groups a run goes without when removed (`~logger`)
WITHOUT_CHOICE = ("logger",)


# the config groups a command's run reads, where its config chooses one: removed (`~data`), the
# run failed with Hydra's interpolation traceback, or (`~hydra`) ran outside sft's run folders
NEEDED_GROUPS = ("data", "model", "trainer", "paths", "hydra")


def check_not_removing_a_needed_group(
    override: Override, config_name: str, chosen: set[str | None]
) -> None:
    """OverrideMistake for `~data`, `~hydra`, ...: a group the command's run reads removed."""
    group = override.key_or_group.lstrip("+")
    if not override.is_delete() or group not in NEEDED_GROUPS or group not in chosen:
        return
    if group == "hydra":
        raise OverrideMistake(
            "~hydra removes Hydra's settings, from which sft takes its run folders, log and "
            "sweep summary: change one of them instead (e.g. hydra.run.dir=...)"
        )
    raise OverrideMistake(
        f"~{group} removes the {group} config, which sft-{config_name} reads: choose another "
        f"with {group}=<option> (sft-{config_name} --help lists them)"
    )


def check_not_added_again(
    override: Override, parsed: Sequence[Override], config_name: str, listed: set[str | None]
) -> None:
    """OverrideMistake for `+group=b` where the command's defaults list has the group (null
    too): Hydra refuses it alone, but beside `group=a` it dropped `+group=b` without a word
    (`experiment=a +experiment=b` ran experiment a)."""
    group = override.key_or_group
    if not override.is_add() or group not in listed:
        return
    given = " ".join(o.input_line for o in parsed if o.key_or_group == group)
    raise OverrideMistake(
        f"{given}: {config_name}.yaml's defaults list has the group {group} already, and "
        f"+{group}=... adds it a second time: choose one option, as {group}=<option>"
    )


def check_not_a_null_choice(override: Override, loader: Any, chosen_null: set[str]) -> None:
    """`logger=null`: Hydra takes no null for a config group's choice (was: its traceback,
    "Config group override must be a string or a list. Got NoneType")."""
    group = override.key_or_group
    if override.is_delete() or not loader.repository.group_exists(group):
        return
    if override.is_sweep_override() or override.value() is not None:
        return
    if group in chosen_null:  # sft-eval's data: null, the checkpoint's data
        raise OverrideMistake(f"{group}=null: this command's {group} is null already; leave it out")
    options = [o for o in loader.get_group_options(group) if not o.startswith("_")]
    # none: the group's own option for nothing (callbacks=none, adapter=none); ~logger: runs
    # without loggers; a run needs its model, data and trainer
    none = (
        f", or {group}=none for none"
        if "none" in options
        else f", or ~{group} for none"
        if group in WITHOUT_CHOICE
        else ""
    )
    raise OverrideMistake(
        f"{group}=null: a config group takes one of its options ({', '.join(options)}){none}"
    )


def check_method_kept(parsed: list[Override], cfg: DictConfig, loader: Any) -> None:
    """`method=lora adapter=none`: the command line's choice of a group wins over the one a
    method's config makes (`override /adapter: lora`), so the run would not be the method it
    is recorded as (was: the whole model fine-tuned, without a word). Another option of the
    group (an adapter config of the user's) keeps the method; `none` or `~adapter` undo it."""
    group = "method"
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}
    given = {o.key_or_group: o for o in parsed if not (o.is_add() or o.is_force_add())}
    options = _values(given[group]) if group in given else [choices.get(group)]
    for option in (o for o in options if isinstance(o, str)):
        for chosen_group, chosen in overridden_choices(loader, f"{group}/{option}").items():
            mine = given.get(chosen_group)
            if mine is None or not any(value in (None, "none") for value in _values(mine)):
                continue
            others = [
                o
                for o in loader.get_group_options(group)
                if not o.startswith("_")
                and chosen_group not in overridden_choices(loader, f"{group}/{o}")
            ]
            raise OverrideMistake(
                f"{group}={option} chooses {chosen_group}={chosen}, which {mine.input_line} "
                f"undoes (the run would not be {option}): leave it out, or choose a {group} "
                f"without {chosen_group} ({', '.join(others)})"
            )


def _values(override: Override) -> list[Any]:
    """What an override gives its key, each value of a sweep (`~key`: None)."""
    if override.is_delete():
        return [None]
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.value()]
