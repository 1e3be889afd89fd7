"""Mistakes inside config files (a user's `--config-dir` experiment), each as one line naming
the file: Hydra reports them as several lines without the file's path, or not at all (a key
the run never reads, or a whole file nested under its group's name)."""

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hydra.core.default_element import ConfigDefault, GroupDefault
from omegaconf import DictConfig, OmegaConf

from sft.utils.suggest import did_you_mean, nearest_names

# Hydra's messages (hydra-core 1.3) for a defaults list that does not compose
IN_CONFIG = re.compile(r"In '([^']+)': ")
NESTED_OVERRIDE = re.compile(r"Could not override '([\w/]+)@([\w.]+)'")
NO_SUCH_GROUP = re.compile(r"Could not override '([\w/]+)'\. No match in the defaults list")
GROUP_TWICE = re.compile(r"Multiple values for ([\w./]+)\. To override a value use")
SAME_CHOICE_TWICE = re.compile(r"([\w./]+) appears more than once in the final defaults list")
OVERRIDE_FIRST = re.compile(
    r"In ([\w/]+): Override '([^']+) : ([^']+)' is defined before '([^'@]+)(?:@[^']*)?: ([^']+)'"
)


def config_file(loader: Any, config_path: str) -> str:
    """Where a config lives: its file for a folder on the search path (the user's
    `--config-dir`), else its path in the package (`experiment/sst2_minilm.yaml`)."""
    found = loader.repository.load_config(config_path)
    name = f"{config_path}.yaml"
    if found is not None and found.path.startswith("file://"):
        return f"{found.path.removeprefix('file://')}/{name}"
    return name


def is_global_group(group: str, loader: Any, but: str | None = None) -> bool:
    """Whether sft's own configs of the group set keys across the whole config (`# @package
    _global_`, as every experiment does); `but`: an option left out. A `--config-dir`'s files
    do not count: how they are written is what is checked."""
    for option in loader.get_group_options(group):
        if option == but or option.startswith("_"):
            continue
        found = loader.repository.load_config(f"{group}/{option}")
        if (
            found is not None
            and found.provider == "main"
            and found.header.get("package") == "_global_"
        ):
            return True
    return False


def missing_package_line(loader: Any, config_path: str) -> str:
    group = config_path.rpartition("/")[0]
    return (
        f"{config_file(loader, config_path)}: {group} configs set keys across the whole "
        f"config: its first line must be '# @package _global_' (without it, its settings "
        f"went under '{group}.', where nothing reads them)"
    )


def _in_group(package: str, group: str) -> bool:
    """Whether a package line puts a config's settings under its group's node (or inside it):
    `model`, `model.backbone` for a model config. (Hydra 1.3 reads Hydra 1.0's `_group_` as a
    key of that name.)"""
    node = group.replace("/", ".")
    return package == node or package.startswith((f"{node}.", "_global_."))


def wrong_package_line(loader: Any, config_path: str, package: str, config_name: str) -> str:
    """A config whose package line puts its settings elsewhere than its group's (a data
    config's line copied into a model config: a traceback where the model was read), or, in a
    group of global configs, where the run reads nothing."""
    group = config_path.rpartition("/")[0]
    file = config_file(loader, config_path)
    if is_global_group(group, loader):
        return (
            f"{file}: its line '# @package {package}' puts its settings under '{package}', "
            f"where sft-{config_name} reads nothing: {group} configs take '# @package _global_'"
        )
    node = group.replace("/", ".")
    return (
        f"{file}: its line '# @package {package}' puts its settings under '{package}', not "
        f"under '{node}' where {group} settings go: leave the line out"
    )


def describe_defaults_error(
    exc: Exception, config_name: str, overrides: Sequence[str], loader: Any
) -> str | None:
    """One line naming the file for a defaults list that does not compose; else None."""
    message = str(exc)
    where = IN_CONFIG.match(message)
    if where and NESTED_OVERRIDE.search(message):
        group, _, option = where.group(1).rpartition("/")
        # another group's configs belong under its name: Hydra's message stands
        return (
            missing_package_line(loader, where.group(1))
            if is_global_group(group, loader, but=option)
            else None
        )
    if where and (match := NO_SUCH_GROUP.search(message)):
        group = match.group(1).lstrip("/")
        groups = [g for g in loader.list_groups("") if g != "hydra"]
        close = difflib.get_close_matches(group, groups, n=1, cutoff=0.6)
        return (
            f"{config_file(loader, where.group(1))}: its defaults list overrides '{group}', "
            f"which is no config group ({f'did you mean {close[0]!r}? ' if close else ''}"
            f"groups: {', '.join(sorted(groups))})"
        )
    if match := OVERRIDE_FIRST.match(message):
        config_path, before, before_option, group, option = match.groups()
        primary = loader.repository.load_config(config_name)
        chosen = {d.group for d in primary.defaults_list or [] if isinstance(d, GroupDefault)}
        file = config_file(loader, config_path)
        # `- /model: mine` in an experiment, not an override; `- model: mine` also names
        # experiment/model, a group relative to the experiment's own (a plain config such as
        # `- _base` is no group's choice)
        for named, value in choices_without_override(loader, config_path):
            if named in chosen:
                return choose_again_line(file, config_name, named, value)
        # a config of its own group (`- _base`): Hydra names it `experiment: _base`
        entry = option if group == config_path.rpartition("/")[0] else f"{group}: {option}"
        return (
            f"{file}: its defaults list has '- override /{before}: {before_option}' before "
            f"'{entry}': overrides go at the end of the list"
        )
    if match := GROUP_TWICE.search(message) or SAME_CHOICE_TWICE.search(message):
        group = match.group(1).lstrip("/")
        for config_path in chosen_configs(config_name, overrides, loader):
            for named, value in choices_without_override(loader, config_path):
                if named == group:
                    file = config_file(loader, config_path)
                    return choose_again_line(file, config_name, group, value)
    return None


def choices_without_override(loader: Any, config_path: str) -> Iterator[tuple[str, str]]:
    """(group, option) of each group choice a config's defaults list makes without `override`
    (`- /model: x`; `- model: x` in an experiment, relative to its group, names `model` too)."""
    found = loader.repository.load_config(config_path)
    for default in getattr(found, "defaults_list", None) or []:
        if isinstance(default, GroupDefault) and not default.override:
            yield default.group.lstrip("/"), default.value


def overridden_choices(loader: Any, config_path: str) -> dict[str, str]:
    """{group: option} of each `- override /group: option` in a config's defaults list and in
    the configs of its group it includes (`method/lp_lora` -> `lpft_fused`, ...)."""
    found = loader.repository.load_config(config_path)
    folder = config_path.rpartition("/")[0]
    chosen: dict[str, str] = {}
    for default in getattr(found, "defaults_list", None) or []:
        if isinstance(default, GroupDefault) and default.override:
            chosen[default.group.lstrip("/")] = default.value
        elif isinstance(default, ConfigDefault) and default.path not in (None, "_self_"):
            path = default.path
            path = path.lstrip("/") if path.startswith("/") else f"{folder}/{path}"
            chosen.update(overridden_choices(loader, path))  # later entries win, as in Hydra
    return chosen


def choose_again_line(file: str, config_name: str, group: str, option: str) -> str:
    """A config that chooses a group's option without `override`, after the command's own
    config chose one."""
    return (
        f"{file}: its defaults list chooses /{group} again, after sft-{config_name} chose one: "
        f"replace it with '- override /{group}: {option}'"
    )


def chosen_configs(config_name: str, overrides: Sequence[str], loader: Any) -> list[str]:
    """The config files an override chooses (`experiment=mine` -> `experiment/mine`)."""
    paths = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if loader.repository.group_exists(key) and value:
            paths.append(f"{key}/{value}")
    return paths


def unknown_option(group: str, option: str, options: Sequence[str]) -> str:
    options = [o for o in options if not o.startswith("_")]  # _*.yaml: bases, not choices
    close = nearest_names(option, options, cutoff=0.5)
    # none close: perhaps a config of the user's own, which only --config-dir finds
    hint = (
        "; " + did_you_mean([f"'{name}'" for name in close])
        if close
        else f"; a config of your own: --config-dir <the folder holding {group}/>"
    )
    return f"unknown option '{option}' for group '{group}' (available: {', '.join(options)}{hint})"


def file_choosing(loader: Any, parsed: Sequence[Any], group: str, option: str) -> str | None:
    """The config file, of those the command line chooses (`experiment=mine`), whose defaults
    list chooses `option` for `group` (`- override /model: <option>`); None when none does."""
    for override in parsed:
        if not loader.repository.group_exists(override.key_or_group):
            continue
        values = (
            list(override.sweep_string_iterator())  # each job's option, `-m experiment=a,b`
            if override.is_discrete_sweep()
            else [override.value()]
        )
        for path in (f"{override.key_or_group}/{v}" for v in values if isinstance(v, str)):
            if any(c == (group, option) for c, _ in group_choices(loader, path)):
                return config_file(loader, path)
    return None


def group_choices(loader: Any, config_path: str) -> Iterator[tuple[tuple[str, Any], Any]]:
    """((group, option), entry) of each group choice in the defaults list of the config at
    `config_path`, the group as Hydra reads it: `/model` from the top, `head` from the config's
    own folder (`model/head` for `model/mine`)."""
    found = loader.repository.load_config(config_path)
    folder = config_path.rpartition("/")[0]
    for default in (found.defaults_list or []) if found is not None else []:
        if isinstance(default, GroupDefault):
            group = default.group
            group = group[1:] if group.startswith("/") else f"{folder}/{group}".lstrip("/")
            yield (group, default.value), default


def unknown_choice_in_swept_files(
    loader: Any, swept: Mapping[str, Sequence[str]], set_here: set[str]
) -> str | None:
    """A config file a sweep's job chooses (`-m experiment=a,b`) whose defaults list chooses an
    option that does not exist: only the first job is composed before the sweep (was: that job
    failed after the ones before it ran). Groups the command line sets (which win) and Hydra's
    own are left out. One line naming the file, else None."""
    for path in (f"{group}/{option}" for group, options in swept.items() for option in options):
        for (group, option), default in group_choices(loader, path):
            if (
                not isinstance(option, str)
                or default.optional
                or "${" in option
                or option == "???"  # the command line must choose it
                or group in set_here
                or group.split("/")[0] == "hydra"
                or loader.repository.config_exists(f"{group}/{option}")
            ):
                continue
            options = loader.get_group_options(group)
            return f"{config_file(loader, path)}: {unknown_option(group, option, options)}"
    return None


def check_config_file_keys(
    cfg: DictConfig,
    config_name: str,
    loader: Any,
    swept: Mapping[str, Sequence[str]] | None = None,
) -> str | None:
    """A config file chosen for the run (`experiment=mine`), or for any job of a sweep
    (`swept`: each group's options, `-m experiment=a,b`), that sets a top-level key nothing
    reads (not one of sft-<config_name>'s own keys or groups, nor read through an
    interpolation such as `${lr}`), or that lacks the `# @package _global_` line its group's
    configs have. One line naming the file, else None.

    Reads the files themselves, not a composition per job: this runs before every command."""
    primary = loader.repository.load_config(config_name)
    chosen_by_default = {
        d.group: d.value for d in primary.defaults_list or [] if isinstance(d, GroupDefault)
    }
    known = {str(k) for k in primary.config} | set(chosen_by_default) | {"hydra"}
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}
    # a group the command's own config does not list (`sft-eval +debug=overfit`) may set keys
    # another command reads
    chosen = [(g, o) for g, o in choices.items() if g in chosen_by_default and g != "hydra"]
    chosen += [(g, o) for g, os in (swept or {}).items() if g in chosen_by_default for o in os]
    files = {
        path: found
        for path in dict.fromkeys(f"{g}/{o}" for g, o in chosen if o)
        if (found := loader.repository.load_config(path)) is not None
    }
    texts: list[str] = []  # the run's config and the files, as text: made when first needed
    for path, found in files.items():
        group, _, option = path.rpartition("/")
        package = found.header.get("package")
        # an optional group (`experiment: null` in the defaults) whose configs are global
        if (
            package is None
            and chosen_by_default.get(group) is None
            and is_global_group(group, loader, but=option)
        ):
            return missing_package_line(loader, path)
        # a config of a group whose configs set keys across the whole config (debug,
        # experiment) may set one section (`# @package trainer`): one the run reads
        if (
            package not in (None, "_global_")
            and not _in_group(package, group)
            and (not is_global_group(group, loader) or package.split(".")[0] not in known)
        ):
            return wrong_package_line(loader, path, package, config_name)
        if package != "_global_":
            continue
        for key in map(str, found.config):
            if key in known:
                continue
            if not texts:
                texts += [
                    OmegaConf.to_yaml(cfg),
                    *(OmegaConf.to_yaml(f.config) for f in files.values()),
                ]
            if is_interpolated(key, texts):
                continue
            if misspelt := misspelt_interpolation(key, texts, known):
                return (
                    f"{config_file(loader, path)}: '${{{misspelt}}}' names no config key: did "
                    f"you mean '${{{key}}}'? (nothing reads '{key}', which the file sets)"
                )
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return (
                f"{config_file(loader, path)}: unknown config key '{key}'{hint}: "
                f"sft-{config_name} reads no such setting"
            )
    return None


def misspelt_interpolation(key: str, texts: Sequence[str], known: set[str]) -> str | None:
    """An interpolation of a top-level key close to `key` (`${lrr}` where the file sets `lr`
    that nothing reads) that names none of the `known` keys; None when there is none."""
    # `${lr}`, `${model.lr_head}`; not a resolver's call (`${oc.env:...}`)
    plain = r"\$\{(\w+)(?:\.[\w.]+)?\}"
    read = {m.group(1) for text in texts for m in re.finditer(plain, text)}
    # nor a key that the run's config or a file sets (at the top: texts are YAML dumps)
    unset = {r for r in read - known if not any(re.search(rf"^{r}:", t, re.M) for t in texts)}
    close = difflib.get_close_matches(key, sorted(unset), n=1, cutoff=0.75)
    return close[0] if close else None


def is_interpolated(key: str, texts: Sequence[str]) -> bool:
    """Whether a config reads the top-level key through an interpolation (`${lr}`): the run's,
    or a file chosen for it (where the reader may have been overridden since: `lr: 0.1` and
    `model.lr_head: ${lr}`, with `model.lr_head=1e-3` on the command line)."""
    reads = re.compile(rf"\$\{{[^}}]*\b{re.escape(key)}\b")
    return any(reads.search(text) for text in texts)
