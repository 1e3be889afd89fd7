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

import contextlib
import contextvars
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from hydra._internal.hydra import Hydra
from hydra._internal.utils import (  # hydra.main's own parser and search path: same behaviour
    create_config_search_path,
    get_args_parser,
)
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException, OverrideParseException
from hydra.types import RunMode
from hydra.version import setbase
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from sft.utils.composition_errors import (
    describe_composition_error,
    flag_mistake,
    unresolvable_message,
)
from sft.utils.config import CONF_DIR, hydra_config_of
from sft.utils.config_files import (
    check_config_file_keys,
    describe_defaults_error,
    file_choosing,
    unknown_choice_in_swept_files,
    unknown_option,
)
from sft.utils.ddp_ranks import rank_command
from sft.utils.launch_checks import check_launcher, check_run_settings
from sft.utils.override_checks import (
    check_group_is_chosen_here,
    check_method_kept,
    check_new_top_level_keys,
    check_not_a_base,
    check_not_a_hydra_sweep,
    check_not_a_null_choice,
    check_not_added_again,
    check_not_removing_a_needed_group,
    check_not_shadowed,
    ignored_addition,
    may_add,
)
from sft.utils.overrides import (
    OverrideMistake,
    accept_checkpoint_data_settings,
    accept_trainer_arguments,
    multirun_flag_first,
    override_key,
    quoting_hint,
    spacing_hint,
)
from sft.utils.sweep_checks import check_swept_value_types, representative_overrides

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


# a launcher config of sft's whose base comes with hydra-submitit-launcher, not installed
SUBMITIT_MISSING = re.compile(r"In 'hydra/launcher/(\w+)': Could not load 'hydra/launcher/submitit")


# set by sft.api, which runs one run per call: a command line whose configs make it a sweep is
# refused before any job runs
ONE_RUN_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("one_run_only", default=False)

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
    args, unknown = _hydra_arguments(argv)
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
    if any(a.startswith("-") for a in unknown):
        raise OverrideMistake(flag_mistake(unknown, argv, config_name))
    if unknown or any(getattr(args, flag, None) for flag in HYDRA_HANDLES):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as exc:
        reason = " ".join(exc.message.splitlines()[0].split())
        raise OverrideMistake(
            f"cannot parse override '{exc.override}': {reason}"
            + (spacing_hint(exc.override, args.overrides) or quoting_hint(exc.override))
        ) from exc
    for override in parsed:
        check_not_a_hydra_sweep(override)
    for override in parsed if adds is not None else []:
        key = override.key_or_group
        if (override.is_add() or override.is_force_add()) and not may_add(key, adds):
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
            if multirun and not prints and ONE_RUN_ONLY.get():
                # (was: the sweep run, then refused)
                raise OverrideMistake(
                    "hydra.mode=MULTIRUN, set in a config of this command line, makes it a "
                    f"sweep, and sft.api runs one run: a sweep is a loop over calls (or "
                    f"sft-{config_name} -m on the command line)"
                )
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


def _hydra_arguments(argv: Sequence[str]) -> tuple[Any, list[str]]:
    """`argv` as Hydra's parser reads it: its options, and what it does not know; its own
    refusals (an ambiguous `--config`, `-c <file>` for --cfg) as OverrideMistake (was:
    argparse's usage block and exit status 2)."""
    parser = get_args_parser()

    def refuse(message: str) -> NoReturn:
        raise OverrideMistake(message)

    parser.error = refuse  # type: ignore[method-assign]
    return parser.parse_known_args(list(argv))


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
