"""The sweeper's config, registered in Hydra's ConfigStore as `hydra/sweeper: sft_optuna`.

Samplers and pruners are instantiated from `hydra/sweeper/sampler` (`tpe`, `random`) and
`hydra/sweeper/pruner` (`median`, `none`); any Optuna class works through `_target_`.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SFTOptunaSweeperConf:
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    _target_: str = "hydra_plugins.sft_optuna_sweeper.optuna_sweeper.SFTOptunaSweeper"
    # the sweeper instantiates the sampler (with its seed) and the pruner itself
    _recursive_: bool = False
    # "maximize" or "minimize" the value each job returns (sft-train: its optimized_metric);
    # by default minimize for a loss, else maximize (the resolver sft.train registers)
    direction: str = "${sft_direction:${optimized_metric}}"
    # the study in `storage`; re-running a sweep with the same study and storage resumes it
    study_name: str = "sft"
    # null: journal:///<hydra.sweep.dir>/optuna.journal, Optuna's JournalStorage on a file, safe
    # for trials running at once (n_jobs > 1 with a parallel launcher); or any Optuna storage
    # URL: an RDB server (postgresql://...) for trials on several machines, sqlite:/// for serial
    # sweeps only
    storage: str | None = None
    # trials this run adds to the study (as Optuna's study.optimize(n_trials=...))
    n_trials: int = 20
    # trials asked per batch, launched together (in parallel with a parallel launcher)
    n_jobs: int = 1
    # the sampler's seed is seed + the number of trials already in the study, so a re-run of a
    # seeded sweep samples new points instead of replaying the first run's
    seed: int | None = 0
    # pruning: the metric reported to the trial after every validation; null: the task's
    # optimized_metric (the value the job returns)
    monitor: str | None = None
    sampler: Any = MISSING
    pruner: Any = MISSING
    # search space, `key: <value>` per override key: Hydra's sweep syntax (`interval(1e-5,1e-3)`,
    # `tag(log,interval(1e-5,1e-3))`, `tag(int,interval(1,8))`, `range(1,4)` (4 excluded),
    # `choice(a,b)`, `a,b`), a dict {type: float|int|categorical, low, high, step, log, choices},
    # or a plain value every trial gets; sweeps on the command line join it
    params: dict[str, Any] = field(default_factory=dict)
    # parameter sets (`{key: value}`) to try first, each once per study
    enqueue_trials: list[dict[str, Any]] = field(default_factory=list)


def _store() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="sft_optuna", node=SFTOptunaSweeperConf, provider="sft")
    samplers = {
        # n_startup_trials: random trials before TPE models the results
        "tpe": {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 10},
        "random": {"_target_": "optuna.samplers.RandomSampler"},
    }
    pruners = {
        # prune a trial whose best value so far is worse than the median of completed trials
        # at the same validation step, once n_startup_trials trials have completed
        "median": {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 5,
            "n_warmup_steps": 0,
        },
        "none": {"_target_": "optuna.pruners.NopPruner"},
    }
    for name, node in samplers.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="sft")
    for name, node in pruners.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="sft")


_store()
