"""Entry points end to end: sft-train / sft-eval on CIFAR-10 slices, on CPU."""

import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    CONF_DIR,
    EXPERIMENTS,
    FAST,
    TINY_BERT,
    compose_config,
    logs_warning,
    run_entry_point,
    run_module,
)
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from sft.errors import SFTError
from sft.jobs.eval import evaluate
from sft.jobs.train import train
from sft.models import SFTClassifier
from sft.runs.sweep_summary import read_results


def test_experiment_glob_composes_every_experiment(tmp_path):
    """`experiment=glob(*,exclude=_*)`, a sweep over every experiment (not the `_*` bases they
    build on), composes each one."""
    override = OverridesParser.create().parse_overrides(["experiment=glob(*,exclude=_*)"])[0]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options("experiment")
    names = list(override.value().filter(options))
    assert names == EXPERIMENTS
    for name in names:
        cfg = compose_config("train", [f"experiment={name}"], tmp_path)
        assert cfg.name == name and cfg.model.num_classes >= 2


@pytest.mark.slow
def test_fast_dev_run_image_experiments_in_one_multirun(tmp_path, data_dir):
    """Each image experiment, with and without LoRA adapters, runs one batch of fit (and test
    where the experiment tests) with its real backbone."""
    image_experiments = [e for e in EXPERIMENTS if "cifar10" in e]
    result = run_module(
        "sft.train",
        "-m",
        "experiment=glob(*cifar10*,exclude=_*)",
        "adapter=none,lora",
        "debug=fdr",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ran = set()
    for job, outcome in read_results(tmp_path):
        assert outcome.status == "completed", (job, outcome.error)
        overrides = dict(o.split("=", 1) for o in outcome.overrides)
        ran.add((overrides["experiment"], overrides["adapter"]))
    assert ran == {(e, a) for e in image_experiments for a in ("none", "lora")}


@pytest.mark.parametrize("adapter", ["none", "lora"])
@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if "sst" in e])
def test_fast_dev_run_text_experiments_with_a_tiny_bert(experiment, adapter, tmp_path, data_dir):
    """Every text experiment, with and without LoRA adapters, its encoder swapped for a 2-layer
    BERT built from the packaged MiniLM config (and tokenizer), runs one batch of fit (+ test
    where labelled)."""
    overrides = [
        f"experiment={experiment}",
        f"adapter={adapter}",
        "debug=fdr",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.enable_progress_bar=false",
        "model.backbone.model_name_or_path=minilm",
        "model.backbone.pretrained=false",
        f"model.backbone.config_overrides={TINY_BERT}",
        "data.batch_size=8",
        "data.eval_batch_size=8",
    ]
    metrics = train(compose_config("train", overrides, tmp_path))
    assert "val/acc" in metrics and 0.0 <= metrics["val/acc"] <= 1.0


def test_test_false_reads_no_test_split(tmp_path, caplog):
    """`test=false` on a Hugging Face dataset without a `test` split (data.test_split's
    default): fitting read the test split anyway and stopped at "has no split 'test'"."""
    import datasets

    rows = {"sentence": ["good", "bad", "fine", "awful"], "label": [1, 0, 1, 0]}
    splits = {name: datasets.Dataset.from_dict(rows) for name in ("train", "validation")}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "ds")
    overrides = [
        "data=hf_dataset",
        f"data.dataset_name={tmp_path / 'ds'}",
        "test=false",
        "debug=fdr",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "model=minilm_fused",
        "model.backbone.pretrained=false",
        f"model.backbone.config_overrides={TINY_BERT}",
        "model.linear_probe=null",
        "data.batch_size=2",
    ]
    with caplog.at_level(logging.INFO, logger="sft.data"):
        metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert "val/acc" in metrics and "test/acc" not in metrics
    # the splits read: no test split
    assert any(m.endswith("; train 4, val 4") for m in caplog.messages), caplog.messages


def test_short_training_beats_chance(train_cfg):
    cfg = train_cfg(
        "data.samples_per_class=100",
        "trainer.max_epochs=4",
        "model.lr_head=0.05",
        "model.lr_backbone=0.05",
    )
    metrics = train(cfg)
    # 10 classes: chance is 0.10; twice chance is the bar (this run reaches 0.249 with one torch
    # thread and above 0.25 with two: the sums' order moves it)
    assert metrics["test/acc"] > 0.2, metrics
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-6


def test_seed_zero_is_honoured(train_cfg, tmp_path):
    first = train(train_cfg("seed=0", "trainer.max_epochs=1", run_dir=tmp_path / "a"))
    second = train(train_cfg("seed=0", "trainer.max_epochs=1", run_dir=tmp_path / "b"))
    assert first["test/acc"] == second["test/acc"]
    assert first["train/loss_epoch"] == second["train/loss_epoch"]


def test_a_run_without_a_logger_trains_without_the_learning_rate_monitor(
    train_cfg, tmp_path, caplog
):
    """~logger (what the error for logger=null offers): Lightning refused the default
    callbacks' LearningRateMonitor, "Cannot use LearningRateMonitor callback with Trainer that
    has no logger"; now the run goes on without it, and says so."""
    with caplog.at_level(logging.INFO, logger="sft"):
        metrics = train(train_cfg("~logger", "trainer.max_epochs=1", run_dir=tmp_path / "run"))
    assert "test/acc" in metrics and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "the learning-rate monitor (callbacks.lr_monitor) is left out" in caplog.text
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.parametrize(("trainer", "epochs"), [("cpu", 1), ("ddp_sim", 2)])
def test_an_epoch_cut_short_by_max_steps_is_not_recorded_as_completed(tmp_path, trainer, epochs):
    """result.json's epochs are those completed: 8 steps of 6 per epoch were recorded as 2
    (Lightning counts the epoch max_steps ends as completed), in sweep summaries and
    sft-compare too; under ddp_sim (3 steps per epoch in each rank) as 3, the main process not
    knowing an epoch's batches."""
    import json

    import sft.train

    run = tmp_path / "run"
    argv = ["sft-train", *FAST, f"trainer={trainer}", "+trainer.max_steps=8", "test=false"]
    assert run_entry_point(sft.train.main, [*argv, f"hydra.run.dir={run}"]) == 0
    record = json.loads((run / "result.json").read_text())
    assert (record["steps"], record["epochs"]) == (8, epochs)


@pytest.mark.parametrize("steps", [3, 5])
def test_a_study_validates_its_final_weights_when_an_epoch_ends_between_accumulations(
    steps, tmp_path
):
    """Under accumulate_grad_batches=2 an epoch of 5 batches steps at its 5th, so a study's
    last step came before the `steps` x 2 batches of its val_check_interval (step 3 at batch 5,
    step 5 at batch 9): it ended with no validation ("No validation ran", no val/acc in its
    record). Now it validates once, after its last step."""
    import json

    import sft.train

    run = tmp_path / "run"
    study = ["experiment=study_cifar10_label_efficiency", *FAST, "data.batch_size=40", "test=false"]
    accumulating = [f"trainer.max_steps={steps}", "+trainer.accumulate_grad_batches=2"]
    argv = ["sft-train", *study, *accumulating, f"hydra.run.dir={run}"]
    assert run_entry_point(sft.train.main, argv) == 0
    record = json.loads((run / "result.json").read_text())
    assert record["steps"] == steps and record["metrics"]["val/acc"] is not None
    validations = re.findall(
        r"validation at epoch \d+, step (\d+)", (run / "train.log").read_text()
    )
    assert validations == [str(steps)]


def test_resume_from_last_checkpoint_continues_at_the_right_epoch(train_cfg, tmp_path, caplog):
    train(train_cfg("trainer.max_epochs=2", "test=false", run_dir=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1
    steps_per_epoch = state["global_step"] // 2

    resumed = train_cfg(
        "trainer.max_epochs=3", f"ckpt_path={last}", "test=false", run_dir=tmp_path / "second"
    )
    train(resumed)
    state = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 2
    assert state["global_step"] == 3 * steps_per_epoch
    assert "were not held out by the checkpoint's run" not in caplog.text

    # CIFAR-10's validation carved otherwise than the checkpoint's run did: a warning (was:
    # none, and it validated on images the checkpoint's run trained on)
    carved = ("data.val_size=2000", "data.split_seed=1", "trainer.max_epochs=3", "test=false")
    with logs_warning(caplog, r"^1\d\d\d of the 2000 validation images were not held out by the "):
        train(train_cfg(*carved, f"ckpt_path={last}", run_dir=tmp_path / "third"))


def test_a_users_model_subclass_is_rebuilt_from_its_checkpoint(train_cfg, tmp_path):
    """`model._target_=<a subclass of SFTClassifier>` with an init argument of its own: its
    checkpoints held Hydra's DictConfig (unreadable weights-only: "the file is corrupt"), and
    sft-eval/-predict/-export rebuilt a plain SFTClassifier without a word (its forward lost)."""
    from helpers.user_models import ScaledLogits

    from sft.models import load_classifier

    run = train_cfg(
        "model._target_=helpers.user_models.ScaledLogits",
        "+model.scale=-1.0",
        "+trainer.max_steps=2",
        "test=false",
        run_dir=tmp_path / "run",
    )
    train(run)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # was: UnpicklingError (DictConfig)
    assert state["model_target"] == "helpers.user_models.ScaledLogits"
    model = load_classifier(last)
    assert type(model) is ScaledLogits and model.scale == -1.0
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        plain = SFTClassifier.forward(model, images)
        assert torch.equal(model(images), -plain)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        # was: Hydra's lines, "got an unexpected keyword argument 'adapter'" (a key the user
        # never wrote)
        (
            "helpers.user_models.OwnArgumentsOnly",
            r"^model\._target_=helpers\.user_models\.OwnArgumentsOnly: OwnArgumentsOnly\.__init__ "
            r"does not take SFTClassifier's arguments \(adapter, lr_backbone, \.\.\.\): take them "
            r"as \*\*kwargs and pass them on, super\(\)\.__init__\(\*\*kwargs\)$",
        ),
        # another module: was an AttributeError on its missing input_spec
        (
            "helpers.user_models.NotAClassifier",
            r"^model\._target_=helpers\.user_models\.NotAClassifier: expected sft\.models\.SFTClassifier "
            r"or a subclass of it$",
        ),
    ],
    ids=["no_kwargs", "not_a_classifier"],
)
def test_a_model_class_that_cannot_take_the_runs_arguments_is_named(
    target, message, train_cfg, tmp_path
):
    cfg = train_cfg(run_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.model = {"_target_": target, "backbone": cfg.model.backbone, "num_classes": 10}
    with pytest.raises(SFTError, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "config_resolved.yaml").exists()


def test_a_run_that_diverged_without_the_non_finite_check_says_so(train_cfg, tmp_path, caplog):
    """callbacks=none (no non-finite loss check): a run whose loss went NaN completed without a
    word, its record's losses null."""
    overrides = ["callbacks=none", "model.lr_head=1e12", "model.lr_backbone=1e12"]
    with logs_warning(caplog, r"^train/loss is nan: the run diverged"):
        train(train_cfg(*overrides, "trainer.max_epochs=1", "test=false"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # SGD without momentum from the packaged config (nesterov: true)
        (
            ["model.optimizer.momentum=0"],
            "model.optimizer (SGD): Nesterov momentum requires a momentum and zero dampening",
        ),
        (
            ["~model.optimizer", "+model.optimizer={_target_:torch.optim.Adam,betas:[1.5,0.9]}"],
            "model.optimizer (Adam): Invalid beta parameter at index 0: 1.5",
        ),
        # Lightning's "no epoch limit" (was: OverflowError: cannot convert float infinity)
        (
            ["trainer.max_epochs=-1", "+trainer.max_time=00:00:00:05"],
            "model.scheduler (get_cosine_schedule_with_warmup) follows the run's length in "
            "steps, and trainer.max_epochs=-1 trainer.max_steps=-1 set none: set "
            "trainer.max_steps (or trainer.max_epochs), or model.scheduler=null",
        ),
    ],
    ids=["nesterov_without_momentum", "beta_above_1", "no_length_for_the_schedule"],
)
def test_optimizer_and_schedule_settings_they_refuse_are_one_line(
    overrides, message, train_cfg, tmp_path
):
    with pytest.raises(SFTError) as err:
        train(train_cfg(*overrides, run_dir=tmp_path / "run"))
    assert str(err.value) == message


@pytest.mark.slow
def test_eval_reproduces_training_test_accuracy(train_cfg, tmp_path):
    metrics = train(train_cfg("trainer.max_epochs=2", run_dir=tmp_path / "train"))
    best = next((tmp_path / "train" / "checkpoints").glob("epoch_*.ckpt"))
    cfg = compose_config(
        "eval",
        [f"ckpt_path={best}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"],
        tmp_path / "eval",
    )
    evaluated = evaluate(cfg)
    assert abs(evaluated["test/acc"] - metrics["test/acc"]) <= 1e-4

    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open()))
    assert len(rows) == 10_000
    assert {"index", "label", "pred", "prob_cat"} <= set(rows[0])
    accuracy = sum(r["label"] == r["pred"] for r in rows) / len(rows)
    assert abs(accuracy - evaluated["test/acc"]) <= 1e-4
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000


def test_a_run_under_weight_averaging_tests_the_averaged_weights_its_checkpoint_holds(tmp_path):
    """Lightning's EMAWeightAveraging saves the average as the checkpoint's weights, which its
    validation ranked; loading it for the run's test, the callback put the live weights back:
    result.json's test/* were another model's than sft-eval's of the same file."""
    ema = [
        "+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging",
        "+callbacks.ema.decay=0.9",
    ]
    run = [*FAST, *ema, "trainer.max_epochs=3", "+trainer.limit_test_batches=2"]
    metrics = train(compose_config("train", run, tmp_path / "t"))
    best = next((tmp_path / "t" / "checkpoints").glob("epoch_*.ckpt"))
    scoring = [f"ckpt_path={best}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    cfg = compose_config("eval", [*scoring, "+trainer.limit_test_batches=2"], tmp_path / "e")
    evaluated = evaluate(cfg)
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)


def test_eval_scores_a_full_precision_checkpoint_in_its_precision(tmp_path, caplog):
    """A ResNet-18 trained at trainer.precision=32-true, scored by sft-eval's default auto: in
    bf16-mixed on a CPU with bf16 units, the family's pick (test/acc 0.449 for the run's own
    0.453), whatever training used."""
    run = [*FAST[2:], "trainer.max_epochs=1", "data.val_size=64", "+trainer.limit_test_batches=2"]
    run += ["+trainer.limit_train_batches=2", "data.eval_batch_size=32"]
    metrics = train(compose_config("train", [*run, "trainer.precision=32-true"], tmp_path / "t"))
    best = next((tmp_path / "t" / "checkpoints").glob("epoch_*.ckpt"))
    scoring = [f"ckpt_path={best}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    cfg = compose_config("eval", [*scoring, "+trainer.limit_test_batches=2"], tmp_path / "e")
    with caplog.at_level(logging.INFO):
        evaluated = evaluate(cfg)
    assert "trainer.precision=auto -> 32-true (the precision the checkpoint trained at)" in (
        caplog.text
    )
    assert evaluated["test/acc"] == metrics["test/acc"]
    assert evaluated["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)


@pytest.mark.parametrize(
    ("trained", "bf16_units", "chosen"),
    [
        ("bf16-mixed", True, "bf16-mixed"),
        ("bf16-true", True, "bf16-true"),
        ("bf16-mixed", False, "auto"),  # emulated here: auto's own pick
        ("16-mixed", True, "auto"),  # fp16 on a CPU
        ("32-true", False, "32-true"),
        ("64-true", True, "64-true"),
        (None, True, "auto"),  # a checkpoint that does not say
    ],
)
def test_eval_at_auto_precision_scores_in_the_checkpoints_precision(
    monkeypatch, trained, bf16_units, chosen
):
    """sft-eval's auto followed only 32-true and 64-true checkpoints: a bf16-mixed run of a
    family that auto scores in fp32 (or the reverse) scored otherwise than its own test."""
    from omegaconf import OmegaConf

    from sft.jobs import eval as eval_job
    from sft.utils import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: bf16_units)
    trainer_cfg = OmegaConf.create({"precision": "auto", "accelerator": "cpu"})
    eval_job.follow_trained_precision(
        trainer_cfg, {"trained_precision": trained} if trained else {}
    )
    assert trainer_cfg.precision == chosen


def test_the_validation_loss_adds_up_in_fp32_under_bf16_true(train_cfg, tmp_path):
    """trainer.precision=bf16-true cast the loss metrics' states to bf16 (Lightning's
    .to(dtype), which torchmetrics lets through), and the loss of bf16 logits was bf16: val/loss
    came out rounded (2.078 at every validation of a trial's run; 16-true's sum was inf)."""
    record = tmp_path / "loss.json"
    probe = [
        "+callbacks.check._target_=helpers.probes.CheckValidationLoss",
        f"+callbacks.check.path={record}",
    ]
    train(train_cfg("trainer.precision=bf16-true", "trainer.max_epochs=1", "test=false", *probe))
    checked = json.loads(record.read_text())
    assert checked["dtypes"] == ["torch.float32"]
    assert checked["metric"] == pytest.approx(checked["recomputed"], rel=1e-5)


@pytest.mark.slow
def test_ddp_sim_runs_two_processes(train_cfg, tmp_path):
    """The ranks train in spawned processes: the run's record counts their epochs and the test
    logs after their last step (was: 0 epochs in result.json, test/acc at step 0; with validation
    within the epoch, last.ckpt is saved before the last epoch and step are counted: one epoch
    short in result.json, or the test logged at the last validation's step). One run that
    validates twice an epoch checks both."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sft.runs.result import RunRecorder

    cfg = train_cfg(
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        "+trainer.val_check_interval=0.5",
        "trainer.enable_progress_bar=false",
        "data.val_size=101",  # ranks of 51 and 50 examples
        "+callbacks.ranks._target_=helpers.probes.RecordRankMetric",
        f"+callbacks.ranks.folder={tmp_path}",
        "+callbacks.ranks.name=train/loss_epoch",
    )
    recorder = RunRecorder(cfg.paths.output_dir, [], None)
    metrics = train(cfg, recorder)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert recorder.result.epochs == 2
    # the ranks' mean, the same on each (was: each rank's own batches; rank 0's logged)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == pytest.approx(rank1, rel=1e-6)
    # the validation loss of the 101 examples, as one process gives it (was: 101/100 of it:
    # Lightning's mean over ranks counted 101 examples as 2 x 50)
    import lightning as L
    from hydra.utils import instantiate

    from sft.models.loading import load_classifier

    model = load_classifier(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    datamodule = instantiate(cfg.data)
    datamodule.configure_input(model.input_spec)
    one = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (alone,) = one.validate(model, datamodule=datamodule, verbose=False)
    assert metrics["val/loss"] == pytest.approx(alone["val/loss"], rel=1e-5)
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"))
    events.Reload()
    (test_step,) = [e.step for e in events.Scalars("test/acc")]
    assert test_step == max(e.step for e in events.Scalars("val/acc")) + 1 > 1


def _log_in_a_spawned_rank(callback: object) -> None:
    logging.getLogger("sft.data.text").warning("a line of the spawned rank")


def test_a_spawned_rank_logs_to_the_run_log(tmp_path):
    """ddp_spawn's ranks (trainer=ddp_sim) start with Python's default logging: their lines (the
    data's, the linear probe's, warnings) reached the console unformatted and train.log not at
    all. The Trainer's callbacks are unpickled there first: the run's logging is set up again."""
    import multiprocessing

    from sft.callbacks.spawned_rank_logging import SpawnedRankLogging

    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "train.log")
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    before = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        callback = SpawnedRankLogging()
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
        handler.close()
    rank = multiprocessing.get_context("spawn").Process(
        target=_log_in_a_spawned_rank, args=(callback,)
    )
    rank.start()
    rank.join(timeout=300)
    assert rank.exitcode == 0
    log = (tmp_path / "train.log").read_text()
    assert log == "[sft.data.text][WARNING] - a line of the spawned rank\n"


def test_a_rank_destroys_its_process_group_before_the_interpreter_is_finalised(tmp_path):
    """A gloo process group left to interpreter finalisation aborts its process now and then
    (SIGABRT, "terminate called without an active exception": rank 1 of a trainer=ddp_sim run in
    CI; 5 of 30 two-rank spawns on this machine). The model's setup in a rank of a process group
    has it destroyed at exit, before finalisation; the probe registered first runs last."""
    script = f"""
import atexit
import torch.distributed as dist
atexit.register(lambda: print("initialized at exit:", dist.is_initialized()))
dist.init_process_group("gloo", init_method="file://{tmp_path / "store"}", rank=0, world_size=1)
from sft.models import SFTClassifier
backbone = {{"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn", "width": 8}}
model = SFTClassifier(backbone=backbone, num_classes=3, head={{"_target_": "sft.models.heads.FusedHead"}})
model.setup("fit")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "initialized at exit: False"


def test_bad_data_dir_is_one_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_module(
        "sft.train", f"paths.data_dir={missing}", "data.download=false", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_eval_modes_the_model_sets_raise_no_lightning_warning(train_cfg, recwarn):
    """Frozen norm statistics keep batch norms in eval mode by design: Lightning's "Found N
    module(s) in eval mode at the start of training" warning was printed on every such run."""
    train(train_cfg("model.freeze_norm_stats=true", "+trainer.max_steps=2", "test=false"))
    assert not [w for w in recwarn if "in eval mode at the start" in str(w.message)]


def test_a_linear_probe_run_warns_of_no_warm_up(train_cfg, caplog):
    """method=linear_probe (its one step at rate 0 lets validation score the fitted head):
    warned that the model's warm-up was the whole run."""
    with caplog.at_level(logging.WARNING):
        train(train_cfg("method=linear_probe", "model.linear_probe={max_iter:20}", "test=false"))
    assert "warm-up" not in caplog.text
