"""Which run directory a training run uses, and which checkpoint it resumes from.

`resume=null` (default): a fresh run in `<experiment dir>/<timestamp>`; when that directory
already exists (two runs started in the same second) it gets a suffix `_1`, `_2`, ...: an
existing run directory is never written into. `resume=auto`: the newest run directory of the
experiment holding `checkpoints/last.ckpt`, or a fresh one when there is none.
`resume=<run dir>`: that directory. Hydra picks the run directory before the task starts, so
this is the `sft_run_dir` resolver used by `hydra.run.dir` (conf/hydra/default.yaml).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from sft.utils.errors import SFTError

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"

# Hydra resolves hydra.run.dir more than once per process: every resolution must give the
# directory the first one reserved.
_resolved: dict[tuple[str | None, str, str], str] = {}


def latest_resumable_run(experiment_dir: str | Path) -> Path | None:
    """The run directory under `experiment_dir` whose last.ckpt was written most recently."""
    candidates = list(Path(experiment_dir).glob(f"*/{LAST_CHECKPOINT.as_posix()}"))
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).parents[1]


def reserve_fresh_dir(base: str | Path) -> Path:
    """Create and return `base`, or `base_1`, `base_2`, ... when it exists (atomic: mkdir)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise SFTError(f"could not find a free run directory next to {base}")


def run_dir(resume: str | None, experiment_dir: str, stamp: str) -> str:
    """The `${sft_run_dir:...}` resolver: the directory of this run (see the module docstring)."""
    key = (None if resume is None else str(resume), str(experiment_dir), str(stamp))
    if key not in _resolved:
        found = None
        if resume == "auto":
            found = latest_resumable_run(experiment_dir)
        elif resume is not None and Path(resume).is_dir():
            found = Path(resume)
        # A resume= path that is not a directory: train() reports it as a user error.
        chosen = found if found is not None else reserve_fresh_dir(Path(experiment_dir) / stamp)
        _resolved[key] = str(chosen.resolve())
    return _resolved[key]


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint `trainer.fit` starts from (`ckpt_path`, or the run's last.ckpt with
    `resume`), logging what is resumed; SFTError for a `resume=` that cannot be honoured."""
    resume = cfg.get("resume")
    if resume is None:
        return cfg.get("ckpt_path")
    if cfg.get("ckpt_path"):
        raise SFTError(
            "set resume= (continue a run in its directory) or ckpt_path= (start a new run from a "
            "checkpoint), not both"
        )
    output_dir = Path(cfg.paths.output_dir)
    last = output_dir / LAST_CHECKPOINT
    if resume != "auto":
        if not Path(resume).is_dir():
            raise SFTError(f"resume={resume}: no such run directory")
        if Path(resume).resolve() != output_dir.resolve():
            raise SFTError(
                f"resume={resume} but this run writes to {output_dir} (hydra.run.dir or "
                "paths.output_dir overridden?): drop that override to resume"
            )
        if not last.is_file():
            raise SFTError(f"resume={resume}: {last} does not exist, nothing to resume from")
    if not last.is_file():
        log.info(
            f"resume=auto: no run under {output_dir.parent} has {LAST_CHECKPOINT}: starting fresh in {output_dir}"
        )
        return None
    chosen, state = readable_checkpoint(last)
    log.info(
        f"resuming {output_dir} from {chosen} (epoch {state.get('epoch')}, step "
        f"{state.get('global_step')})"
    )
    return str(chosen)


def _peek(path: Path) -> dict | None:
    """The checkpoint's contents (memory-mapped, cheap), or None when it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # truncated, empty, not a zip archive, foreign pickle: all unreadable
        return None
    return state if isinstance(state, dict) and "global_step" in state else None


def readable_checkpoint(last: Path) -> tuple[Path, dict]:
    """`last` and its contents, or, when `last` cannot be read (a truncated copy, a full disk),
    the newest readable checkpoint beside it, saying so; `last` is kept, renamed
    `last.ckpt.unreadable`, so that training does not write over it. SFTError when none is."""
    state = _peek(last)
    if state is not None:
        return last, state
    others = sorted(
        (p for p in last.parent.glob("*.ckpt") if p != last),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for candidate in others:
        state = _peek(candidate)
        if state is not None:
            kept = last.with_name(last.name + ".unreadable")
            last.rename(kept)
            log.warning(
                f"{last} cannot be read (kept as {kept.name}): resuming from {candidate.name}, "
                f"the newest readable checkpoint of this run"
            )
            return candidate, state
    raise SFTError(
        f"resume: {last} cannot be read (truncated or corrupt) and the run has no other readable "
        f"checkpoint in {last.parent}; start a new run or restore the file"
    )


def resumed_step(ckpt_path: str | None) -> int | None:
    """The global step stored in a checkpoint (None without one)."""
    if ckpt_path is None:
        return None
    return int(
        torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    )


_config_subdirs: dict[str, str] = {}


def config_subdir(output_dir: str, stamp: str) -> str:
    """The `${sft_config_subdir:...}` resolver (`hydra.output_subdir`): `.hydra` for a new run;
    a resumed run keeps the original's `.hydra/` and records its own in `.hydra/resumed_<stamp>`."""
    if output_dir not in _config_subdirs:
        resumed = (Path(output_dir) / ".hydra" / "config.yaml").is_file()
        _config_subdirs[output_dir] = f".hydra/resumed_{stamp}" if resumed else ".hydra"
    return _config_subdirs[output_dir]


def continue_tensorboard(logger_cfg: DictConfig | None, ckpt_path: str) -> None:
    """Make the TensorBoard loggers of a resumed run drop what the interrupted run logged after
    its checkpoint (SummaryWriter's `purge_step`), so steps continue without duplicates."""
    step = resumed_step(ckpt_path)
    for entry in (logger_cfg or {}).values():
        if entry and str(entry.get("_target_", "")).endswith("TensorBoardLogger"):
            with open_dict(entry):
                entry.purge_step = step
            wait_to_sort_after(Path(entry.save_dir))


def wait_to_sort_after(tensorboard_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second
    it was created in, then host and process id: a run resumed within the second its
    interrupted run started would sort before it and show its steps first. Wait (under a
    second) until a new file sorts last."""
    stamps = [
        int(parts[3])
        for f in tensorboard_dir.rglob("events.out.tfevents.*")
        if len(parts := f.name.split(".")) > 3 and parts[3].isdigit()
    ]
    if stamps:
        time.sleep(max(0.0, max(stamps) + 1 - time.time()))
