"""One Optuna sweep: ask a batch of trials, run them as Hydra jobs, tell Optuna how each ended,
then write `optimization_results.yaml` in the sweep directory."""

import inspect
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException, InstantiationException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from hydra_plugins.sft_optuna_sweeper._search_space import (
    SearchSpace,
    build_search_space,
    format_value,
    outside,
)
from sft.callbacks.optuna_pruning import (
    JOURNAL_SCHEME,
    PRUNED_AT_STEP,
    PRUNER_CONFIG,
    open_storage,
)
from sft.errors import ENDED_JOBS, SFTError, TrainingInterrupted
from sft.runs.result import (
    INTERRUPTED,
    PRUNING_OVERRIDE,
    RESULT_FILE,
    UNFINISHED,
    RunResult,
    differing_overrides,
    run_overrides,
)
from sft.utils.composition_errors import describe_composition_error
from sft.utils.config import MULTIRUN_RECORD, direction_mode, metric_mode
from sft.utils.config_types import check_config_types
from sft.utils.instantiate import runs_validation
from sft.utils.sweep_checks import TYPED_SECTIONS

log = logging.getLogger(__name__)

# the default storage: a journal file in the sweep directory (trials may run in parallel); a
# study started before (SQLite, optuna.db) stays in its database
JOURNAL_FILE = "optuna.journal"
LEGACY_DB = "optuna.db"
RESULTS_FILE = "optimization_results.yaml"
PRUNING_CALLBACK = "sft.callbacks.optuna_pruning.OptunaPruning"
BASIC_LAUNCHER_MODULE = "hydra._internal.core_plugins.basic_launcher"
# trial user attributes the sweeper sets
OUTPUT_DIR = "output_dir"
DUPLICATE_OF = "duplicate_of"
# a trial told FAIL because a signal stopped it (Optuna has no state for it)
STOPPED = "interrupted"
# optimization_results.yaml's trial counts, in Optuna's order of states, then those a signal
# stopped (FAIL in Optuna) and those not run
TRIAL_COUNT_ORDER = [state.name.lower() for state in TrialState] + [STOPPED, "repeated"]
# study user attribute: the overrides every trial gets (the command line's plain values)
FIXED_OVERRIDES = "sft_fixed_overrides"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# hydra.sweeper.pruner=null: as hydra/sweeper/pruner=none
NO_PRUNER = {"_target_": "optuna.pruners.NopPruner"}


class OptunaSweep:
    def __init__(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        monitor: str | None,
        sampler: DictConfig,
        pruner: DictConfig,
        params: DictConfig | dict,
        enqueue_trials: Sequence[Any],
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise SFTError(
                f"hydra.sweeper.direction must be maximize or minimize, not {direction!r}"
            )
        if n_trials < 0:
            raise SFTError(f"hydra.sweeper.n_trials must be >= 0, not {n_trials}")
        if n_jobs < 1:
            raise SFTError(f"hydra.sweeper.n_jobs must be >= 1, not {n_jobs}")
        self.config = config
        self.hydra_context = hydra_context
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.seed = seed
        check_monitor(monitor, config.get("optimized_metric"), direction)
        monitor = monitor or config.get("optimized_metric")
        # a test metric is logged once, after training: nothing to prune on (was: the pruning
        # callback warned in every trial that it was never logged)
        self.unprunable = monitor if str(monitor).startswith("test/") else None
        self.monitor = None if self.unprunable else monitor
        self.sampler_config = sampler
        # null: no pruning (was: a traceback from instantiate, after the study was created)
        self.pruner_config = pruner if pruner is not None else OmegaConf.create(NO_PRUNER)
        self.params = params
        self.enqueue_trials = [
            OmegaConf.to_container(p) if isinstance(p, DictConfig) else dict(p)
            for p in enqueue_trials
        ]
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def run(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        space = build_search_space(self.params, arguments)
        if not space.distributions:
            raise SFTError(
                "the Optuna sweeper has nothing to search: set hydra.sweeper.params or give a "
                "sweep such as model.lr_head=tag(log,interval(1e-4,1e-2))"
            )
        storage = self.storage or default_storage(sweep_dir)
        # refusals first: nothing is written, no study made, for a sweep that cannot run
        check_config_types(self.sampler_config, "hydra.sweeper.sampler")
        check_config_types(self.pruner_config, "hydra.sweeper.pruner")
        enqueued = self.enqueued_params(space)
        # every trial has the same keys: one trial's config composing checks them all, once,
        # with one line for a bad key (composing each job twice would cost a lot)
        self.validate(self.trial_overrides(space.example_params(), space, storage), space)
        metric = str(self.config.get("optimized_metric"))
        if metric.startswith("test/"):  # e.g. a study's config, whose jobs report test scores
            log.warning(
                f"optimized_metric={metric}: the search ranks its trials on the test split, so "
                "the best trial's test score is selected on it, not measured on unseen data; "
                "search on a validation metric (optimized_metric=val/acc_best)"
            )
        if self.unprunable:
            log.info(
                f"no trial is pruned: {self.unprunable} (hydra.sweeper.monitor, else "
                "optimized_metric) is logged after training only"
            )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if storage.startswith("sqlite:") and self.n_jobs > 1:
            log.warning(
                f"hydra.sweeper.n_jobs={self.n_jobs} with SQLite storage {storage}: trials running "
                "at once may fail with 'database is locked'; a journal:/// file or an RDB server "
                "(postgresql://...) is safe for parallel trials"
            )
        fixed = run_overrides([line for _, line in space.fixed])
        study, n_before = self.open_study(storage, enqueued, fixed, space)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN_RECORD)
        log.info(
            f"Optuna study '{self.study_name}' ({storage}): {n_before} trials so far, "
            f"adding {self.n_trials}; search space: {space.distributions}"
        )
        returns: list[Sequence[JobReturn]] = []
        remaining = self.n_trials
        try:
            while remaining > 0:
                size = min(self.n_jobs, remaining)
                batch = [study.ask(space.distributions) for _ in range(size)]
                remaining -= len(batch)
                try:
                    returns.extend(self.run_batch(study, space, storage, batch))
                except BaseException as stop:
                    # an interrupted or broken batch must not leave trials RUNNING in the study
                    stopped = isinstance(stop, KeyboardInterrupt | TrainingInterrupted)
                    for trial in batch:
                        if stopped and stored(study, trial.number).state == TrialState.RUNNING:
                            trial.set_user_attr(STOPPED, True)
                        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    raise
        finally:
            # also for an interrupted search: the trials it finished (was: the file of the run
            # before, naming its best)
            keep_another_studys_results(sweep_dir / RESULTS_FILE, self.study_name)
            write_results(study, sweep_dir / RESULTS_FILE, storage, space)
        return returns

    def enqueued_params(self, space: SearchSpace) -> list[dict[str, Any]]:
        """`enqueue_trials` without the keys the command line (or `params`) fixes: every trial
        gets those values, the enqueued one too; SFTError for a key neither searched nor fixed."""
        fixed = {key for key, _ in space.fixed}
        trials = []
        for params in self.enqueue_trials:
            # parameters are named by their key (`+model.x` searches model.x)
            params = {str(k).lstrip("+"): v for k, v in params.items()}
            unknown = set(params) - set(space.distributions) - fixed
            if unknown:
                raise SFTError(f"hydra.sweeper.enqueue_trials: {sorted(unknown)} are not searched")
            dropped = sorted(set(params) - set(space.distributions))
            if dropped:
                log.info(f"Enqueued trial {params}: {dropped} fixed for every trial, left out")
            kept = {k: v for k, v in params.items() if k in space.distributions}
            for key, value in kept.items():
                # (was: Optuna's ValueError traceback from study.ask, the trial left RUNNING in
                # the study for good, so never run)
                if (expected := outside(space.distributions[key], value)) is not None:
                    raise SFTError(
                        f"hydra.sweeper.enqueue_trials: {key}={value!r} is not in the search "
                        f"space, which draws {expected}"
                    )
            if kept:
                trials.append(kept)
        return trials

    def open_study(
        self, storage: str, enqueued: list[dict[str, Any]], fixed: list[str], space: SearchSpace
    ) -> tuple[optuna.Study, int]:
        """Create the study or load it (and its number of trials); the sampler's seed moves on
        with the study's size. A study is resumed only with the `fixed` overrides (every trial's)
        it was created with: trials of other settings would be compared as if they were alike."""
        pruner = build_optuna_part(self.pruner_config, "hydra.sweeper.pruner")
        try:
            study = optuna.create_study(
                storage=open_storage(storage),
                study_name=self.study_name,
                direction=self.direction,
                pruner=pruner,
                load_if_exists=True,
            )
        # a malformed URL, a missing database driver, a database or journal that cannot be opened
        except (ValueError, ImportError, OSError, SQLAlchemyError) as exc:
            # SQLAlchemy's message runs over several lines; its driver's error says what failed
            text = str(getattr(exc, "orig", None) or exc).splitlines()
            reason = text[0] if text else type(exc).__name__
            setting = "hydra.sweeper.storage=" if self.storage else "the study's storage "
            raise SFTError(
                f"{setting}{storage}: cannot open it as Optuna storage: {reason}"
            ) from exc
        if study.direction.name.lower() != self.direction:
            raise SFTError(
                f"study '{self.study_name}' in {storage} was created to "
                f"{study.direction.name.lower()}, not {self.direction} (a study on a loss made "
                "before the direction followed optimized_metric maximised it): give another "
                "hydra.sweep.dir or hydra.sweeper.study_name for a new study"
            )
        check_fixed_overrides(study, storage, fixed)
        check_distributions(study, storage, space)
        n_before = len(study.trials)
        # the sampler's own seed (hydra.sweeper.sampler.seed, as hydra-optuna-sweeper users set
        # it) before the sweeper's (was: replaced by it); none for a sampler that takes none
        own = self.sampler_config.get("seed")
        base = own if own is not None else self.seed
        seed = (
            {} if base is None or not takes_seed(self.sampler_config) else {"seed": base + n_before}
        )
        study.sampler = build_optuna_part(self.sampler_config, "hydra.sweeper.sampler", **seed)
        # the jobs' pruning callbacks build the same pruner from the study (only storage is shared)
        study.set_user_attr(PRUNER_CONFIG, OmegaConf.to_container(self.pruner_config, resolve=True))
        # none for a run of no trials, which would leave them waiting (was: `waiting: 1`)
        for params in enqueued if self.n_trials > 0 else []:
            # again where its run was interrupted (was: never run, since Optuna's
            # skip_if_exists counts any trial of its parameters, a failed one too)
            if not any(
                t.system_attrs.get("fixed_params", t.params) == params
                and not (t.state == TrialState.FAIL and t.user_attrs.get(STOPPED))
                for t in study.get_trials(deepcopy=False)
            ):
                study.enqueue_trial(params)
        return study, n_before

    def run_batch(
        self, study: optuna.Study, space: SearchSpace, storage: str, batch: list[Trial]
    ) -> list[Sequence[JobReturn]]:
        finished = {
            params_key(t.params): t.number
            for t in study.get_trials(deepcopy=False, states=FINISHED)
        }
        to_run: list[Trial] = []
        duplicates: list[tuple[Trial, int]] = []
        for trial in batch:
            key = params_key(trial.params)
            if key in finished:
                duplicates.append((trial, finished[key]))
            else:
                finished[key] = trial.number
                to_run.append(trial)

        overrides = {t.number: self.trial_overrides(t.params, space, storage) for t in to_run}
        returns = []
        # job number = trial number: a re-run's jobs get new directories. Hydra's basic
        # launcher runs a launch's jobs one after another and, stopped by a signal, returns
        # none of them: one job per launch, each told as it ends (was: n_jobs=2 and Ctrl-C in
        # the second job told the first, completed, FAIL)
        chunks = ([t] for t in sorted(to_run, key=lambda t: t.number))
        for chunk in chunks if runs_jobs_in_turn(self.launcher) else consecutive_runs(to_run):
            try:
                results = self.launcher.launch(
                    [overrides[t.number] for t in chunk], initial_job_idx=chunk[0].number
                )
            except BaseException as stop:
                # a signal stopped the batch's jobs that ran at once (local_jobs, ray): the
                # ones that had ended keep their values (was: every trial of the batch FAIL)
                ended = getattr(stop, ENDED_JOBS, {})
                for trial in chunk:
                    if trial.number in ended:
                        tell(study, trial, ended[trial.number])
                raise
            for trial, result in zip(chunk, results, strict=True):
                tell(study, trial, result)
            returns.append(results)
        for trial, original in duplicates:
            repeat(study, trial, original)
        return returns

    def trial_overrides(
        self, params: dict[str, Any], space: SearchSpace, storage: str
    ) -> list[str]:
        overrides = space.trial_overrides(params)
        if self.monitor:
            pruning = {
                "_target_": PRUNING_CALLBACK,
                "storage": storage,
                "study_name": self.study_name,
                # the job's number is its trial's (see run_batch); written as an interpolation
                # the override is the same for every job, so sweep summaries list it once
                "trial_number": "${hydra:job.num}",
                "monitor": self.monitor,
            }
            fields = ",".join(f"{k}:{format_value(v)}" for k, v in pruning.items())
            overrides.append(f"{PRUNING_OVERRIDE}={{{fields}}}")
        return overrides

    def validate(self, overrides: list[str], space: SearchSpace) -> None:
        """The trials' config composes (`overrides`: one trial's), and the searched settings
        of typed sections take the values `space` draws, before any trial is asked."""
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(
                master_config=self.config, sweep_overrides=list(overrides)
            )
        except HydraException as exc:
            # a misspelt searched key: "did you mean ...?" as for any override (was: Hydra's
            # advice to append it with +, which adds the typo)
            described = describe_composition_error(
                exc,
                self.config.hydra.job.config_name,
                [*self.config.hydra.overrides.task, *overrides],
                self.hydra_context.config_loader,
            )
            reason = described or " ".join(str(exc).split())
            raise SFTError(f"the trials' overrides do not compose: {reason}") from exc
        for section, settings in searched_settings(cfg, space.distributions).items():
            try:
                check_config_types(settings, section, whole=False)
            except SFTError as err:
                # (was: each trial's own error line, after its job started)
                floats = any(
                    isinstance(d, FloatDistribution) and str(err).startswith(f"{k}:")
                    for k, d in space.distributions.items()
                )
                hint = "; an interval draws floats, tag(int,interval(a,b)) integers"
                raise SFTError(
                    f"the search space does not fit: {err}{hint if floats else ''}"
                ) from None
        metric = cfg.get("optimized_metric")
        trainer = cfg.get("trainer")
        if str(metric).startswith("val/") and trainer is not None and not runs_validation(trainer):
            raise SFTError(
                f"optimized_metric={metric} is a validation metric but trainer.limit_val_batches="
                f"{trainer.limit_val_batches} turns validation off: every trial would fail"
            )
        if str(metric).startswith("test/") and not cfg.get("test"):
            raise SFTError(
                f"optimized_metric={metric} is a test metric but test=false: every trial would "
                "fail; set test=true, or optimise a val/ metric"
            )


def searched_settings(cfg: DictConfig, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each typed section of a trial's `cfg` cut down to its searched `keys` and the
    `_target_`s above them: what the drawn values go to, checked before any trial. The rest is
    each trial's to check (trainer.default_root_dir's `${hydra:...}` resolves in a job only)."""
    sections: dict[str, dict[str, Any]] = {}
    for key in (k.lstrip("+~") for k in keys):
        parts = key.split(".")
        if parts[0] not in TYPED_SECTIONS or len(parts) < 2:
            continue
        out = sections.setdefault(parts[0], {})
        for depth in range(1, len(parts)):
            node = OmegaConf.select(cfg, ".".join(parts[:depth]))
            if not isinstance(node, DictConfig):
                break
            if "_target_" in node:
                out["_target_"] = node["_target_"]
            if depth == len(parts) - 1:
                out[parts[-1]] = OmegaConf.select(cfg, key)
            else:
                out = out.setdefault(parts[depth], {})
    return sections


def check_distributions(study: optuna.Study, storage: str, space: SearchSpace) -> None:
    """SFTError for a parameter the study searched in a way Optuna cannot continue (another
    kind, log scale, or categorical choices): Optuna refused it only when a trial asked for
    it, with a traceback, and left that trial running for good."""
    checked: set[tuple[str, str]] = set()
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            new = space.distributions.get(name)
            if new is None or (name, repr(old)) in checked:
                continue
            checked.add((name, repr(old)))
            try:
                optuna.distributions.check_distribution_compatibility(old, new)
            except ValueError as exc:
                raise SFTError(
                    f"{name}: study '{study.study_name}' in {storage} searched it as {old}, "
                    f"now {new}: {exc} Search it as before, or start another study "
                    "(hydra.sweeper.study_name=<new name>, or another hydra.sweep.dir)"
                ) from None


def check_fixed_overrides(study: optuna.Study, storage: str, fixed: list[str]) -> None:
    """Record the overrides every trial of the study gets; SFTError naming those that differ
    when it was run with others (a study made before they were recorded is taken as it is)."""
    recorded = study.user_attrs.get(FIXED_OVERRIDES)
    if recorded is None:
        # in order: `~key` before `+key=...` is another setting than after (studies recorded
        # before this kept them sorted)
        study.set_user_attr(FIXED_OVERRIDES, list(fixed))
        return
    if sorted(recorded) == sorted(fixed):
        return
    # the same settings however written (was: model.lr_head=1e-2 then =0.01 refused)
    then, now = differing_overrides(recorded, fixed)
    if then or now:
        raise SFTError(
            f"study '{study.study_name}' in {storage} was run with other fixed overrides: "
            f"{' '.join(then) or 'none'} then, {' '.join(now) or 'none'} now; start a new study "
            "under another hydra.sweeper.study_name (or, with the default storage, in another "
            "hydra.sweep.dir): a re-run adds trials to a study only with the same fixed overrides"
        )


def default_storage(sweep_dir: Path) -> str:
    """`journal:///<sweep dir>/optuna.journal`, or the SQLite database of a study this sweep
    directory already holds (written before the journal became the default)."""
    legacy = sweep_dir / LEGACY_DB
    if legacy.is_file():
        return f"sqlite:///{legacy}"
    return f"{JOURNAL_SCHEME}{sweep_dir / JOURNAL_FILE}"


def params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def runs_jobs_in_turn(launcher: Launcher) -> bool:
    """Whether `launcher` is Hydra's basic one. By name: Hydra's plugin scan runs the launcher
    modules anew, so their classes are not those an import here gets."""
    kind = type(launcher)
    return (kind.__module__, kind.__name__) == (BASIC_LAUNCHER_MODULE, "BasicLauncher")


def consecutive_runs(trials: list[Trial]) -> Iterator[list[Trial]]:
    """Trials in runs of consecutive numbers (one launch each, so job numbers match)."""
    run: list[Trial] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if run and trial.number != run[-1].number + 1:
            yield run
            run = []
        run.append(trial)
    if run:
        yield run


def tell(study: optuna.Study, trial: Trial, result: JobReturn) -> None:
    """Failed job -> FAIL; stopped by the pruning callback -> PRUNED (whatever it returned, a
    diverged trial's NaN included); no value or NaN -> FAIL; else COMPLETE with the value."""
    output_dir = result.hydra_cfg.hydra.runtime.output_dir if result.hydra_cfg else None
    if output_dir:
        trial.set_user_attr(OUTPUT_DIR, str(output_dir))
    failure = None
    recorded_status = None
    if result.status == JobStatus.FAILED:
        try:
            result.return_value  # noqa: B018 (a failed job's return_value raises its error)
        except Exception as exc:
            failure = f"the job raised {type(exc).__name__}: {exc}"
    elif output_dir and (Path(output_dir) / RESULT_FILE).exists():
        recorded = RunResult.read(Path(output_dir) / RESULT_FILE)
        recorded_status = recorded.status
        if recorded.status in UNFINISHED:
            ended = "was interrupted" if recorded.status == INTERRUPTED else "failed"
            failure = f"the job {ended}: {recorded.error}"
    pruned_at = stored(study, trial.number).user_attrs.get(PRUNED_AT_STEP)
    if failure is None and pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        log.info(f"Trial {trial.number} pruned after validation {pruned_at}")
        return
    value = None if failure else result.return_value
    if failure is None and not _is_number(value):
        failure = f"the job returned {value!r}, not a number"
    if failure is not None:
        if recorded_status == INTERRUPTED:
            trial.set_user_attr(STOPPED, True)
        study.tell(trial, state=TrialState.FAIL)
        log.warning(f"Trial {trial.number} failed: {failure}")
    else:
        study.tell(trial, float(value))
        log.info(f"Trial {trial.number}: {value} with {trial.params}")


def _is_number(value: Any) -> bool:
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def stored(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as the storage has it now (a `Trial` object caches its attributes, and
    the job's pruning callback writes them from its own process)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def repeat(study: optuna.Study, trial: Trial, original_number: int) -> None:
    """A trial that repeats finished parameters is not run again: it gets the original's result."""
    original = stored(study, original_number)
    trial.set_user_attr(DUPLICATE_OF, original_number)
    if original.state == TrialState.COMPLETE:
        study.tell(trial, original.values)
    else:
        study.tell(trial, state=original.state if original.state in FINISHED else TrialState.FAIL)
    log.info(f"Trial {trial.number} repeats trial {original_number}'s parameters: not run again")


def keep_another_studys_results(path: Path, study_name: str) -> None:
    """The results file of another study (an earlier hydra.sweeper.study_name in this sweep
    directory) is kept beside, as `optimization_results_<its study>.yaml` (was: written over by
    the new study's, the old study's best trial then named nowhere but in its storage)."""
    try:
        earlier = OmegaConf.load(path).get("study_name") if path.is_file() else None
    except Exception:  # not ours, or not YAML: left for the write below to replace
        return
    if not earlier or earlier == study_name:
        return
    # a file name of the study's name (which may hold a `/`); a file kept from an earlier run
    # of that study holds older results than this one
    name = re.sub(r"[^\w.-]", "_", str(earlier))
    kept = path.with_name(f"{path.stem}_{name}{path.suffix}")
    path.replace(kept)
    log.info(f"{path} held the results of study '{earlier}': kept as {kept}")


def _counted_state(trial: FrozenTrial) -> str:
    if DUPLICATE_OF in trial.user_attrs:
        return "repeated"
    if trial.state == TrialState.FAIL and trial.user_attrs.get(STOPPED):
        return STOPPED
    return trial.state.name.lower()


def check_monitor(monitor: str | None, optimized_metric: str | None, direction: str) -> None:
    """SFTError for a `hydra.sweeper.monitor` of one's own that goes against the study's
    direction: Optuna's pruners read every reported value the study's way (was: a search on
    accuracy monitoring val/loss pruned its trials of lowest loss). Judged by the name where it
    says (a loss, error or ece is lower-better, sft's metrics higher-better); a name that does
    not (val/perplexity) is taken as given."""
    if not monitor or monitor == optimized_metric:
        return
    from sft.models.metrics import metric_names  # late: torchmetrics, for Optuna sweeps only

    mode = metric_mode(str(monitor))
    if mode == "max" and str(monitor).rpartition("/")[2].removesuffix("_best") not in (
        metric_names()
    ):
        return
    if mode != direction_mode(direction):
        better = "lower" if mode == "min" else "higher"
        raise SFTError(
            f"hydra.sweeper.monitor={monitor} is better {better}, but the study is to "
            f"{direction} (hydra.sweeper.direction, by default from optimized_metric="
            f"{optimized_metric}): Optuna's pruner would read its values the study's way and "
            "stop the best trials; monitor a metric that goes the study's way, or leave "
            "hydra.sweeper.monitor unset (the optimized_metric)"
        )


def build_optuna_part(config: DictConfig, where: str, **kwargs: Any) -> Any:
    """The sampler or pruner `config` makes; a value Optuna refuses is one error line (was:
    Hydra's InstantiationException traceback)."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise SFTError(f"{where}: {' '.join(str(cause).split())}") from exc


def takes_seed(config: DictConfig) -> bool:
    """Whether the class `config` makes takes a `seed` (TPE, random, CMA-ES... do; Optuna's
    PartialFixedSampler does not)."""
    try:
        return "seed" in inspect.signature(get_object(str(config._target_))).parameters
    except (TypeError, ValueError):  # no signature to read: no seed given
        return False


def write_results(study: optuna.Study, path: Path, storage: str, space: SearchSpace) -> None:
    """optimization_results.yaml: the best trial (its overrides with the `+` of a key the configs
    lack, as its job got them; was: without), the study's storage and trial counts."""
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best: FrozenTrial | None = study.best_trial if completed else None
    results = {
        "name": "sft_optuna",
        "study_name": study.study_name,
        "storage": storage,
        "direction": study.direction.name.lower(),
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": dict(best.params) if best else None,
        "best_overrides": space.sampled_overrides(best.params) if best else None,
        "best_output_dir": best.user_attrs.get(OUTPUT_DIR) if best else None,
        # a trial that repeated finished parameters is told their result without running: as
        # "repeated" (was: counted complete, where summary.md counts the jobs that ran); one a
        # signal stopped as "interrupted" (was: "fail", where summary.md says interrupted)
        "n_trials": dict(
            sorted(
                Counter(_counted_state(t) for t in trials).items(),
                key=lambda item: TRIAL_COUNT_ORDER.index(item[0]),
            )
        ),
    }
    OmegaConf.save(OmegaConf.create(results), path)
    if best is None:
        log.warning(f"No trial completed: {path}")
    else:
        log.info(f"Best trial {best.number}: {best.value} with {best.params}; see {path}")
