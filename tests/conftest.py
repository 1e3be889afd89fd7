"""Shared fixtures: the data root and Hydra configs composed for fast CPU runs in tmp dirs."""

import collections
import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sft.utils.config import PROJECT_ROOT, register_resolvers
from sft.utils.logs import logging_restored

register_resolvers()  # as the entry points do, before any config here is composed

CONF_DIR = str(PROJECT_ROOT / "conf")
# conf/experiment/_*.yaml are bases the experiments build on, not experiments
EXPERIMENTS = sorted(
    p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("*.yaml") if p.stem[0] != "_"
)

# A 2-layer BERT built in the test (random weights, MiniLM's tokenizer): +model.backbone.config_overrides=
TINY_BERT = "{num_hidden_layers:2,hidden_size:32,num_attention_heads:2,intermediate_size:64}"

# The SST-2 recipe on that 2-layer BERT, its loaders with 2 worker processes each (add
# data.samples_per_class=<n>)
TINY_TEXT_WITH_WORKERS = [
    "experiment=sst2_minilm",
    "model.backbone.pretrained=false",
    f"model.backbone.config_overrides={TINY_BERT}",
    "model.linear_probe=null",
    "trainer.precision=32-true",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "data.num_workers=2",
]

# The packaged EfficientNet-Lite0 recipe, one batch of each loop (debug=fdr), no test.
EFFNET_ONE_BATCH = [
    "experiment=cifar10_effnet_lite0_quick",
    "debug=fdr",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "test=false",
]

# Small and fast: the small CNN on a 20-per-class CIFAR-10 slice, no progress bar.
FAST = [
    "~model.backbone",
    "+model.backbone={_target_:sft.models.backbones.create_backbone,name:small_cnn,width:8}",
    "data.samples_per_class=20",
    "data.batch_size=32",
    "data.val_size=500",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
]


# The files whose tests take longest, longest first (seconds in one CI run on 2 cores, 2026-12-07:
# scale_out 367, interrupt 343, train 234, user_paths 198, optuna_sweeper 177, resume 145,
# errors 130, sweeps 124, configs 107). `make test` hands whole files to its processes in the
# collection's order (--dist loadfile --no-loadscope-reorder): these go first, so that no
# process is left idle while another runs one of them at the end (xdist's own order, by the
# number of tests, ran scale_out and interrupt last: one process idle for 3 min of 20).
LONGEST_FILES = (
    "test_scale_out.py",
    "test_interrupt.py",
    "test_train.py",
    "test_user_paths.py",
    "test_optuna_sweeper.py",
    "test_resume.py",
    "test_errors.py",
    "test_sweeps.py",
    "test_configs.py",
)


# before the hooks of pytest's own plugins that select among the tests (--sw keeps those from
# the failed one on, in the order given here)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then the others by their number of tests (xdist's own order);
    each file's tests stay together and in their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    tests_in = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -tests_in[item.path]))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = Path(os.environ.get("SFT_DATA_DIR", PROJECT_ROOT / "data"))
    assert (root / "cifar-10-batches-py").is_dir(), (
        f"CIFAR-10 not found under {root}: run `make data` (or set SFT_DATA_DIR)"
    )
    return root


def compose_config(name: str, overrides: list[str], run_dir: Path) -> DictConfig:
    """The config `sft-train`/`sft-eval` would see, with all outputs under `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the task sees its config without the hydra node
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir)
    return cfg


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a subprocess, as a user runs it (errors without Hydra's
    full trace, output unbuffered); `env` replaces the environment it starts from."""
    env = {**(os.environ if env is None else env), "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def _logging_state() -> dict[logging.Logger, tuple]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return {
        lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
        for lg in loggers
        if isinstance(lg, logging.Logger)
    }


@pytest.fixture(autouse=True)
def _environment_as_it_was() -> Iterator[None]:
    """Every test: `os.environ` as it was before. A trainer=ddp_sim run in the test's process
    leaves Lightning's MASTER_PORT (the port its ranks met on) set, and a later test's DDP runs,
    subprocesses too, inherited it and met on that port instead of a free one."""
    before = dict(os.environ)
    yield
    for name in set(os.environ) - set(before):
        del os.environ[name]
    os.environ.update(before)


@pytest.fixture(autouse=True)
def _deterministic_algorithms_as_they_were() -> Iterator[None]:
    """Every test: torch's deterministic-algorithms mode as it was before. Lightning sets it for
    a run of `trainer.deterministic=true` and leaves it on, and sft then keeps torch's own
    kernels, so a later test of the timed convolutions in the same process found none timed."""
    import torch

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture(autouse=True)
def _close_log_handlers_a_test_left() -> Iterator[None]:
    """Every test: the log handlers a run added to a logger that was already there are closed
    and removed (pytest's own stay). A test that called an entry point's `main()` itself left
    Hydra's handler on its captured stderr; once that was closed, a later test's log line
    printed "--- Logging error ---" into that test's stderr (test_sweeps' exit-status test,
    after test_errors' recorded-override test in one process)."""
    before = {lg: list(lg.handlers) for lg in _logging_state()}
    yield
    for lg, handlers in before.items():
        for handler in [h for h in lg.handlers if h not in handlers]:
            if not type(handler).__module__.startswith("_pytest"):
                lg.removeHandler(handler)
                handler.close()


def run_entry_point(main: Callable[[], Any], argv: list[str]) -> int:
    """Call a Hydra entry point (e.g. `sft.train.main`) in this process as its console script
    would with `argv` (no interpreter start-up); its exit status, 0 when it returns. The logging
    set-up its run made is undone: its handlers write to this test's captured stderr, which a
    later test's log lines would hit once it is closed ("--- Logging error ---")."""
    GlobalHydra.instance().clear()
    saved_argv, sys.argv = sys.argv, argv
    try:
        with logging_restored():
            main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()


def logged_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages of the warnings logged so far (sft's go to the run's log)."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@contextlib.contextmanager
def logs_warning(caplog: pytest.LogCaptureFixture, pattern: str) -> Iterator[None]:
    """The block logs a warning matching `pattern` (`re.search`): sft's warnings go to the run's
    log (`sft.utils.logs`), not through Python's `warnings`."""
    start = len(caplog.records)
    with caplog.at_level(logging.WARNING):
        yield
    warned = [r.getMessage() for r in caplog.records[start:] if r.levelno == logging.WARNING]
    assert any(re.search(pattern, m) for m in warned), warned


@pytest.fixture
def train_cfg(tmp_path, data_dir):
    """A factory: train_cfg(*overrides) -> config of a fast CPU training run in tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_config("train", [*FAST, *overrides], run_dir or tmp_path / "run")

    return make
