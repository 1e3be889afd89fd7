"""The Hydra Sweeper plugin class; the sweep itself lives in `_sweep.py` (it imports Optuna)."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SFTOptunaSweeper(Sweeper):
    """Samples trials with Optuna (ask/tell) and runs each as a Hydra job; see config.py."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        from hydra_plugins.sft_optuna_sweeper._sweep import OptunaSweep
        from sft.errors import report_user_errors

        assert self.hydra_context is not None and self.config is not None
        assert self.task_function is not None
        hydra_context, task_function, config = self.hydra_context, self.task_function, self.config
        # its settings are checked as it is made: a mistake there is one line too
        return report_user_errors(
            lambda: OptunaSweep(
                hydra_context=hydra_context,
                task_function=task_function,
                config=config,
                **self.settings,
            ).run(arguments)
        )
