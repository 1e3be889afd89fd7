"""Command-line overrides checked before Hydra runs: one `error:` line for a typo, with a suggestion.

Hydra reports an unknown key or group option itself, but as several lines (search path, a hint
about `+key`) from inside `hydra.main`, before any task code runs. `check_overrides` composes the
command line's config first with Hydra's own loader and turns those mistakes into one line with the
closest match (difflib). Anything it does not recognise, and every flag that is not a plain run or
sweep (`--help`, `--info`, `--config-path`...), is left to Hydra, so a valid command is never
blocked; `--config-dir` (a user's own configs) joins the search path as Hydra adds it. The
commands that take their model and data from a checkpoint also refuse a `+key=` they would not
read (Hydra would add it and they would ignore it).
HYDRA_FULL_ERROR=1 skips the check: Hydra then reports with its full trace.
"""

import ast
import contextlib
import difflib
import functools
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from hydra._internal.hydra import Hydra
from hydra._internal.utils import (  # hydra.main's own parser and search path: same behaviour
    create_config_search_path,
    get_args_parser,
)
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import MissingConfigException, OverrideParseException
from hydra.types import RunMode
from hydra.version import setbase
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    ValidationError,
)

from sft.errors import SFTError
from sft.utils.config import CONF_DIR
from sft.utils.config_files import (
    GROUP_TWICE,
    SAME_CHOICE_TWICE,
    check_config_file_keys,
    config_file,
    describe_defaults_error,
    file_choosing,
    overridden_choices,
    unknown_choice_in_swept_files,
    unknown_option,
)
from sft.utils.ddp_ranks import rank_command
from sft.utils.suggest import did_you_mean, nearest_names

F = TypeVar("F", bound=Callable[..., Any])

# flags after which Hydra does not compose the primary config the usual way (--help and --info
# compose it with the overrides, as --cfg does: their mistakes are checked, were tracebacks)
HYDRA_HANDLES = (
    "hydra_help",
    "shell_completion",
    "config_path",
    "config_name",
    "experimental_rerun",
)
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
# a launcher config of sft's whose base comes with hydra-submitit-launcher, not installed
SUBMITIT_MISSING = re.compile(r"In 'hydra/launcher/(\w+)': Could not load 'hydra/launcher/submitit")


class OverrideMistake(Exception):
    """A command-line override that cannot compose, described in one line."""


# the entry configs of sft-train, sft-eval, sft-predict and sft-export
COMMAND_CONFIGS = ("train", "eval", "predict", "export")


def check_overrides(
    config_name: str,
    argv: Sequence[str],
    config_dir: str = CONF_DIR,
    adds: Sequence[str] | None = None,
) -> None:
    """Raise OverrideMistake for an unknown key or group option, or an unparsable override;
    with `adds`, also for a key added (`+key=`) outside those top-level keys: a command that
    takes the rest from a checkpoint would ignore it.

    Sweep overrides (`a=1,2`, `choice(...)`, `range(...)`, `glob(...)`) are checked with their
    first value (every value for a config group); other sweeps (`interval(...)`) are left out.
    """
    args, unknown = get_args_parser().parse_known_args(list(argv))
    # Hydra raises a ValueError (a traceback) for more than one of these
    modes = [
        flag
        for flag, on in (
            ("--run", args.run),
            ("-m", args.multirun),
            ("--cfg", args.cfg),
            ("--info", args.info),
            ("--shell-completion", args.shell_completion),
        )
        if on
    ]
    if len(modes) > 1:
        raise OverrideMistake(f"{' and '.join(modes)} cannot be combined: give one of them")
    if args.cfg == "hydra" and args.resolve:
        # Hydra prints its part cut from the config, which its interpolations refer to (was:
        # InterpolationKeyError traceback, 'paths.log_dir' not found)
        raise OverrideMistake(
            "--cfg hydra --resolve cannot resolve Hydra's settings apart from the run's config, "
            "which they refer to: --cfg all --resolve -p hydra.<key> prints one resolved (e.g. "
            "hydra.run.dir, the run's folder)"
        )
    # --cfg, --help and --info print, and run nothing
    prints = bool(args.cfg or args.help or args.info)
    # (were: -p ignored and the run started, a full training run; --resolve Hydra's traceback,
    # which takes it with --cfg or --help only)
    if args.resolve and not (args.cfg or args.help):
        raise OverrideMistake(
            "--resolve is for printing the config, with --cfg job (or all, hydra) or --help"
        )
    if args.package and not (prints or args.hydra_help or args.shell_completion):
        raise OverrideMistake(
            "-p/--package is for printing the config, with --cfg job (or all, hydra): without "
            "--cfg the command runs"
        )
    if args.config_name in COMMAND_CONFIGS and args.config_name != config_name:
        # (was: that config run by this command: a traceback, after a run folder was made)
        raise OverrideMistake(
            f"--config-name={args.config_name} is sft-{args.config_name}'s config: run "
            f"sft-{args.config_name} (sft-{config_name} runs {config_name})"
        )
    if unknown or any(getattr(args, flag, None) for flag in HYDRA_HANDLES):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as exc:
        reason = " ".join(exc.message.splitlines()[0].split())
        raise OverrideMistake(
            f"cannot parse override '{exc.override}': {reason}{quoting_hint(exc.override)}"
        ) from exc
    for override in parsed:
        check_not_a_hydra_sweep(override)
    for override in parsed if adds is not None else []:
        key = override.key_or_group
        if (override.is_add() or override.is_force_add()) and not _may_add(key, adds):
            raise OverrideMistake(ignored_addition(key, config_name, adds))

    with config_search(config_dir, args.config_dir):
        loader = GlobalHydra.instance().config_loader()
        for override in parsed:
            override.config_loader = loader  # glob(...) lists the group's options through it
        # the groups the command's config chooses (sft-eval: no model, experiment, ...)
        primary = loader.repository.load_config(config_name)
        defaults = getattr(primary, "defaults_list", None) or []
        chosen = {getattr(d, "group", None) for d in defaults} if adds is not None else set()
        # groups the command's config leaves null (sft-eval's data: the checkpoint's)
        nulls = {d.group for d in defaults if getattr(d, "group", None) and d.value is None}
        chosen_groups = {getattr(d, "group", None) for d in defaults} - nulls
        for override in parsed:
            check_not_a_base(override, loader)
            check_not_a_null_choice(override, loader, nulls)
            check_not_removing_a_needed_group(override, config_name, chosen_groups)
            check_not_added_again(override, parsed, config_name, chosen_groups | nulls)
            named = override.key_or_group == "hydra.job.name"
            if named and (config_name == "eval" or override.value() == "eval"):
                # (else an eval's record was result.json, read as a training run's, or the
                # reverse)
                raise OverrideMistake(
                    "hydra.job.name: sft-eval's job is named eval, by which its record "
                    "(scores.json) is told from a training run's; leave it out"
                )
            if adds is not None:
                check_group_is_chosen_here(override, config_name, loader, adds, chosen)
        overrides = list(representative_overrides(parsed, loader))
        try:
            cfg = loader.load_configuration(config_name, overrides, run_mode=RunMode.RUN)
        except MissingConfigException as exc:
            if exc.missing_cfg_file and exc.options is not None:
                group, _, option = exc.missing_cfg_file.rpartition("/")
                line = unknown_option(group, option, exc.options)
                # (was: no file named; Hydra's own message names the primary config)
                where = file_choosing(loader, parsed, group, option)
                raise OverrideMistake(f"{where}: {line}" if where else line) from None
        except Exception as exc:
            if plugin := SUBMITIT_MISSING.search(str(exc)):  # its configs come with the plugin
                raise OverrideMistake(
                    f"hydra/launcher={plugin.group(1)} runs its jobs through submitit, whose "
                    "Hydra plugin is not installed: pip install -e '.[cluster]' "
                    "(hydra-submitit-launcher)"
                ) from None
            mistake = describe_composition_error(
                exc, config_name, overrides, loader
            ) or describe_defaults_error(exc, config_name, overrides, loader)
            if mistake:
                raise OverrideMistake(mistake) from None
        else:
            check_new_top_level_keys(parsed, overrides, config_name, loader)
            swept = {
                o.key_or_group: list(o.sweep_string_iterator())
                for o in parsed
                if o.is_discrete_sweep() and loader.repository.group_exists(o.key_or_group)
            }
            if mistake := check_config_file_keys(cfg, config_name, loader, swept):
                raise OverrideMistake(mistake)
            set_here = {o.key_or_group for o in parsed}
            if mistake := unknown_choice_in_swept_files(loader, swept, set_here):
                raise OverrideMistake(mistake)
            check_not_shadowed(loader, config_name, overrides, swept, config_dir, args.config_dir)
            check_method_kept(parsed, cfg, loader)
            # a multirun: -m, or hydra.mode=MULTIRUN in a config or an override
            multirun = args.multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
            sweeper = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get(
                "hydra/sweeper"
            )
            if sweeper not in (None, "basic") and not multirun and not prints:
                searches = [o.input_line for o in parsed if o.key_or_group == "hparams_search"]
                raise OverrideMistake(
                    f"{searches[0] if searches else f'hydra/sweeper={sweeper}'} is a search, "
                    "which runs as a multirun: add -m"
                )
            drawn = [o for o in parsed if o.is_interval_sweep()]
            if drawn and sweeper in (None, "basic") and not prints:  # was: a traceback under -m
                raise OverrideMistake(
                    f"{drawn[0].input_line.lstrip('+')}: an interval is searched, which Hydra's "
                    "basic sweeper cannot do: run it with -m hydra/sweeper=sft_optuna (or an "
                    "hparams_search= config), or sweep listed values (a,b,c or range(a,b,step))"
                )
            sweeps = [o for o in parsed if o.is_sweep_override()]
            if sweeps and prints:  # (was: Hydra's advice to add -m; with -m too, under --help)
                runs = "-m without --help and --info" if multirun else "-m"
                raise OverrideMistake(
                    f"{sweeps[0].input_line.lstrip('+')} gives several values, and --cfg, "
                    f"--help and --info show one config: give one of them ({runs} runs the sweep)"
                )
            if sweeps and not multirun:  # Hydra's three-line advice
                raise OverrideMistake(
                    f"{sweeps[0].input_line.lstrip('+')} gives several values, which only a "
                    "multirun sweeps: add -m, or write a list as [a,b] (a text with commas: "
                    "quote it)"
                )
            # a required value (`???`, e.g. sft-eval's ckpt_path) left unset; a sweeper may set
            # values of its own, and --cfg only prints
            missing = [k for k in unset_keys(cfg) if not k.startswith("hydra.")]
            if missing and not multirun and not prints:
                raise OverrideMistake(
                    f"missing value for {', '.join(sorted(missing))}: set it, e.g. "
                    f"{sorted(missing)[0]}=..."
                )
            if not prints:
                check_run_settings(parsed, cfg, multirun)
            if multirun and config_name == "train" and not prints:
                check_swept_value_types(parsed, overrides, cfg, config_name, loader)
            if multirun and not prints:
                check_launcher(cfg, parsed)
            if args.cfg and (args.resolve or args.package):
                check_printable(cfg, args.cfg, args.package, args.resolve, config_name)
            elif args.help and args.resolve:  # the page shows the job's config resolved
                check_printable(cfg, "job", None, True, config_name)


def check_printable(
    cfg: DictConfig, mode: str, package: str | None, resolve: bool, config_name: str
) -> None:
    """OverrideMistake where Hydra would fail to print `--cfg <mode>` resolved (`--resolve`; a
    `-p <key>` of one value is resolved too): were omegaconf's tracebacks for configs that
    compose (text data with an image model, whose run says so in one line)."""
    with hydra_config_of(cfg):  # ${hydra:...}, as Hydra has it when it prints
        _resolve_shown(cfg, mode, package, resolve, config_name)


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


def _resolve_shown(
    cfg: DictConfig, mode: str, package: str | None, resolve: bool, config_name: str
) -> None:
    if mode == "hydra":  # Hydra prints its part cut from the config its values refer to
        shown = OmegaConf.create({"hydra": OmegaConf.to_container(cfg.hydra)})
    elif mode == "job":
        shown = OmegaConf.create({k: v for k, v in cfg.items_ex(resolve=False) if k != "hydra"})
    else:
        shown = cfg
    try:
        node = OmegaConf.select(shown, package) if package else shown  # a value: resolved
        if resolve and isinstance(node, DictConfig | ListConfig):  # a part: with --resolve
            OmegaConf.to_container(node, resolve=True)
    except (InterpolationResolutionError, MissingMandatoryValue) as err:
        key = err.full_key or package or ""
        # Hydra's values of a job (hydra.runtime.*, hydra.job.num) are set as it starts
        job_time = re.search(r"\bhydra\.(runtime|job)\.", str(err)) or (
            isinstance(err, MissingMandatoryValue) and key.startswith("hydra.")
        )
        if job_time:
            raise OverrideMistake(
                f"{key} reads a value Hydra sets when a run starts: --cfg cannot show it "
                "resolved (--cfg job --resolve shows the run's own config resolved; its folder: "
                "--cfg all -p hydra.run.dir)"
            ) from None
        if mode == "hydra":
            raise OverrideMistake(
                f"--cfg hydra cannot resolve {key}: it reads the run's config, which --cfg hydra "
                f"leaves out: --cfg all --resolve -p {package or key} prints it"
            ) from None
        reads_model = re.search(r"Interpolation key 'model\.", str(err))
        if reads_model and config_name != "train":  # the checkpoint's model, when it runs
            raise OverrideMistake(
                f"{key} reads the model's settings, which sft-{config_name} takes from the "
                "checkpoint when it runs: --cfg cannot show it resolved"
            ) from None
        if isinstance(err, InterpolationResolutionError):
            raise OverrideMistake(unresolvable_message(err, key.partition(".")[0])) from None
        raise OverrideMistake(f"{key}: {str(err).splitlines()[0]}") from None


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


SEARCH_SPACE = "hydra.sweeper.params"


# the functions of Hydra's override grammar (and its sweepers'), which a value may call
HYDRA_FUNCTIONS = (
    "choice", "range", "interval", "tag", "glob", "sort", "shuffle",
    "int", "float", "str", "bool", "json_str", "extend_list",
)  # fmt: skip


# characters Hydra's override grammar refuses in a plain value (`~/data`: a home folder; was
# no hint for ~ ! # ^ & ; < > `)
QUOTED = "()[]{}=:~!#^&;<>`"


PATH_STARTS = ("/", "~", ".")


def quoting_hint(override: str) -> str:
    """How to quote a value that holds characters of Hydra's override grammar, a file name
    such as `my reviews (1).csv` or `a=b.csv`; not for a list, a dict or a sweep function."""
    key, sep, value = override.partition("=")
    called = re.fullmatch(r"\s*(\w+)\(.*\)\s*", value)  # the whole value, not train(1).csv
    if sep and called and called.group(1) not in HYDRA_FUNCTIONS:
        # `intervall(1e-5,1e-3)`: quoting it would make the value a string
        close = difflib.get_close_matches(called.group(1), HYDRA_FUNCTIONS, n=1)
        if close:
            return (
                f"; {called.group(1)}(...) is no function of Hydra's: did you mean {close[0]}(...)?"
            )
    if (
        not sep
        or any(q in value for q in "'\"")
        or re.match(rf"\s*(\[|\{{|({'|'.join(HYDRA_FUNCTIONS)})\()", value)
    ):
        return ""
    if not value.isascii():  # Hydra's grammar leaves letters beyond ASCII (café, 日本) unquoted
        # a sweep's values each (one quote around `café,thé` would make them one value); in a
        # path, a comma followed by no path of its own is the path's (was: split in two)
        values = value.split(",")
        if value.startswith(PATH_STARTS) and not all(v.startswith(PATH_STARTS) for v in values):
            values = [value]
        quoted = ",".join(f"'{v}'" for v in values)
        return f'; a value with letters beyond ASCII is quoted: "{key}={quoted}"'
    if not any(c in value for c in QUOTED):
        return ""
    return f"; a value with any of {' '.join(QUOTED)} is quoted: \"{key}='{value}'\""


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


def _may_add(key: str, adds: Sequence[str]) -> bool:
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


# what sizes a slurm_ddp job: its launcher's keys, which read the trainer's by default
SLURM_SHAPE = {
    "hydra.launcher.nodes": "trainer.num_nodes",
    "hydra.launcher.tasks_per_node": "trainer.devices",
    "hydra.launcher.gpus_per_node": "trainer.devices",
}


def check_run_settings(parsed: Sequence[Override], cfg: DictConfig, multirun: bool) -> None:
    """OverrideMistake for Hydra settings sft's runs do not work with, each of which went wrong
    without a word or with a traceback."""
    if any(o.key_or_group == "paths.output_dir" for o in parsed):
        # (was: checkpoints and TensorBoard there, the log and record in Hydra's folder)
        raise OverrideMistake(
            "paths.output_dir is the run's folder, which Hydra makes: set hydra.run.dir "
            "(hydra.sweep.dir with -m) instead"
        )
    recorded = [
        o.input_line for o in parsed if o.key_or_group.lstrip("+~").startswith("hydra.runtime.")
    ]
    if recorded:
        # (was: ignored without a word: Hydra sets hydra.runtime as it starts the run)
        raise OverrideMistake(
            f"{recorded[0]}: hydra.runtime is what Hydra records of the run it starts, not a "
            "setting: set hydra.run.dir (hydra.sweep.dir with -m) for the run's folder"
        )
    if OmegaConf.select(cfg, "hydra.job.chdir") is True:
        # (was: the checkout's paths, data and caches then resolved against the run's folder)
        raise OverrideMistake(
            "hydra.job.chdir=true: sft runs in the folder it is started from, where relative "
            "paths mean what they say; the run's folder is paths.output_dir"
        )
    file_handler = OmegaConf.select(cfg, "hydra.job_logging.handlers.file", default=None)
    # (`root: null`, hydra/job_logging=none: Hydra sets nothing up, so it reads no handler)
    sets_up = OmegaConf.select(cfg, "hydra.job_logging.root", default=None) is not None
    if sets_up and file_handler is not None and "class" not in file_handler:
        choice = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get("hydra/job_logging")
        # (was: logging's "Unable to configure handler 'file'" traceback)
        raise OverrideMistake(
            f"hydra/job_logging={choice} sets up no log file, to which sft adds the run's log: "
            "use hydra/job_logging=none for no job logging at all (no log file)"
        )
    swept = OmegaConf.select(cfg, SEARCH_SPACE, default=None)
    if swept and not multirun:
        # (was: one run of the config's values; a search without -m is refused the same way)
        raise OverrideMistake(
            f"{SEARCH_SPACE} sets a sweep ({', '.join(swept)}), which runs as a multirun: add -m"
        )


def check_launcher(cfg: DictConfig, parsed: Sequence[Override] = ()) -> None:
    """OverrideMistake for a multirun launcher that cannot start here, before the sweep
    directory is made (was: a traceback from inside the launcher, after it), or a SLURM job
    shape sbatch cannot take."""
    launcher = (OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}).get(
        "hydra/launcher"
    )
    if launcher == "ray" and importlib.util.find_spec("ray") is None:
        raise OverrideMistake(
            "hydra/launcher=ray runs the jobs as Ray tasks, and Ray is not installed: "
            "pip install -e '.[cluster]'"
        )
    if launcher == "ray":
        check_ray_jobs(cfg)
    if launcher != "slurm_ddp":
        return
    # its job shape reads trainer=ddp's keys, unless the command sets it itself
    # (hydra.launcher.nodes=1 trainer=gpu: one-GPU jobs)
    for key in ("hydra.launcher.nodes", "hydra.launcher.tasks_per_node"):
        if OmegaConf.select(cfg, key, throw_on_resolution_failure=False) is None:
            raise OverrideMistake(
                f"hydra/launcher=slurm_ddp sizes each job by trainer=ddp's trainer.num_nodes and "
                f"trainer.devices, which this trainer config lacks: add trainer=ddp (or set "
                f"{key})"
            )
    # submitit sizes the sweep's job array once, from the first job's config (was: a job of
    # trainer.devices=4 got the first job's tasks, without a word)
    shape = {*SLURM_SHAPE, *SLURM_SHAPE.values(), "trainer"}
    for override in parsed:
        if override.is_sweep_override() and override.key_or_group.lstrip("+~") in shape:
            raise OverrideMistake(
                f"{override.input_line.lstrip('+')}: hydra/launcher=slurm_ddp gives every job "
                "of a sweep the same nodes and tasks (one job array): run one sweep per job "
                "shape"
            )
    written = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    for key, setting in SLURM_SHAPE.items():
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        gpus = key.endswith("gpus_per_node")
        # CPU nodes: gpus_per_node=0, or null (no --gpus-per-node: GPUs asked for otherwise)
        least = 0 if gpus else 1
        if (isinstance(value, int) and not isinstance(value, bool) and value >= least) or (
            gpus and value is None
        ):
            continue
        name = key.rpartition(".")[2]
        given = setting if written.get(name) == f"${{{setting}}}" else key
        raise OverrideMistake(
            f"{given}={'null' if value is None else value}: hydra/launcher=slurm_ddp needs a "
            f"whole number >= {least} there, "
            f"sbatch's {name.replace('_', ' ')} (Lightning's -1, every GPU, is no count for "
            f"SLURM): e.g. {given}={max(least, 4) if setting == 'trainer.devices' else 2}"
        )
    if shutil.which("sbatch") is None:
        raise OverrideMistake(
            "hydra/launcher=slurm_ddp submits the jobs with SLURM's sbatch, which this machine "
            "does not have: run the sweep where SLURM is (a login node), or run its jobs here "
            "with hydra/launcher=local_jobs"
        )


# Lightning's DDP strategies that start their ranks by running the process's command line again
SPAWNING = ("spawn", "fork", "notebook")
# what `ray start` leaves while its cluster runs; ray.init() without an address joins it
RAY_CURRENT_CLUSTER = "/tmp/ray/ray_current_cluster"


def check_ray_jobs(cfg: DictConfig) -> None:
    """OverrideMistake for Ray jobs that could never run: more CPUs or GPUs than the instance
    the sweep starts on this machine has (was: Ray's autoscaler line every 35 s, forever), and
    subprocess DDP (was: Ray's worker died on sft-train's arguments, a WorkerCrashedError)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    if (
        isinstance(strategy, str)
        and strategy.startswith("ddp")
        and not any(way in strategy for way in SPAWNING)
        and (_several(devices) or _several(nodes))
    ):
        raise OverrideMistake(
            f"trainer.strategy={strategy} under hydra/launcher=ray: Lightning's {strategy} starts "
            "its ranks by running the process's command line again, which in a Ray worker is "
            "Ray's, not sft-train: set trainer.strategy=ddp_spawn"
        )
    if (
        OmegaConf.select(cfg, "hydra.launcher.address") is not None
        or os.environ.get("RAY_ADDRESS")
        or Path(RAY_CURRENT_CLUSTER).exists()  # ray.init() joins the one `ray start` runs
    ):
        return  # a cluster's nodes: Ray's autoscaler may add what a job asks for
    init = OmegaConf.select(cfg, "hydra.launcher.init", default=None) or {}
    for kind, key in (("CPUs", "cpus_per_job"), ("GPUs", "gpus_per_job")):
        asked = OmegaConf.select(cfg, f"hydra.launcher.{key}", default=0)
        if not isinstance(asked, int | float) or asked <= 0:
            continue
        count = f"num_{kind[:3].lower()}s"
        here = init.get(count)
        if here is None:  # as Ray counts them (not the CPUs this process may run on)
            here = (os.cpu_count() or 1) if kind == "CPUs" else _visible_gpus()
        if isinstance(here, int | float) and asked > here:
            raise OverrideMistake(
                f"hydra.launcher.{key}={asked:g}: the Ray instance this sweep starts on this "
                f"machine has {here} {kind}, so no job could start: ask for at most {here} "
                f"(or set +hydra.launcher.init.{count}=, or join a cluster with "
                "hydra.launcher.address=)"
            )


def _several(count: Any) -> bool:
    """Whether Lightning's `devices` or `num_nodes` value asks for more than one (-1: all;
    "auto" is not counted here)."""
    if isinstance(count, list | ListConfig):
        return len(count) > 1
    text = str(count).strip()
    return text.lstrip("-").isdigit() and int(text) not in (0, 1)


def _visible_gpus() -> int:
    """The CUDA GPUs a Ray instance started here would count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    import torch  # late: seconds to import, for a GPU job only

    return torch.cuda.device_count()


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


@contextlib.contextmanager
def config_search(config_dir: str, extra_dir: str | None) -> Iterator[None]:
    """Hydra set up to search `config_dir`, and `extra_dir` (`--config-dir`) where hydra.main
    puts it (`hydra._internal.utils.run_hydra`): after `config_dir`, before the schemas, so a
    packaged config wins over a file of the user's of the same name, as in the run."""
    search_path = create_config_search_path(config_dir)
    if extra_dir is not None:
        folder = os.path.abspath(extra_dir)
        if not os.path.isdir(folder):
            raise OverrideMistake(f"--config-dir {extra_dir}: no such folder ({folder})")
        search_path.prepend(
            provider="command-line",
            path=f"file://{folder}",
            anchor=SearchPathQuery(provider="schema"),
        )
    GlobalHydra.instance().clear()
    setbase("1.3")  # as the entry points' hydra.main(version_base="1.3")
    Hydra.create_main_hydra2(task_name="check_overrides", config_search_path=search_path)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()


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
    if _may_add(group, adds):  # debug: none chosen by default, so added
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


# the sections sft-train checks against the annotations of what they configure, per job
TYPED_SECTIONS = ("data", "model", "trainer", "adapter")


def check_swept_value_types(
    parsed: list[Override], overrides: list[str], cfg: DictConfig, config_name: str, loader: Any
) -> None:
    """The values of a swept setting of a typed section (`model.lr_backbone=1e-4,abc`,
    `choice(...)`), and the typed sections of the jobs of a swept config group (`experiment=a,b`),
    against the annotations of what they configure, before any job runs (was: a value's job
    failed once the jobs before it had run). The first value is left to the first
    job, which checks it at once; `cfg` is that job's config, composed from `overrides`."""
    from sft.utils.config_types import check_config_types  # imports Lightning: only here

    def mistake(job_cfg: DictConfig, section: str) -> str | None:
        # ${hydra:...} (the trainer's default_root_dir) as in the job
        with hydra_config_of(job_cfg):
            try:
                check_config_types(job_cfg.get(section), section)
            except SFTError as err:
                return str(err)
            except Exception:  # e.g. an interpolation: the job's own check says it
                return None
        return None

    # a mistake every job shares (another override's) is the first job's to say; checked for
    # the sections a sweep changes only
    shared: dict[str, str | None] = {}

    for override in parsed:
        key = override.key_or_group
        group = loader.repository.group_exists(key)
        section = key.partition(".")[0]
        if not override.is_discrete_sweep():
            continue
        if group:  # `-m experiment=a,b`: a config chosen per job may set any typed section
            sections = TYPED_SECTIONS
        elif section in TYPED_SECTIONS:
            sections = (section,)
        else:
            continue
        element = override.get_key_element()
        values = list(override.sweep_string_iterator())
        first = overrides.index(f"{element}={values[0]}") if values else None
        for value in values[1:]:
            job = list(overrides)
            job[first] = f"{element}={value}"
            try:
                job_cfg = loader.load_configuration(config_name, job, run_mode=RunMode.RUN)
            except Exception as exc:
                # an override this job's configs lack (`-m method=lora,linear_probe adapter.r=2`):
                # said here, as for the first job (was: Hydra's lines as the sweep started);
                # others as the job's own composition says them
                line = describe_composition_error(exc, config_name, job, loader)
                if line is None:
                    continue
                raise OverrideMistake(
                    f"{line} (the job of {element}={value}: no job ran)"
                ) from None
            for section in sections:
                found = mistake(job_cfg, section)
                if section not in shared:
                    shared[section] = mistake(cfg, section)
                if found and found != shared[section]:
                    job_is = (
                        f"the job of {element}={value}"
                        if group
                        else f"a value of {override.input_line.lstrip('+')}"
                    )
                    raise OverrideMistake(f"{found} ({job_is}: no job ran)")


def representative_overrides(parsed: list[Override], loader: Any) -> Iterator[str]:
    """One job's overrides of a sweep; every option of a swept config group must exist."""
    for override in parsed:
        if not override.is_sweep_override():
            yield override.input_line
            continue
        if not override.is_discrete_sweep():
            continue  # interval(...) is for the sweeper (e.g. Optuna) to sample
        values = list(override.sweep_string_iterator())
        group = override.key_or_group
        if not values:  # (was: a multirun of no jobs, exit status 0)
            raise OverrideMistake(no_swept_values(override, loader))
        if loader.repository.group_exists(group):
            options = loader.get_group_options(group)
            for value in values:
                if value not in options:
                    raise OverrideMistake(unknown_option(group, value, options))
        yield f"{override.get_key_element()}={values[0]}"


def no_swept_values(override: Override, loader: Any) -> str:
    """Why a sweep override that gives no values (`glob(x*)` matching no option, `range(0)`)
    would make a multirun of no jobs."""
    group = override.key_or_group
    line = override.input_line.lstrip("+")
    if override.value_type != ValueType.GLOB_CHOICE_SWEEP:
        return f"{line} gives no values: a sweep of it would run no jobs"
    if not loader.repository.group_exists(group):
        return (
            f"{line}: glob(...) picks among a config group's options, and {group} is not a "
            "config group: list the values (a,b,c) or give a range(...)"
        )
    options = [o for o in loader.get_group_options(group) if not o.startswith("_")]
    return (
        f"{line} matches none of {group}'s options ({', '.join(options)}): a sweep of it would "
        "run no jobs"
    )


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


def _composed_without_deletions(
    config_name: str, overrides: list[str], loader: Any, key: str
) -> Any:
    """The value of `key` in the config composed without the `~key` overrides; `_ABSENT` where
    the key is not there (or the others do not compose: that mistake is said once it is fixed)."""
    kept = [o for o in overrides if not o.startswith("~")]
    try:
        cfg = loader.load_configuration(config_name, kept, RunMode.RUN)
    except Exception:
        return _ABSENT
    return OmegaConf.select(cfg, key, default=_ABSENT)


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


def quoted_list_override(key: str, names: Sequence[str]) -> str:
    """`'key=["a","b"]'`: a list of names as the command line takes it, each one quoted (`1`,
    `true` and `null` unquoted are values, not names) and the whole quoted for the shell."""
    return f"'{key}=[{','.join(json.dumps(str(n)) for n in names)}]'"


def override_key(override: str) -> str:
    """The key an override sets: `++trainer.x=1`, `~model.y`, `a.b=1,2` -> `trainer.x`, ..."""
    return override.lstrip("+~").partition("=")[0]


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


_ABSENT = object()


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


@functools.cache
def trainer_arguments() -> frozenset[str]:
    """The keyword arguments of Lightning's `Trainer`, read from its source: importing Lightning
    takes about 10 s (torchmetrics, torchvision, transformers, scipy), and these checks answer a
    mistaken override before it loads. Imported and inspected if the source reads otherwise."""
    spec = importlib.util.find_spec("lightning")  # a top-level name: this imports nothing
    origin = spec.origin if spec else None
    source = Path(origin).parent / "pytorch" / "trainer" / "trainer.py" if origin else None
    if source and source.is_file():
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name == "Trainer":
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        args = [*item.args.args, *item.args.kwonlyargs]
                        return frozenset(a.arg for a in args) - {"self"}
    import inspect

    from lightning.pytorch import Trainer

    return frozenset(inspect.signature(Trainer.__init__).parameters) - {"self"}


TRAINER_OVERRIDE = re.compile(r"^trainer\.([A-Za-z_]\w*)=")


def accept_trainer_arguments(argv: Sequence[str]) -> list[str]:
    """`trainer.<Trainer argument>=v` -> `++trainer.<argument>=v`: every argument of Lightning's
    Trainer is settable as Lightning users type it (`trainer.fast_dev_run=true`), whether or not
    conf/trainer lists it; `++` sets a key that exists and adds one that does not."""
    return [f"++{arg}" if _is_trainer_argument(arg) else arg for arg in argv]


DATA_SETTING = re.compile(r"^data\.[A-Za-z_][\w.]*=")
DATA_CHOSEN = re.compile(r"^[+~]*data=")
PRIMARY_CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp")


def accept_checkpoint_data_settings(argv: Sequence[str], adds: Sequence[str] | None) -> list[str]:
    """`data.<key>=v` -> `+data.<key>=v` in a command that reads the checkpoint's data (`data.`
    among `adds`: sft-eval, sft-predict, sft-export) and is given no `data=`: the setting
    changes the checkpoint's data config, which Hydra has not composed (was: Hydra's "Could not
    override", then an error line asking for the `+`; sft's own hints, e.g. "set
    data.text_column", named the key without it)."""
    takes_data = any(a.rstrip(".") == "data" for a in adds or ())
    # a primary config of the user's own (--config-name) may compose data itself: as typed
    own_config = any(arg.partition("=")[0] in PRIMARY_CONFIG_FLAGS for arg in argv)
    if not takes_data or own_config or any(DATA_CHOSEN.match(arg) for arg in argv):
        return list(argv)
    return [f"+{arg}" if DATA_SETTING.match(arg) else arg for arg in argv]


def accept_settings_of_swept_groups(
    config_name: str, argv: Sequence[str], config_dir: str = CONF_DIR
) -> list[str]:
    """`-m data=text_files,sst2 data.max_length=32` -> `++data.max_length=32`: Hydra composes a
    multirun's own config with each swept group's default option (data=cifar10, without
    max_length) and refused a setting only the jobs' options have (was: "Could not override
    ... use +data.max_length=32", which the jobs then refused: the key exists). Run after
    `check_overrides`, which checks the setting against every job's config."""
    args, unknown = get_args_parser().parse_known_args(list(argv))
    if unknown or not args.multirun or any(getattr(args, f, None) for f in HYDRA_HANDLES):
        return list(argv)
    parsed = OverridesParser.create().parse_overrides(args.overrides)
    with config_search(config_dir, args.config_dir):
        loader = GlobalHydra.instance().config_loader()
        if not any(
            o.is_sweep_override() and loader.repository.group_exists(o.key_or_group) for o in parsed
        ):
            return list(argv)
        settings = [
            o.input_line
            for o in parsed
            if not (o.is_sweep_override() or o.is_add() or o.is_force_add() or o.is_delete())
            and not loader.repository.group_exists(o.key_or_group)
        ]
        without = [o.input_line for o in parsed if o.input_line not in settings]
        primary = loader.load_configuration(config_name, without, run_mode=RunMode.MULTIRUN)
    absent = {line for line in settings if lacks_key(primary, override_key(line))}
    return [f"++{arg}" if arg in absent else arg for arg in argv]


def lacks_key(cfg: DictConfig, key: str) -> bool:
    """Whether dotted `key`, or a node on its way, is not in `cfg` (a `???` value is), or a
    node on its way is null (`adapter: null`, where `adapter=lora` gives `adapter.r`)."""
    node: Any = cfg
    for part in key.split("."):
        if node is None:
            return True
        if not isinstance(node, DictConfig):
            return False  # a list's item, or a value: Hydra's own error says it
        if part not in node.keys():  # noqa: SIM118 (`in node` is False for a `???` value)
            return True
        child = node._get_node(part)
        node = None if child._is_none() else child if isinstance(child, DictConfig) else ""
    return False


def as_typed(overrides: Sequence[str]) -> list[str]:
    """The overrides as the user typed them: without the `++` that `accept_trainer_arguments`
    put before Trainer arguments (for result.json and sweep summaries)."""
    return [o[2:] if o.startswith("++") and _is_trainer_argument(o[2:]) else o for o in overrides]


def _is_trainer_argument(arg: str) -> bool:
    match = TRAINER_OVERRIDE.match(arg)
    if not match or match.group(1) not in trainer_arguments():
        return False
    try:  # one that does not parse is reported as the user typed it
        OverridesParser.create().parse_overrides([arg])
    except OverrideParseException:
        return False
    return True


MULTIRUN_FLAGS = ("-m", "--multirun")


def multirun_flag_first(argv: Sequence[str]) -> list[str]:
    """`-m` among the overrides moved before them: Hydra's parser takes the overrides as one
    positional list, so `a=1 -m b=1,2` was argparse's usage block ("unrecognized arguments")."""
    return sorted(argv, key=lambda arg: arg not in MULTIRUN_FLAGS)  # stable: order kept


def checks_overrides(config_name: str, adds: Sequence[str] | None = None) -> Callable[[F], F]:
    """Decorate a `@hydra.main` entry point: check `sys.argv` first, exit 1 with one line
    (`adds`: the top-level keys a `+key=` may add under, as `check_overrides`).

    `trainer.<any Lightning Trainer argument>=...` is accepted without `+`
    (`accept_trainer_arguments`), and so is `data.<key>=...` where the command reads the
    checkpoint's data (`accept_checkpoint_data_settings`)."""

    def decorate(main: F) -> F:
        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # a DDP rank of a multirun job runs that job, whose overrides were checked there (a
            # search's are refused outside a multirun)
            job = rank_command(sys.argv[1:]) if not args and not kwargs else None
            if not args and not kwargs:
                argv = accept_trainer_arguments(multirun_flag_first(job or sys.argv[1:]))
                sys.argv[1:] = accept_checkpoint_data_settings(argv, adds)
            # called with a config (tests) or with HYDRA_FULL_ERROR=1: Hydra as usual
            checked = job is None and os.environ.get("HYDRA_FULL_ERROR") != "1"
            if not args and not kwargs and checked:
                try:
                    check_overrides(config_name, sys.argv[1:], adds=adds)
                except OverrideMistake as mistake:
                    print(f"error: {mistake}", file=sys.stderr)
                    raise SystemExit(1) from None
                except Exception:
                    pass  # nothing this check knows: Hydra reports it as usual
            if not args and not kwargs and job is None:
                # after the check, which tells a setting no job has (a typo) from these; also
                # under HYDRA_FULL_ERROR=1, as it changes what runs
                with contextlib.suppress(Exception):  # Hydra reports what it cannot compose
                    sys.argv[1:] = accept_settings_of_swept_groups(config_name, sys.argv[1:])
            return main(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def unset_keys(node: DictConfig, prefix: str = "") -> Iterator[str]:
    """Keys whose value is `???`, without resolving interpolations (OmegaConf.missing_keys does)."""
    for name in node:
        child = node._get_node(name)
        if child._is_missing():
            yield f"{prefix}{name}"
        elif isinstance(child, DictConfig) and not child._is_none():
            yield from unset_keys(child, f"{prefix}{name}.")
