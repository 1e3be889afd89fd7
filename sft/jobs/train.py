"""The training job (`sft-train`, once Hydra has composed the config): seed -> instantiate ->
fit -> test -> result.json -> monitored metric."""

import contextlib
import inspect
import logging
import math
import os
import pydoc
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_object, instantiate
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import (
    BackboneFinetuning,
    BaseFinetuning,
    BatchSizeFinder,
    GradientAccumulationScheduler,
    LearningRateFinder,
    WeightAveraging,
)
from omegaconf import DictConfig, OmegaConf, open_dict

from sft.callbacks.graceful_interrupt import (
    interrupt_explained,
    relayed_to_spawned_ranks,
    resume_arguments,
)
from sft.callbacks.last_checkpoint import name_checkpoints_by_step, ranking_checkpoint
from sft.callbacks.metric_lines import metric_text
from sft.callbacks.monitored_metrics import with_monitored_metrics_checks
from sft.callbacks.nonfinite_loss import StopOnNonFiniteLoss
from sft.callbacks.optuna_pruning import OptunaPruning
from sft.callbacks.sanity_check import SanityCheckWatch
from sft.callbacks.spawned_rank_logging import SpawnedRankLogging
from sft.callbacks.timer import with_max_time_timer
from sft.contracts import datamodule_gaps, not_a_datamodule, unrecorded_settings
from sft.data import SFTDataModule
from sft.data.base import modality_mismatch
from sft.data.resumable import end_loader_workers
from sft.errors import SFTError
from sft.models import SFTClassifier
from sft.models.backbones import backbone_modality, backbone_speed_hints, resolve_input_spec
from sft.models.classifier import check_decoupled_pull, check_optimizer_settings
from sft.models.loading import check_class_names, warn_unloadable_targets
from sft.runs.directories import is_grid
from sft.runs.recorded_job import run_recorded
from sft.runs.result import RunRecorder, RunResult, earlier_test_metrics, run_overrides
from sft.runs.resume import (
    ResumePoint,
    check_resume_checkpoint,
    check_training_left,
    continue_csv_logs,
    continue_tensorboard,
    epochs_completed,
    finished_job,
    purge_no_more,
    recover_spawned_progress,
    resume_point,
    return_spawned_progress,
)
from sft.runs.tensorboard_hparams import TensorBoardHParams
from sft.utils.allocator import give_back_freed_memory, keep_freed_memory
from sft.utils.config import (
    as_written,
    config_dir_arguments,
    group_choice,
    group_choices,
    print_and_save_config,
    swept_keys,
    task_overrides,
)
from sft.utils.config_types import Seed, check_config_types, check_has_target, check_value
from sft.utils.ddp_ranks import ranks_join
from sft.utils.distributed import end_process_group
from sft.utils.hardware import (
    check_accelerator,
    check_nodes,
    check_sync_batchnorm,
    drop_anomaly_detection_under_loss_scaling,
    resolve_auto_precision,
    warn_fp16_weights,
)
from sft.utils.instantiate import (
    build_trainer,
    checkpointing,
    instantiate_callbacks,
    instantiate_loggers,
    lightning_refusals,
    runs_validation,
)
from sft.utils.logs import rank_zero_warning
from sft.utils.overrides import override_key
from sft.utils.terminal import progress_bar_off_unless_terminal

log = logging.getLogger(__name__)


def train(cfg: DictConfig, recorder: RunRecorder | None = None) -> dict[str, Any]:
    """Fit (optionally resuming from `ckpt_path`), then test the best checkpoint; return metrics.

    `recorder` (from train_job) gets the number of epochs completed for the run's result.json.
    """
    check_value(cfg.get("seed"), Seed, "seed", number_text=True)  # "3" from ${oc.env:}
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # set by a launcher (Ray, SLURM) per job
        log.info(
            f"GPUs visible to this run: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
        )
    # the precision the hardware calls for, then every value checked, before anything is built
    # and before the config is saved (config_resolved.yaml records the precision used)
    check_accelerator(cfg.trainer)
    check_nodes(cfg.trainer)
    if cfg.trainer.get("barebones"):
        # (was: Lightning's refusal of one setting after another: the loggers, then the
        # logging interval, which its advice did not lead past)
        raise SFTError(
            "trainer.barebones=true leaves out the logging, checkpoints and callbacks an sft run "
            "records itself with (its metrics, result.json, resume=): not supported; the least "
            "a run does: callbacks=none '~logger' trainer.enable_progress_bar=false"
        )
    resolve_auto_precision(cfg.trainer, backbone_speed_hints(cfg.model.get("backbone")).cpu_bf16)
    typed = {override_key(o): o.partition("=")[2] for o in task_overrides()}
    progress_bar_off_unless_terminal(cfg.trainer, typed, rich=_rich_progress_bar(cfg))
    warn_fp16_weights(cfg.trainer)
    drop_anomaly_detection_under_loss_scaling(cfg.trainer)
    check_sync_batchnorm(cfg.trainer)
    check_has_target(cfg.get("data"), "data", "sft.data.text.TextClassificationDataModule")
    check_has_target(cfg.get("model"), "model", "sft.models.SFTClassifier")
    check_has_target(
        cfg.model.get("backbone"), "model.backbone", "sft.models.backbones.create_backbone"
    )
    check_modalities(cfg.data, cfg.model.get("backbone"))
    for key in ("data", "model", "trainer", "adapter"):
        check_config_types(cfg.get(key), key)
    # the model builds its backbone from these settings alone: a value it needs is named (was:
    # Hydra's nested "Error in call to target" with the TypeError)
    check_config_types(cfg.model.get("backbone"), "model.backbone")
    check_model_class(str(cfg.model._target_))
    warn_unloadable_targets(cfg.model, cfg.get("data"))
    check_optimizer_settings(cfg.model.get("optimizer"))
    check_decoupled_pull(cfg.model, cfg.get("adapter"))
    keep = cfg.get("keep_freed_memory", True)
    check_value(keep, bool, "keep_freed_memory")
    if keep:
        kept = keep_freed_memory()
        log.info(
            "malloc keeps freed memory for the next steps (keep_freed_memory=true)"
            if kept
            else "keep_freed_memory=true: not applied (the C library is not glibc, or refused it)"
        )
    # the size images are decoded to, as given (a continued run takes its checkpoint's)
    image_size_given = cfg.data.get("image_size")
    # ckpt_path=, or last.ckpt of the run resume= continues: read once, here
    start = resume_point(cfg) if cfg.get("train") else None
    if start and start.continues_run:
        check_training_left(start.path, start.checkpoint, cfg.trainer, continued=True)
        keep_trained_inputs(cfg.data, start.checkpoint, start.path)
    if start and cfg.get("adapter") and cfg.adapter.get("init_from"):
        # the adapters' weights are the checkpoint's: the peft folder is not read again, and
        # its layers are those the checkpoint's settings name
        log.info(f"adapter.init_from={cfg.adapter.init_from}: continued from {start.path} instead")
        cfg.adapter.init_from = None
        saved = start.checkpoint.get("hyper_parameters", {}).get("adapter") or {}
        if cfg.adapter.get("target_modules") is None:
            cfg.adapter.target_modules = saved.get("target_modules")

    datamodule: SFTDataModule = instantiate(cfg.data)
    # before the contract check, which reads has_labelled_test (an HF dataset's test split)
    if not cfg.get("test") and hasattr(datamodule, "test_wanted"):
        datamodule.test_wanted = False
    if gaps := datamodule_gaps(datamodule, set_up=False):  # a plain LightningDataModule
        raise SFTError(not_a_datamodule(datamodule, gaps))
    if unrecorded := unrecorded_settings(type(datamodule), datamodule.hparams):
        # its checkpoints rebuild it with its defaults (was: scored other data without a word)
        log.warning(
            f"{type(datamodule).__qualname__} records none of its settings "
            f"({', '.join(unrecorded)}): sft-eval and sft-predict would rebuild it from the "
            "checkpoint with their defaults; call self.save_hyperparameters() in its __init__"
        )
    # not recursive, whatever the model's config says: the model builds its backbone and head
    # from their settings, which its checkpoints record (was: a config of one's own without
    # `_recursive_: false` handed it a built backbone, a TypeError traceback)
    model: SFTClassifier = instantiate(cfg.model, adapter=cfg.get("adapter"), _recursive_=False)
    datamodule.configure_input(model.input_spec)  # the backbone's normalisation, modality
    decoded = getattr(datamodule, "image_size", None)
    resized_to = (cfg.model.get("backbone") or {}).get("input_size")
    if image_size_given and isinstance(resized_to, int) and decoded != resized_to:
        # (was: no word; the model's input size is what it trains and predicts at)
        rank_zero_warning(
            log,
            f"data.image_size={decoded}: images are decoded at {decoded} px, and the model "
            f"resizes them to {resized_to} px (model.backbone.input_size), the size it trains "
            f"and predicts at: set model.backbone.input_size={decoded} to train at {decoded} px",
        )
    if cfg.data.get("image_size", 0) is None and decoded is not None:
        cfg.data.image_size = decoded  # config_resolved.yaml: the size decoded to
    if start:
        # before anything is written: a resumed run's directory keeps its files when refused
        check_same_modality(start, model)
        check_resume_checkpoint(start, model)  # a clear line, not a load traceback
        if not start.continues_run:  # after the model's checks: they say what is wrong first
            check_training_left(start.path, start.checkpoint, cfg.trainer)
        # the model's outputs are by position: the data's classes must be the checkpoint's, in
        # its order (names from the config or a folder listing: the data is not read yet; a
        # user's datamodule of sft.contracts' without the method tells none)
        known = getattr(datamodule, "known_class_names", lambda: None)()
        check_class_names(known, start.checkpoint.get("class_names"), start.path)
    print_and_save_config(cfg, cfg.paths.output_dir)
    if start and start.continues_run:
        continue_tensorboard(cfg.get("logger"), start.step)
        continue_csv_logs(cfg.get("logger"))
        # the run's own checkpoints, as a continued run's are (ModelCheckpoint warned of them;
        # as it says the folder: of this run's only, the filter outlasting the run)
        run_dir = re.escape(os.path.realpath(cfg.paths.output_dir) + os.sep)
        warnings.filterwarnings("ignore", rf"Checkpoint directory {run_dir}.* exists and is not")
        if recorder is not None:
            recorder.continues_earlier_run()
    loggers = instantiate_loggers(cfg.get("logger"))
    # a list of options (callbacks=[a,b]) is no choice Hydra records
    chosen = typed.get("callbacks") or group_choice("callbacks")
    callbacks = instantiate_callbacks(
        cfg.get("callbacks"),
        progress_bar=cfg.trainer.get("enable_progress_bar", True),
        validates=runs_validation(cfg.trainer),
        logs=bool(loggers),
        chosen=None if chosen == "default" else chosen,
        typed=list(typed),
    )
    sanity_check = SanityCheckWatch()
    check_callbacks_against_the_schedule(callbacks, cfg.model)
    trainer = build_trainer(
        cfg.trainer,
        logger=loggers,
        **checkpointing(cfg.trainer, callbacks),
        **with_max_time_timer(
            cfg.trainer,
            [sanity_check, *with_monitored_metrics_checks(callbacks), SpawnedRankLogging()],
        ),
    )
    name_checkpoints_by_step(trainer)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))  # hparams.yaml
    trainable, total = model.parameter_counts()
    tensorboard_hparams = TensorBoardHParams(
        trainer.loggers,
        cfg,
        swept_keys(),
        task_overrides(),
        {"model.trainable_params": trainable, "model.trainable_fraction": trainable / total},
        group_choices(),
    )
    tensorboard_hparams.start()
    overrides = resume_arguments()
    # read before the checkpoint is handed over: where it was, and the data it was tested on
    start_step = start.step if start else None
    trained_data = start.checkpoint.get("datamodule_hyper_parameters") if start else None
    with multirun_job_ranks(str(cfg.paths.output_dir), start, overrides):
        if cfg.get("train"):
            if recorder is not None:
                recorder.fit_started()
            ckpt_path = start.hand_to(trainer) if start else None
            return_spawned_progress(trainer)
            try:
                with (
                    lightning_refusals(),
                    interrupt_explained(trainer, overrides),
                    relayed_to_spawned_ranks(trainer),
                ):
                    trainer.fit(
                        model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True
                    )
                recover_spawned_progress(trainer)
                if not (start and start.continues_run):  # its validations: in its first part
                    warn_if_never_validated(trainer, cfg.get("optimized_metric"))
                warn_if_diverged_unchecked(trainer)
            finally:
                # also for an interrupted or failed fit: the epochs and metrics it reached
                if recorder is not None:
                    pruned = any(
                        isinstance(c, OptunaPruning) and c.pruned() for c in trainer.callbacks
                    )
                    recorder.set_progress(
                        epochs_completed(trainer),
                        trainer.global_step,
                        {} if sanity_check.in_sanity_check else trainer.callback_metrics,
                        pruned,
                    )
        metrics = dict(trainer.callback_metrics)
        purge_no_more(trainer.loggers)
        # a completed run continued with its settings and data that trained no further (a
        # finished job of a sweep run again, to continue its other jobs): its best checkpoint
        # and so its test metrics still hold (was: tested again, its time added to the run's).
        # Rank 0 decides for all: trainer.test is collective under DDP.
        tested = trainer.strategy.broadcast(
            earlier_test_metrics(cfg.paths.output_dir, run_overrides(task_overrides()))
            if cfg.get("test")
            and start
            and start.continues_run
            and trainer.global_step == start_step
            and dict(datamodule.hparams) == trained_data
            else {},
            src=0,
        )

        if tested:
            metrics.update(tested)
            if trainer.is_global_zero:
                log.info(
                    "Not tested again: the run trained no further since its test "
                    f"({metric_text(tested)}); sft-eval ckpt_path=<its checkpoint> scores one "
                    "again."
                )
        elif cfg.get("test") and not datamodule.has_labelled_test:
            # an unlabelled test file (not a Hugging Face split, which sft-predict does not
            # read; nor SST trees' test_split: null)
            from_file = datamodule.hparams.get("source") != "hf" and bool(
                datamodule.hparams.get("test_split")
            )
            log.info(
                "The data has no labelled test split: skipping test"
                + (" (sft-predict inputs=<its file> predicts it)." if from_file else ".")
            )
        elif cfg.get("test"):
            ranking = ranking_checkpoint(trainer)
            best = getattr(ranking, "best_model_path", "")  # a user's own Checkpoint: none
            says = trainer.is_global_zero  # a rank of subprocess DDP: said once, by rank 0
            if says and not best and ranking and trainer.fast_dev_run:
                # Lightning's fast_dev_run (debug=fdr) ranks no checkpoints, by design
                log.info("Testing the final weights (fast_dev_run ranks no checkpoints).")
            elif says and not best and ranking:
                log.warning("No best checkpoint recorded: testing the current weights.")
            elif says and not best:  # no checkpoints by choice (studies, callbacks=none)
                log.info("Testing the final weights (no checkpoints in this run).")
            if best:
                # a checkpoint saved under WeightAveraging (EMA) holds the averaged weights,
                # which its validation ranked; the callback, loading it, put the live weights
                # back ("current_model_state"): the test scored another model than sft-eval
                trainer.callbacks = [
                    c for c in trainer.callbacks if not isinstance(c, WeightAveraging)
                ]
            with lightning_refusals(), interrupt_explained(trainer, overrides):
                trainer.test(
                    model, datamodule=datamodule, ckpt_path=best or None, weights_only=True
                )
            if says and best and getattr(ranking, "monitor", None) is None:
                # Lightning's default callback (callbacks=none trainer.enable_checkpointing=true)
                # ranks nothing: its "best" is the last checkpoint it saved
                log.info(f"Tested the last checkpoint (no monitored metric): {best}")
            elif says and best:
                log.info(f"Best checkpoint: {best}")
            metrics.update(trainer.callback_metrics)
    metrics = {k: float(v) for k, v in metrics.items()}
    tensorboard_hparams.end(metrics, cfg.get("optimized_metric"))
    scores = {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    if trainer.is_global_zero and scores:
        # the console had them only in Lightning's test table (none without a test split), the
        # run's log file not at all (result.json has every metric)
        log.info(f"metrics: {metric_text(scores)}")
    return metrics


def check_callbacks_against_the_schedule(callbacks: list[Callback], model_cfg: DictConfig) -> None:
    """Lightning callbacks that change, once fit starts, what sft built the optimizer and its
    schedule from: a run with them trained otherwise than it said (a trial found each)."""
    scheduled = model_cfg.get("scheduler") is not None
    for callback in callbacks:
        name = type(callback).__name__
        if isinstance(callback, LearningRateFinder):
            # was: its rate set on the model's hparams (and so the checkpoint) and trained with
            # at no step: the schedule's base rates stayed; without attr_name a traceback
            raise SFTError(
                f"callbacks: Lightning's {name} sets a rate after sft built each parameter "
                "group's rate and schedule from model.lr_head / model.lr_backbone, so the run "
                "would not train with it: search the rate with a sweep instead (-m "
                "model.lr_head=1e-4,3e-4,1e-3, or hparams_search=...)"
            )
        if isinstance(callback, BackboneFinetuning) and scheduled:
            # was: a ValueError traceback at the first step after the backbone thawed
            raise SFTError(
                f"callbacks: Lightning's {name} adds a parameter group to the optimizer, which "
                "the schedule (model.scheduler) has no rate for: use sft's "
                "callbacks=[default,backbone_unfreeze], or model.scheduler=null"
            )
        if isinstance(callback, BaseFinetuning) and scheduled:
            # a user's: one that adds parameter groups meets the same schedule
            rank_zero_warning(
                log,
                f"callbacks: {name} (a BaseFinetuning) may add parameter groups, which the "
                "schedule (model.scheduler) has no rate for: the step after would fail; sft's "
                "callbacks.backbone_unfreeze, or model.scheduler=null, do not",
            )
        if isinstance(callback, BatchSizeFinder | GradientAccumulationScheduler) and scheduled:
            # the schedule ran out and restarted mid-run (BatchSizeFinder), or ended early
            rank_zero_warning(
                log,
                f"callbacks: Lightning's {name} changes the number of optimizer steps after the "
                "schedule (model.scheduler) was sized for the run's steps at data.batch_size and "
                "trainer.accumulate_grad_batches: it will not end where the run does; set those "
                "to the values wanted, without the callback, or model.scheduler=null",
            )


def _rich_progress_bar(cfg: DictConfig) -> bool:
    """Whether the run's callbacks hold Rich's progress bar (on stdout; Lightning's own, TQDM,
    draws on stderr)."""
    entries = (cfg.get("callbacks") or {}).values()
    targets = [str(e.get("_target_", "")) for e in entries if isinstance(e, Mapping)]
    return any("RichProgressBar" in target for target in targets)


def warn_if_diverged_unchecked(trainer: L.Trainer) -> None:
    """A fit without the non-finite loss check (callbacks=none, or a list without it) whose
    training loss ended NaN or infinite completed without a word (its record's loss null)."""
    if any(isinstance(c, StopOnNonFiniteLoss) for c in trainer.callbacks):
        return
    loss = trainer.callback_metrics.get(
        "train/loss_epoch", trainer.callback_metrics.get("train/loss")
    )
    if loss is not None and not math.isfinite(float(loss)) and trainer.is_global_zero:
        log.warning(
            f"train/loss is {float(loss)}: the run diverged (a lower learning rate?), and nothing "
            "stopped it: callbacks.nonfinite_loss (in callbacks=default), left out of this run, "
            "stops a run at its first non-finite loss"
        )


def warn_if_never_validated(trainer: L.Trainer, metric: str | None) -> None:
    """A fit that ended before its first validation (check_val_every_n_epoch past max_epochs,
    max_steps before val_check_interval, max_steps=0) completed without a word, with no
    validation metric to return and no checkpoint ranked; a multirun's summary said so."""
    if not trainer.is_global_zero or trainer.fast_dev_run or not trainer.limit_val_batches:
        return
    if any(key.startswith("val/") for key in trainer.callback_metrics):
        return
    steps = trainer.global_step
    trained = f"trained {steps} step{'s' if steps != 1 else ''}" if steps else "trained no step"
    missing = metric if metric and metric.startswith("val/") else "validation metric"
    log.warning(
        f"No validation ran: the run {trained} and ended before its first one (see "
        "trainer.max_steps, max_epochs, max_time, check_val_every_n_epoch, val_check_interval), "
        f"so it has no {missing} and ranks no checkpoint"
    )


# the Hydra settings of a multirun that are not its jobs' own (a rank of a job runs as a single
# run in the job's directory)
SWEEP_SETTINGS = (
    "hydra.sweep",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.mode",
    "hydra.run",
    "hydra.job.name",
    "hydra.job.num",
    "hydra.output_subdir",
)


@contextlib.contextmanager
def multirun_job_ranks(
    run_dir: str, start: ResumePoint | None, overrides: list[str]
) -> Iterator[None]:
    """Around a multirun job's fit and test: the ranks Lightning's subprocess DDP launcher
    starts run this job (was: the whole sweep again), a continued job from its last.ckpt
    (`overrides`: the resume command's); after it, its process group ends with its ranks."""
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        yield
        return
    hydra_cfg = HydraConfig.get()
    if start and start.continues_run:
        job = [*overrides, f"resume={run_dir}"]
    else:
        job = [*config_dir_arguments(), *task_overrides()]
    # the job's own Hydra settings (logging, verbosity), not the sweep's; its number, which a
    # search's pruning callback reads (${hydra:job.num})
    own = [
        o
        for o in as_written(hydra_cfg.overrides.hydra)
        if not override_key(o).startswith(SWEEP_SETTINGS)
    ]
    job += [*own, f"hydra.job.num={hydra_cfg.job.num}"]
    with ranks_join(run_dir, job):
        try:
            yield
        finally:
            end_process_group()


def check_model_class(target: str) -> None:
    """SFTError unless the model's `_target_` (importable: checked) is SFTClassifier or a
    subclass taking its arguments (README): the run passes `adapter` besides the config's, and
    a subclass that names its own without `**kwargs` failed in Hydra's lines on that key."""
    cls = get_object(target)
    if not (isinstance(cls, type) and issubclass(cls, SFTClassifier)):
        raise SFTError(
            f"model._target_={target}: expected sft.models.SFTClassifier or a subclass of it"
        )
    parameters = inspect.signature(cls.__init__).parameters
    if "adapter" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    raise SFTError(
        f"model._target_={target}: {cls.__name__}.__init__ does not take SFTClassifier's "
        "arguments (adapter, lr_backbone, ...): take them as **kwargs and pass them on, "
        "super().__init__(**kwargs)"
    )


def check_same_modality(start: ResumePoint, model: SFTClassifier) -> None:
    """SFTError for a checkpoint of an image model given to a text run, or the reverse: said
    as such (was: another number of classes, or that its epochs left nothing to train)."""
    saved = start.checkpoint.get("hyper_parameters")
    backbone = saved.get("backbone") if isinstance(saved, dict) else None
    # a foreign checkpoint's: check_resume_checkpoint names what is wrong with it
    kind = resolve_input_spec(backbone).modality if isinstance(backbone, dict) else None
    wanted = model.input_spec.modality
    if kind and wanted and kind != wanted:
        model_of = {"image": "an image model", "text": "a text model"}
        raise SFTError(
            f"checkpoint {start.path} is of {model_of[kind]}, and this run trains "
            f"{model_of[wanted]}: give a checkpoint of {model_of[wanted]}"
        )


def check_modalities(data_cfg: DictConfig, backbone_cfg: DictConfig | None) -> None:
    """SFTError for a registered backbone paired with data of the other modality, read from
    their configs, before either's settings are checked (was, for `experiment=sst2_minilm
    data=image_folder`: the experiment's text settings named as keys the image data lacks).
    Classes and names the configs do not resolve to are left to the checks after."""
    try:
        data_class = pydoc.locate(str(data_cfg.get("_target_")))
    except pydoc.ErrorDuringImport:  # its module fails to import: said where it is built
        return
    gives = getattr(data_class, "modality", None)
    name = (backbone_cfg or {}).get("name")
    builds = str((backbone_cfg or {}).get("_target_")) == "sft.models.backbones.create_backbone"
    if gives is None or not builds or not isinstance(name, str):
        return
    try:
        takes = backbone_modality(name)
    except SFTError:  # an unknown backbone: said where it is built
        return
    if takes != gives:
        raise SFTError(modality_mismatch(takes, data_class.__name__, gives))


def keep_trained_inputs(data_cfg: DictConfig, checkpoint: dict[str, Any], path: Path) -> None:
    """A continued run keeps the pixel statistics and image size its checkpoint was trained
    with where the data config leaves them to the backbone (a run from before the backbone
    chose them may have used others: 32 px for any image folder)."""
    trained = checkpoint.get("datamodule_hyper_parameters", {})
    for key in ("mean", "std", "image_size"):
        if key in data_cfg and data_cfg[key] is None and trained.get(key) is not None:
            value = trained[key]
            # numbers only: what goes into the config is built with it (a setting edited into
            # a dict with a _target_ would be built)
            kept = list(value) if isinstance(value, list | tuple) else [value]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in kept):
                raise SFTError(
                    f"checkpoint {path}: data.{key}={value!r:.60} is not what sft saves there "
                    "(numbers): this checkpoint cannot be continued"
                )
            with open_dict(data_cfg):
                data_cfg[key] = kept if isinstance(value, list | tuple) else value


def train_job(cfg: DictConfig, recorder: RunRecorder) -> float | None:
    """`sft-train`'s job (run by sft.train.main, with the job's `job_recorder`): train and
    write result.json; the monitored metric. A failing multirun job is recorded and returns
    None, so the sweep goes on (the sweep summary reports it); a single run fails as usual."""
    hydra_cfg = HydraConfig.get()
    name = cfg.get("optimized_metric")
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    chosen_metric = any(override_key(o) == "optimized_metric" for o in task_overrides())

    def run() -> dict[str, Any] | RunResult:
        if multirun and (finished := finished_job(Path(hydra_cfg.runtime.output_dir))):
            return finished  # its record stands as it is
        metrics = train(cfg, recorder)
        if multirun and not is_grid(hydra_cfg):
            recorder.check_logged(metrics)  # the search gets no value without it
        elif chosen_metric and (unlogged := recorder.unlogged_metric(metrics)):
            # a typo on the command line (was: silent); the configs' default is not warned
            # about in runs without validation
            log.warning(f"{unlogged}: a sweep of this run would have nothing to rank it by")
        # result.json records a continued run's earlier metrics too (a finished job run again
        # logs nothing new, and returned None to its sweeper: a failed Optuna trial)
        return metrics

    try:
        metrics = run_recorded(run, recorder)
    finally:  # however it ends (a failed job of a sweep goes on, sft.api holds its error)
        try:
            end_loader_workers()
        finally:
            give_back_freed_memory()
    if metrics is None:  # a failed sweep job: the sweep goes on
        return None
    return metrics.get(name) if name else None
