"""A sweep's values checked before any job runs: each swept option exists, each value of a typed
section's setting has its type, and one job's overrides stand for the sweep in the other checks."""

from collections.abc import Iterator
from typing import Any

from hydra.core.override_parser.types import Override, ValueType
from hydra.types import RunMode
from omegaconf import DictConfig

from sft.errors import SFTError
from sft.utils.composition_errors import describe_composition_error
from sft.utils.config import hydra_config_of
from sft.utils.config_files import unknown_option
from sft.utils.overrides import OverrideMistake

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
