"""Paths a new user takes that used to fail: each test failed on the code before its fix."""

import contextlib
import copy
import csv
import inspect
import json
import logging
import math
import re
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import torch
from conftest import (
    FAST,
    compose_config,
    logged_warnings,
    logs_warning,
    run_entry_point,
    run_module,
)
from hydra.utils import instantiate
from inference_checkpoints import TINY_BERT, image_checkpoint, text_checkpoint
from lightning.pytorch import Trainer
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from sft import eval as eval_module
from sft import train as train_module
from sft.data.text import TextClassificationDataModule
from sft.errors import SFTError, find_user_error
from sft.jobs.eval import evaluate
from sft.jobs.train import train
from sft.models.classifier import SFTClassifier
from sft.models.loading import check_class_names
from sft.runs.resume import follow_moved_run, readable_checkpoint
from sft.utils.config_types import check_config_types
from sft.utils.overrides import (
    accept_checkpoint_data_settings,
    accept_trainer_arguments,
    trainer_arguments,
)

TINY_TEXT = [
    "experiment=sst2_minilm",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "model.backbone.pretrained=false",
    f"model.backbone.config_overrides={TINY_BERT}",
    "model.linear_probe=null",
    "data.samples_per_class=8",
    "data.batch_size=8",
    "data.eval_batch_size=64",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("user_paths")
    return {"image": image_checkpoint(root), "text": text_checkpoint(root)}


def text_eval_config(checkpoints: dict, tmp_path: Path, val_batches: int) -> Any:
    """sft-eval's config for the text checkpoint, scoring `val_batches` of validation."""
    return compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['text']}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            f"+trainer.limit_val_batches={val_batches}",
        ],
        tmp_path,
    )


def test_eval_a_text_checkpoint_on_named_data(checkpoints, tmp_path):
    """`sft-eval ckpt_path=<text checkpoint> data=sst2`: `data.tokenizer` interpolates
    `model.backbone...`, which sft-eval's config has no node for; it comes from the checkpoint
    (was: InterpolationKeyError)."""
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['text']}",
            "data=sst2",
            "data.eval_batch_size=128",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_predict_batches=1",
        ],
        tmp_path,
    )
    metrics = evaluate(cfg)
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert b"\r" not in (tmp_path / "predictions.csv").read_bytes()  # LF (was: CRLF)


def test_eval_caches_tokens_where_this_machine_does(checkpoints, tmp_path, monkeypatch):
    """sft-eval of a text checkpoint caches the scored split's token ids under this run's
    $SFT_CACHE_DIR, not the training run's folder (was: written there, another user's or a
    folder that is gone; the cache found there was read)."""
    trained = torch.load(checkpoints["text"], map_location="cpu", weights_only=False)
    trained_cache = Path(trained["datamodule_hyper_parameters"]["cache_dir"])
    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path / "cache_here"))
    evaluate(text_eval_config(checkpoints, tmp_path / "run", val_batches=1))
    assert [p.suffix for p in (tmp_path / "cache_here" / "tokens").iterdir()] == [".pt"]
    assert trained_cache != tmp_path / "cache_here" / "tokens"


IMAGE_FOLDER = "sft.data.image_folder.ImageFolderDataModule"


def test_only_settings_a_datamodule_calls_the_machines_are_left_to_this_one():
    """sft's text data forgets the training machine's token cache folder; another datamodule's
    `cache_dir` (a user's, which may require it, or mean a dataset's folder) is its own."""
    from sft.models.loading import trained_data_config

    def rebuilt(target: str) -> dict:
        checkpoint = {
            "hyper_parameters": {},
            "datamodule_target": target,
            "datamodule_hyper_parameters": {
                "cache_dir": "/elsewhere",
                "num_workers": 32,
                "batch_size": 8,
            },
        }
        return trained_data_config("run.ckpt", checkpoint)

    text = "sft.data.text.TextClassificationDataModule"
    assert rebuilt(text) == {"_target_": text, "batch_size": 8}
    # nor does it start the training machine's DataLoader workers (was: 32 on a laptop)
    assert "num_workers" not in rebuilt(IMAGE_FOLDER)
    assert rebuilt("sft.data.cifar10.CIFAR10DataModule")["cache_dir"] == "/elsewhere"


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_eval_under_ddp_is_refused(checkpoints, tmp_path, strategy):
    """sft-eval with two DDP processes: predictions.csv held one rank's rows under the first
    ids (ddp), or the run ended in a TypeError after scoring (ddp_spawn)."""
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['text']}",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"+trainer.strategy={strategy}",
        ],
        tmp_path,
    )
    with pytest.raises(SFTError) as info:
        evaluate(cfg)
    assert str(info.value) == (
        "sft-eval scores in one process, and trainer.devices=2 trainer.num_nodes=1 start 2 "
        "(DDP), each of which would predict a share of the split: set trainer.devices=1 "
        "trainer.num_nodes=1 (scoring is one pass over the split)"
    )
    assert not (tmp_path / "predictions.csv").exists()


def test_eval_on_data_naming_the_classes_in_another_order_is_an_error(checkpoints, tmp_path):
    """The model scores by position: `data.label_names` in another order than the checkpoint's
    gave wrong accuracy and relabelled predictions, silently (was: exit 0)."""
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['text']}",
            "data=sst2",
            "data.label_names=[positive,negative]",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
    )
    with pytest.raises(SFTError, match=r"^the data's classes are \['positive', 'negative'\] but "):
        evaluate(cfg)
    assert not (tmp_path / "predictions.csv").exists()


def test_training_on_from_a_checkpoint_whose_classes_are_in_another_order_is_an_error(
    checkpoints, tmp_path, caplog
):
    """`ckpt_path=` (or `resume=`) with `data.label_names` in another order than the
    checkpoint's: training went on with the classes swapped, without a word (was: exit 0), as
    sft-eval refuses. Nothing is written for the refused run; other names are a warning."""
    # an epoch more than the checkpoint's one: it trains on
    overrides = [*TINY_TEXT, f"ckpt_path={checkpoints['text']}", "test=false"]
    overrides += ["trainer.max_epochs=2", "+trainer.limit_train_batches=2"]
    swapped = compose_config(
        "train", [*overrides, "data.label_names=[positive,negative]"], tmp_path
    )
    with pytest.raises(SFTError, match=r"^the data's classes are \['positive', 'negative'\] but "):
        train(swapped)
    assert not (tmp_path / "config_resolved.yaml").exists()
    renamed = compose_config("train", [*overrides, "data.label_names=[bad,good]"], tmp_path / "b")
    with logs_warning(caplog, r"^the data's classes \['bad', 'good'\] are not the ones "):
        train(renamed)


def test_numbered_class_names_in_another_order_than_integer_labels_are_refused():
    """A checkpoint of integer labels (classes '0', '1') on data naming them
    `'data.label_names=["1","0"]'`: numbered names are read as names, so each class took the
    other's output, without a word (integer labels were passed over). The suggested override is
    quoted, as the command line needs."""
    with pytest.raises(SFTError) as err:
        check_class_names(["1", "0"], ["0", "1"], "run/last.ckpt")
    assert str(err.value).endswith("""order ('data.label_names=["0","1"]')""")
    check_class_names(["negative", "positive"], ["0", "1"], "run/last.ckpt")  # names nothing


def test_a_class_name_at_another_position_than_the_models_is_refused():
    """A model of [neg, neu, pos] scored on data of [neg, pos, mixed] only warned, and `pos`
    took the model's `neu` output: accuracy 0.33, predictions named `mixed` for positive texts.
    Names the model lacks, at positions of names the data lacks, stay a warning."""
    with pytest.raises(SFTError, match=r"'pos' is the model's output 2 and the data's class 1"):
        check_class_names(["neg", "pos", "mixed"], ["neg", "neu", "pos"], "run/last.ckpt")
    check_class_names(["neg", "neutral", "pos"], ["neg", "neu", "pos"], "run/last.ckpt")


def test_eval_with_a_data_setting_changed_uses_the_checkpoints_data_so_changed(
    checkpoints, data_dir, tmp_path, caplog
):
    """`sft-eval ckpt_path=... +data.test_split=dev.tsv` (what the error for `data.test_split=`
    says to write) scores the checkpoint's data with that split (was: a ConfigAttributeError
    traceback: the data config was the one key, without a `_target_`)."""
    cfg_args = [
        f"ckpt_path={checkpoints['text']}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "+trainer.limit_test_batches=1",
    ]
    cfg = compose_config("eval", [*cfg_args, "+data.test_split=dev.tsv"], tmp_path)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0  # SST-2's own test.tsv has no labels: dev's
    assert not any("was trained on" in m for m in logged_warnings(caplog))
    # the training file scored: a warning (was: none), naming it as set, not where a link to
    # it leads (was: the real path)
    cfg = compose_config("eval", [*cfg_args, "+data.test_split=train.tsv"], tmp_path / "e2")
    warning = f"the test split scored, {data_dir / 'sst2' / 'train.tsv'}, is the file the model "
    with logs_warning(caplog, "^" + re.escape(warning)):
        evaluate(cfg)


def test_eval_takes_settings_of_the_checkpoints_data_as_typed(checkpoints, tmp_path, monkeypatch):
    """`sft-eval ckpt_path=... data.data_dir=<folder> data.test_split=<file>`, without the `+`
    Hydra needs for a key of a data config it has not composed (was: an error line asking for
    it, where sft's own hints, e.g. "set data.text_column", name the keys without it)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "new.tsv").write_text("sentence\tlabel\na joy to watch\t1\ndull and long\t0\n")
    monkeypatch.chdir(tmp_path)
    argv = ["sft-eval", f"ckpt_path={checkpoints['text']}", f"data.data_dir={folder}"]
    argv += ["data.test_split=new.tsv", "trainer.accelerator=cpu"]
    argv += ["trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'eval'}"]
    assert run_entry_point(eval_module.main, argv) == 0
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open(newline="")))
    assert [r["label"] for r in rows] == ["1", "0"]  # that file, scored whole


def test_eval_of_a_new_labelled_file_reads_only_that_file(checkpoints, tmp_path):
    """`sft-eval ckpt_path=... +data.data_dir=<a folder> +data.test_split=<its file>` scores that
    file (was: the training and validation files were read first, so "text data file
    .../train.tsv is missing"); a file named to be scored without its label column is an
    error naming the columns (was: validation scored instead, exit 0)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "new.tsv").write_text("sentence\tlabel\na joy to watch\t1\ndull and long\t0\n")
    (folder / "other.tsv").write_text("sentence\tsentiment\nsuperb\t1\nawful\t0\n")

    def scored(test_file: str, out: str) -> dict:
        return evaluate(
            compose_config(
                "eval",
                [
                    f"ckpt_path={checkpoints['text']}",
                    f"+data.data_dir={folder}",
                    f"+data.test_split={test_file}",
                    "trainer.accelerator=cpu",
                    "trainer.enable_progress_bar=false",
                ],
                tmp_path / out,
            )
        )

    metrics = scored("new.tsv", "eval")
    assert 0.0 <= metrics["test/acc"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open(newline="")))
    assert [r["label"] for r in rows] == ["1", "0"]
    with pytest.raises(SFTError, match=r"other\.tsv: no column 'label'.*sentiment"):
        scored("other.tsv", "eval2")
    # data.test_split=null leaves the split out, as the messages say: validation is scored
    default = [f"ckpt_path={checkpoints['text']}", "trainer.accelerator=cpu"]
    default += ["trainer.enable_progress_bar=false", "+trainer.limit_val_batches=1"]
    cfg = compose_config("eval", [*default, "+data.test_split=null"], tmp_path / "eval3")
    assert "val/acc" in evaluate(cfg)


def test_eval_of_other_text_data_labelled_with_the_models_class_names(checkpoints, tmp_path):
    """`sft-eval ckpt_path=... data=text_files ...` on a file labelled with the model's own class
    names: refused as "not in the label set (integers >= 0)" (its data.label_names is null),
    while the checkpoint knows the names."""
    (tmp_path / "named.tsv").write_text("sentence\tlabel\na joy\tpositive\ndull\tnegative\n")
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['text']}",
            "data=text_files",
            f"data.data_dir={tmp_path}",
            "data.test_split=named.tsv",
            "data.text_column=sentence",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path / "eval",
    )
    assert 0.0 <= evaluate(cfg)["test/acc"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open(newline="")))
    assert [r["label"] for r in rows] == ["1", "0"]


def test_eval_of_a_test_folder_reads_neither_training_nor_validation_images(tmp_path, caplog):
    """`sft-eval ckpt_path=<image-folder run> +data.data_dir=<a folder with test/ only>` scores
    it (was: "image folder .../train does not exist"; with the training folder there, every
    training image was decoded first, and one that could not be failed the eval); a test
    folder named that is not there is an error (was: validation scored, with a warning)."""
    root = two_class_tree(tmp_path / "tree", per_class=6)
    run = tmp_path / "run"
    train(compose_config("train", [*folder_data(root), *SMALL_CNN, "trainer.max_epochs=1"], run))
    ckpt = run / "checkpoints" / "last.ckpt"
    new = tmp_path / "new"
    shutil.copytree(root / "train", new / "test")
    (new / "test" / "bee" / "0.png").unlink()  # 11 images
    eval_args = [
        f"ckpt_path={ckpt}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
    ]
    metrics = evaluate(
        compose_config("eval", [*eval_args, f"+data.data_dir={new}"], tmp_path / "e")
    )
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert len((tmp_path / "e" / "predictions.csv").read_text().splitlines()) == 1 + 11
    assert not any("was trained on" in m for m in logged_warnings(caplog))  # a copy elsewhere
    with pytest.raises(SFTError, match=r"^data\.test_dir=tset: no such folder to score \("):
        evaluate(compose_config("eval", [*eval_args, "+data.test_dir=tset"], tmp_path / "e2"))
    # the training folder itself scored: a warning (was: none; sft-train warns of such splits)
    warning = f"the test split scored, {root / 'train'}, is the image folder the model was "
    with logs_warning(caplog, "^" + re.escape(warning)):
        evaluate(compose_config("eval", [*eval_args, "+data.test_dir=train"], tmp_path / "e3"))


@pytest.mark.parametrize("debug", [[], ["+debug=limit"]], ids=["plain", "debug"])
def test_eval_into_a_training_runs_directory_is_refused_before_writing(
    checkpoints, tmp_path, capsys, debug
):
    """`sft-eval ... hydra.run.dir=<a training run>` replaced the run's config_resolved.yaml
    with the eval's and added its events to the run's TensorBoard (sft-compare then read them
    as the run's). Refused before Hydra writes its config and log there; with +debug=... too
    (was: checked by task_name, which the debug options set to debug)."""
    import sft.eval

    run = shutil.copytree(checkpoints["image"].parent.parent, tmp_path / "run")
    before = sorted(p for p in run.rglob("*"))
    resolved = (run / "config_resolved.yaml").read_text()
    argv = ["sft-eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run}"]
    assert run_entry_point(sft.eval.main, [*argv, *debug]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {run} holds a training run ("), last
    assert sorted(p for p in run.rglob("*")) == before
    assert (run / "config_resolved.yaml").read_text() == resolved


@pytest.mark.parametrize("command", ["predict", "export"])
def test_predict_and_export_into_a_training_runs_directory_are_refused(
    checkpoints, tmp_path, capsys, command
):
    """As sft-eval's: they wrote their files into the training run, with a
    `.hydra/resumed_<time>/` of theirs, as if the run had been resumed."""
    import importlib

    run = shutil.copytree(checkpoints["image"].parent.parent, tmp_path / "run")
    before = sorted(p for p in run.rglob("*"))
    argv = [f"sft-{command}", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    argv.append(f"hydra.run.dir={run}")
    if command == "predict":
        argv.append(f"inputs={tmp_path / 'x.png'}")
    module = importlib.import_module(f"sft.{command}")
    assert run_entry_point(module.main, argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"error: {run} holds a training run ({run / 'checkpoints' / 'epoch_000.ckpt'}): give "
        f"sft-{command} another hydra.run.dir (a run's files are never replaced)"
    )
    assert sorted(p for p in run.rglob("*")) == before


def test_eval_into_a_scored_evals_directory_is_refused_with_its_predictions_gone(
    checkpoints, tmp_path, capsys
):
    """An sft-eval run's directory, its predictions.csv moved away, given to sft-eval again:
    its scores.json and confusion_matrix.png were replaced by the second run's."""
    import sft.eval

    scored = tmp_path / "eval"
    argv = ["sft-eval", "trainer.enable_progress_bar=false", f"hydra.run.dir={scored}"]
    again = [*argv, f"ckpt_path={checkpoints['image']}"]
    assert run_entry_point(sft.eval.main, again) == 0
    (scored / "predictions.csv").rename(tmp_path / "kept.csv")
    before = {p: p.read_bytes() for p in scored.rglob("*") if p.is_file()}
    assert (scored / "confusion_matrix.png") in before
    assert run_entry_point(sft.eval.main, again) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"error: {scored} holds an evaluation's scores ({scored / 'scores.json'}): give sft-eval "
        "another hydra.run.dir (results already written are never replaced)"
    )
    assert {p: p.read_bytes() for p in scored.rglob("*") if p.is_file()} == before
    # its scores moved too: the confusion matrix left is not written over either
    (scored / "scores.json").unlink()
    assert run_entry_point(sft.eval.main, again) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {scored / 'confusion_matrix.png'} already exists: give another hydra.run.dir "
        "(results already written are never replaced)"
    )
    png = scored / "confusion_matrix.png"
    assert png.read_bytes() == before[png]


def test_training_into_an_evals_directory_is_refused_before_writing(checkpoints, tmp_path, capsys):
    """`sft-train ... hydra.run.dir=<an sft-eval run>` replaced the eval's
    config_resolved.yaml and added training events to its TensorBoard."""
    import sft.eval
    import sft.train

    scored = tmp_path / "eval"
    argv = ["sft-eval", f"ckpt_path={checkpoints['image']}", f"hydra.run.dir={scored}"]
    assert run_entry_point(sft.eval.main, [*argv, "trainer.enable_progress_bar=false"]) == 0
    before = {p: p.read_bytes() for p in scored.rglob("*") if p.is_file()}
    argv = ["sft-train", *FAST, "trainer.max_epochs=1", f"hydra.run.dir={scored}"]
    assert run_entry_point(sft.train.main, argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"error: {scored} holds another command's results ({scored / 'predictions.csv'}): give "
        "this run another hydra.run.dir"
    )
    assert {p: p.read_bytes() for p in scored.rglob("*") if p.is_file()} == before


def test_eval_predictions_cover_the_batches_the_metrics_do(checkpoints, tmp_path):
    """sft-eval trainer.limit_test_batches=1: metrics of one batch, but predictions.csv and the
    confusion matrix of the whole test split (was: 10,000 rows)."""
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['image']}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "+trainer.limit_test_batches=1",
        ],
        tmp_path,
    )
    evaluate(cfg)
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    trained = torch.load(checkpoints["image"], weights_only=True)["datamodule_hyper_parameters"]
    assert len(rows) == 1 + (trained.get("eval_batch_size") or trained["batch_size"])
    # and the run's record says so
    recorded = OmegaConf.load(tmp_path / "config_resolved.yaml")
    assert recorded.trainer.limit_predict_batches == 1


def test_eval_without_labelled_test_split_predicts_the_validation_it_scores(
    checkpoints, data_dir, tmp_path, caplog
):
    """SST-2's test split has no labels: sft-eval scores validation, and predictions.csv and the
    confusion matrix are of the same validation batches (were: the first unlabelled test rows,
    label columns empty, no confusion matrix). A warning names the test split it did not score
    (was: an info line naming none, for a test file given without a label column too)."""
    cfg = text_eval_config(checkpoints, tmp_path, 1)
    metrics = evaluate(cfg)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(newline="")))
    dev = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == 16  # the checkpoint's eval_batch_size: one batch, as scored
    assert [r["label"] for r in rows] == [line.split("\t")[1] for line in dev[:16]]
    assert [r["id"] for r in rows] == [str(n) for n in range(2, 18)]  # their lines in dev.tsv
    accuracy = sum(r["label"] == r["pred"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["val/acc"])
    assert (tmp_path / "confusion_matrix.png").is_file()
    assert "val/acc_best" not in metrics  # training's best of its validations: not this one's
    assert (
        "No labelled test split (data.test_split=test.tsv: it has no labels): metrics are on "
        "the validation split." in caplog.text
    )


def _eval_forwards(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stage of each forward pass of sft-eval's model, in order."""
    stages: list[str] = []
    forward = SFTClassifier.forward

    def counted(self: SFTClassifier, inputs: Any) -> torch.Tensor:
        stages.append(self.trainer.state.stage.value)
        return forward(self, inputs)

    monkeypatch.setattr(SFTClassifier, "forward", counted)
    return stages


def test_eval_predicts_from_the_pass_that_scores(checkpoints, data_dir, tmp_path, monkeypatch):
    """sft-eval's predictions.csv comes from the batches its metrics score, as they are scored
    (was: a second pass over the split, trainer.predict: twice the time)."""
    stages = _eval_forwards(monkeypatch)
    cfg = text_eval_config(checkpoints, tmp_path, 2)
    metrics = evaluate(cfg)
    assert stages == ["validate", "validate"]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(newline="")))
    dev = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [r["label"] for r in rows] == [line.split("\t")[1] for line in dev[:32]]
    accuracy = sum(r["label"] == r["pred"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["val/acc"])


def test_eval_predicts_in_a_pass_of_its_own_where_it_cannot_tell_it_would_be_the_same():
    """The scoring pass's outputs stand for predictions only where predicting would give the
    same: not for a model with its own predict_step (test-time augmentation), nor a loader
    with a batch sampler of its own (its order is not the file's)."""
    from torch.utils.data import TensorDataset

    from sft.jobs.eval import predicts_what_it_scores

    data = TensorDataset(torch.arange(4))

    class Loaders:
        has_labelled_test = False

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def val_dataloader(self) -> DataLoader:
            return DataLoader(data, **self.kwargs)

        def predict_dataloader(self) -> DataLoader:
            return DataLoader(data, batch_size=2)

    class Augmented(SFTClassifier):
        def predict_step(self, batch: Any, batch_idx: int) -> Any:
            return super().predict_step(batch, batch_idx)

    model = SFTClassifier.__new__(SFTClassifier)
    assert predicts_what_it_scores(model, Loaders(batch_size=2))
    assert not predicts_what_it_scores(Augmented.__new__(Augmented), Loaders(batch_size=2))
    assert not predicts_what_it_scores(model, Loaders(batch_sampler=[[3, 2], [1, 0]]))


def test_eval_predicts_a_datamodules_own_predict_loader(
    checkpoints, data_dir, tmp_path, monkeypatch
):
    """A datamodule whose predict loader serves its examples in another order than it scores
    them (a user's may): predictions.csv follows the predict loader, in a pass of its own."""
    stages = _eval_forwards(monkeypatch)

    def backwards(self: TextClassificationDataModule) -> DataLoader:
        data = self.scored_data()
        order = list(reversed(range(len(data))))
        return self._loader(data, "predict", batch_size=self.eval_batch_size, sampler=order)

    monkeypatch.setattr(TextClassificationDataModule, "predict_dataloader", backwards)
    cfg = text_eval_config(checkpoints, tmp_path, 1)
    evaluate(cfg)
    assert stages == ["validate", "predict"]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(newline="")))
    dev = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [r["label"] for r in rows] == [line.split("\t")[1] for line in dev[::-1][:16]]


def test_eval_probabilities_are_float32_under_mixed_precision(checkpoints, tmp_path):
    """sft-eval trainer.precision=bf16-mixed: predictions.csv's probabilities are the softmax
    in float32, each row summing to 1 (were: bf16-rounded, e.g. 1.000000,0.001282)."""
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoints['image']}",
            "trainer.accelerator=cpu",
            "trainer.precision=bf16-mixed",
            "trainer.enable_progress_bar=false",
            "+trainer.limit_test_batches=2",
        ],
        tmp_path,
    )
    evaluate(cfg)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open(newline="")))
    probs = torch.tensor([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])
    assert len(rows) > 1 and probs.shape[1] == 10
    # 6 written decimals: each of the 10 rounds by at most 5e-7
    assert (probs.sum(1) - 1).abs().max() <= 5e-6


def test_eval_of_a_five_class_sst_model_on_binary_trees_is_one_error(tmp_path, caplog):
    """`sft-eval ckpt_path=<SST-5 checkpoint> data=sst2_trees`: the binary trees' labels 0/1
    were read as the model's classes 0/1 (very negative, negative), and scored without a word
    (val/acc 0.15); now the class counts differ, as with `data=sst2`. Training, which has no
    test split to test, does not send the user to sft-predict with a file it has not got."""
    caplog.set_level(logging.INFO)
    overrides = [o for o in TINY_TEXT if not o.startswith("experiment=")]
    run = tmp_path / "sst5"
    train(
        compose_config(
            "train",
            [
                "experiment=sst5_minilm",
                *overrides,
                "+trainer.max_steps=1",
                "+trainer.limit_val_batches=1",
            ],
            run,
        )
    )
    assert "The data has no labelled test split: skipping test." in caplog.messages
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            "data=sst2_trees",
            "trainer.accelerator=cpu",
            "+trainer.limit_val_batches=1",
        ],
        tmp_path / "eval",
    )
    with pytest.raises(SFTError, match=r"model\.num_classes=5 but the data has 2 classes"):
        evaluate(cfg)
    assert not (tmp_path / "eval" / "predictions.csv").exists()


@pytest.mark.parametrize("section", ["hyper_parameters", "datamodule_hyper_parameters"])
def test_a_checkpoint_whose_settings_interpolate_a_target_is_refused(
    checkpoints, tmp_path, section
):
    """A target written as an interpolation (`${oc.decode:'builtins.open'}`) passed the target
    check, which read the string, and Hydra resolved it as it built: the file was emptied (and
    through torch.load(weights_only=False) a pickle's code ran) in sft-eval, -predict, -export."""
    from sft.inference.bundle import load_bundle
    from sft.models.loading import datamodule_from_checkpoint, load_classifier

    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    state = torch.load(checkpoints["text"], weights_only=True)
    opener = {"_target_": "${oc.decode:'builtins.open'}", "file": str(precious), "mode": "w"}
    state[section]["probe"] = opener
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    where = "model" if section == "hyper_parameters" else "data"
    for build in (load_classifier, datamodule_from_checkpoint, load_bundle):
        with pytest.raises(SFTError) as err:
            build(crafted)
        assert str(err.value).startswith(
            f"checkpoint {crafted}: {where}.probe._target_=\"${{oc.decode:'builtins.open'}}\" is "
            "an interpolation, which sft would resolve as it builds"
        ), err.value
    # sft-eval data=<a text config>, which reads the model's backbone name as its tokenizer:
    # built before any check of the checkpoint (was: the file emptied)
    state = torch.load(checkpoints["text"], weights_only=True)
    state["hyper_parameters"]["backbone"]["model_name_or_path"] = opener | {"_target_": "io.open"}
    torch.save(state, crafted)
    cfg = compose_config("eval", [f"ckpt_path={crafted}", "data=sst2"], tmp_path / "eval")
    with pytest.raises(SFTError, match="is not something sft builds from a checkpoint"):
        evaluate(cfg)
    assert precious.read_text() == "precious"


@pytest.mark.parametrize("section", ["hyper_parameters", "datamodule_hyper_parameters"])
def test_a_checkpoint_that_turns_remote_code_on_needs_the_users_word(
    checkpoints, tmp_path, section
):
    """trust_remote_code=true in a checkpoint's settings ran its model or tokenizer folder's code
    in sft-eval, -predict and -export; the command line now has to say so too."""
    from sft.inference.bundle import load_bundle

    state = torch.load(checkpoints["text"], weights_only=True)
    settings = state[section]["backbone"] if section == "hyper_parameters" else state[section]
    crafted = tmp_path / "crafted.ckpt"
    where = "model.backbone" if section == "hyper_parameters" else "data"
    # transformers reads it as a truth value: 1 is on too
    for value, said in ((True, "true"), (1, "1")):
        settings["trust_remote_code"] = value
        torch.save(state, crafted)
        with pytest.raises(SFTError) as err:
            load_bundle(crafted)
        assert str(err.value) == (
            f"checkpoint {crafted}: {where}.trust_remote_code={said}: rebuilding its model or data "
            "runs the code their folder or hub repository ships; if you trust that code, give "
            "this command trust_remote_code=true"
        )
    cfg = compose_config("eval", [f"ckpt_path={crafted}"], tmp_path / "eval")
    with pytest.raises(SFTError, match="give this command trust_remote_code=true"):
        evaluate(cfg)
    settings["trust_remote_code"] = True  # (1 is no setting sft saves: its builder refuses it)
    torch.save(state, crafted)
    assert load_bundle(crafted, trust_remote_code=True).class_names


def test_eval_of_an_image_checkpoint_on_text_data_is_one_error(checkpoints, tmp_path):
    """`sft-eval ckpt_path=<image checkpoint> data=text_files`: the text config's tokenizer
    interpolates the model's backbone name, which an image model lacks (was: omegaconf's
    InterpolationKeyError traceback)."""
    cfg = compose_config("eval", [f"ckpt_path={checkpoints['image']}", "data=text_files"], tmp_path)
    with pytest.raises(SFTError, match=r"^data\.tokenizer: Interpolation key .* not found: this"):
        evaluate(cfg)


def test_eval_on_named_image_data_keeps_the_models_normalisation(checkpoints, tmp_path, caplog):
    """`data=cifar10` brings CIFAR statistics; the model was trained with its own, and they win
    unless the command line sets them. So does the image size the model was trained at (was:
    `data=image_folder`'s default 32 px for a model trained at 48, without a word)."""
    from sft.jobs.eval import data_config_for_checkpoint

    checkpoint = torch.load(checkpoints["image"], weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["mean"] = [0.5, 0.5, 0.5]
    checkpoint["datamodule_hyper_parameters"]["image_size"] = 48
    cfg = compose_config("eval", [f"ckpt_path={checkpoints['image']}", "data=cifar10"], tmp_path)
    # CIFAR-10 is read at its 32 px only (was: a model trained at 48 px scored it without a word)
    with logs_warning(caplog, "CIFAR10DataModule reads 32 px images and the model was trained"):
        assert list(data_config_for_checkpoint(cfg, checkpoint).mean) == [0.5, 0.5, 0.5]
    folder = [f"ckpt_path={checkpoints['image']}", "data=image_folder"]
    cfg = compose_config("eval", folder, tmp_path)
    assert data_config_for_checkpoint(cfg, checkpoint).image_size == 48
    cfg = compose_config("eval", [*folder, "data.image_size=40"], tmp_path)
    assert data_config_for_checkpoint(cfg, checkpoint).image_size == 40
    # one setting of the checkpoint's data: no class to look a size up in (was: hydra's
    # "Error getting class at None" ERROR line on every such sft-eval)
    eval_batch = [f"ckpt_path={checkpoints['image']}", "+data.eval_batch_size=16"]
    cfg = compose_config("eval", eval_batch, tmp_path)
    caplog.clear()
    data_config_for_checkpoint(cfg, checkpoint)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # CIFAR-10's datamodule records no size (it has one, 32): an image folder is read at it,
    # as sft-predict reads images (was: at the backbone's size, since data.image_size=null)
    assert checkpoint["datamodule_target"].endswith("CIFAR10DataModule")
    del checkpoint["datamodule_hyper_parameters"]["image_size"]
    cfg = compose_config("eval", folder, tmp_path)
    assert data_config_for_checkpoint(cfg, checkpoint).image_size == 32


@pytest.mark.parametrize("kind", ["image", "text"])
def test_a_checkpoint_of_the_other_modality_is_named_as_such(kind, checkpoints, tmp_path):
    """sft-train of a text run from an image model's checkpoint (or the reverse) said that its
    epochs reached trainer.max_epochs under debug=fdr, or that the class counts differ; nothing
    of the run is written."""
    other = "text" if kind == "image" else "image"
    settings = TINY_TEXT if kind == "text" else FAST
    run = tmp_path / "run"
    cfg = compose_config("train", [*settings, "debug=fdr", f"ckpt_path={checkpoints[other]}"], run)
    article = {"image": "an image", "text": "a text"}
    with pytest.raises(SFTError) as err:
        train(cfg)
    assert str(err.value) == (
        f"checkpoint {checkpoints[other]} is of {article[other]} model, and this run trains "
        f"{article[kind]} model: give a checkpoint of {article[kind]} model"
    )
    assert not run.exists() or not any(run.iterdir())


def test_eval_refuses_pairs_for_a_single_text_model_and_the_reverse(checkpoints, tmp_path):
    """sft-eval of a single-text model with data.text_pair_column=<column> scored the pairs
    (test/acc 1.0), and of a pair model with data.text_pair_column=null the first texts alone,
    without a word; sft-predict refused both. Another column name is the data's own."""
    from sft.jobs.eval import data_config_for_checkpoint

    single = torch.load(checkpoints["text"], weights_only=True)
    assert single["datamodule_hyper_parameters"]["text_pair_column"] is None
    pairs = copy.deepcopy(single)
    pairs["datamodule_hyper_parameters"]["text_pair_column"] = "hypothesis"
    ckpt = f"ckpt_path={checkpoints['text']}"
    cfg = compose_config("eval", [ckpt, "+data.text_pair_column=hypothesis"], tmp_path)
    with pytest.raises(
        SFTError,
        match=r"^data\.text_pair_column=hypothesis: this model classifies single texts \(it was "
        r"trained with data\.text_pair_column=null\): leave data\.text_pair_column out$",
    ):
        data_config_for_checkpoint(cfg, single)
    assert data_config_for_checkpoint(cfg, pairs).text_pair_column == "hypothesis"
    cfg = compose_config("eval", [ckpt, "data=text_files"], tmp_path)  # its default: null
    with pytest.raises(
        SFTError,
        match=r"^data\.text_pair_column=null: this model classifies sentence pairs \(it was "
        r"trained with data\.text_pair_column=hypothesis\): name the column of the second "
        r"texts, data\.text_pair_column=<column>$",
    ):
        data_config_for_checkpoint(cfg, pairs)
    cfg = compose_config("eval", [ckpt, "data=text_files", "data.text_pair_column=h2"], tmp_path)
    assert data_config_for_checkpoint(cfg, pairs).text_pair_column == "h2"
    assert data_config_for_checkpoint(
        compose_config("eval", [ckpt, "data=text_files"], tmp_path), single
    )


@pytest.mark.parametrize("kind", ["text", "image"])
def test_debug_overfit_runs_for_text_and_image_experiments(kind, train_cfg, tmp_path):
    """`debug=overfit` used to set `data.augment`, which text datamodules do not take."""
    overrides = ["debug=overfit", "trainer.max_epochs=2", "test=false"]
    if kind == "text":
        cfg = compose_config("train", [*TINY_TEXT, *overrides], tmp_path / "run")
    else:
        cfg = train_cfg(*overrides)
    metrics = train(cfg)
    assert metrics["train/loss_epoch"] >= 0.0


def test_lightning_trainer_arguments_need_no_plus(tmp_path, data_dir, monkeypatch):
    """`trainer.fast_dev_run=true` (any Trainer argument) works as Lightning users type it."""
    assert accept_trainer_arguments(
        ["trainer.fast_dev_run=true", "trainer.max_epochs=2", "trainer.foo=1", "model.x=1"]
    ) == ["++trainer.fast_dev_run=true", "++trainer.max_epochs=2", "trainer.foo=1", "model.x=1"]
    monkeypatch.chdir(tmp_path)
    code = run_entry_point(
        train_module.main,
        [
            "sft-train",
            "model=resnet18_cifar",
            "~model.backbone",
            "+model.backbone={_target_:sft.models.backbones.create_backbone,name:small_cnn,width:8}",
            "data.samples_per_class=4",
            "data.batch_size=8",
            "trainer.fast_dev_run=true",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            f"paths.log_dir={tmp_path}",
        ],
    )
    assert code == 0
    (result,) = tmp_path.rglob("result.json")
    overrides = json.loads(result.read_text())["overrides"]
    assert "trainer.fast_dev_run=true" in overrides  # recorded as typed


def test_trainer_arguments_read_without_lightning_are_lightnings():
    """The checks read the Trainer's arguments from its source, so that they answer before
    Lightning loads: the same set as the imported class's signature."""
    assert trainer_arguments() == set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def test_settings_of_the_checkpoints_data_get_the_plus_only_where_hydra_needs_it():
    """sft-eval/-predict/-export add `+` to `data.<key>=` for the checkpoint's data, which Hydra
    has not composed; not where the command composes data itself (`data=`, or a primary config
    of the user's own, where `+` would fail: "an item is already at data.<key>")."""
    adds = ("data", "trainer")
    assert accept_checkpoint_data_settings(["data.x=1", "data.y=a,b", "~data.z"], adds) == [
        "+data.x=1",
        "+data.y=a,b",
        "~data.z",
    ]
    for composes_data in (["data=cifar10"], ["-cn", "mine"], ["--config-name=mine"]):
        argv = [*composes_data, "data.x=1"]
        assert accept_checkpoint_data_settings(argv, adds) == argv
    assert accept_checkpoint_data_settings(["data.x=1"], ("trainer",)) == ["data.x=1"]  # sft-train


def test_unknown_trainer_key_suggests_only_keys_that_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = run_entry_point(train_module.main, ["sft-train", "trainer.fast_dev_runn=true"])
    err = capsys.readouterr().err
    assert code == 1
    assert "did you mean 'trainer.fast_dev_run'?" in err


def test_unreadable_last_checkpoint_falls_back_to_the_newest_readable(train_cfg, tmp_path, caplog):
    """resume=<run dir> whose last.ckpt is truncated: the newest other checkpoint of the run,
    said in the log, and the bad file is kept; with none readable, one error line."""
    run_dir = tmp_path / "run"
    train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=run_dir))
    ckpts = run_dir / "checkpoints"
    last = ckpts / "last.ckpt"
    truncated = last.read_bytes()[:1000]
    last.write_bytes(truncated)

    metrics = train(
        train_cfg("trainer.max_epochs=2", "test=false", f"resume={run_dir}", run_dir=run_dir)
    )
    assert "resuming from epoch_000.ckpt" in caplog.text
    assert (ckpts / "last.ckpt.unreadable").read_bytes() == truncated
    assert torch.load(last, weights_only=True)["epoch"] >= 1
    assert metrics["val/acc"] >= 0.0

    last.write_bytes(truncated)
    for other in ckpts.glob("epoch_*.ckpt"):
        other.write_bytes(b"")
    shutil.rmtree(run_dir / "tensorboard")
    with pytest.raises(SFTError, match=r"cannot be read .* no other readable checkpoint"):
        train(train_cfg("trainer.max_epochs=3", "test=false", f"resume={run_dir}", run_dir=run_dir))


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("unsafe", "a weights-only load refuses it: Unsupported global: GLOBAL pathlib.PurePos"),
        ("protocol_5", "; it was saved with pickle protocol 4 or 5, which a weights-only load"),
    ],
)
def test_resuming_from_a_last_checkpoint_sft_does_not_read_says_why(tmp_path, caplog, kind, why):
    """A last.ckpt holding an object a weights-only load refuses, or pickled at protocol 5, is
    not called truncated or corrupt (was: "cannot be read (truncated or corrupt)" of a whole
    file), with or without an older checkpoint to fall back to."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    if kind == "unsafe":
        torch.save({"global_step": 3, "where": PurePosixPath("a")}, last)
    else:
        torch.save({"global_step": 3}, last, pickle_protocol=5)
    with pytest.raises(SFTError) as info:
        readable_checkpoint(last)
    assert str(info.value).startswith(f"resume: {last} cannot be read (")
    assert why in str(info.value)
    assert str(info.value).endswith(
        f") and the run has no other readable checkpoint in {last.parent}; start a new run or "
        "restore the file"
    )
    torch.save({"global_step": 2}, last.with_name("step_2.ckpt"))
    with logs_warning(caplog, re.escape(why)):
        assert readable_checkpoint(last)[1] == {"global_step": 2}


def test_a_finished_run_recovered_from_an_unreadable_last_checkpoint_resumes_again(
    train_cfg, tmp_path, caplog
):
    """A finished run resumed past its truncated last.ckpt trains no further, so nothing wrote
    last.ckpt again, and every later resume or sweep re-run was refused ("no last.ckpt"): the
    checkpoint it falls back to becomes last.ckpt."""
    run_dir = tmp_path / "run"
    train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    for _ in range(2):
        train(train_cfg("trainer.max_epochs=1", "test=false", f"resume={run_dir}", run_dir=run_dir))
        assert torch.load(last, weights_only=True)["epoch"] == 0
    assert caplog.text.count("resuming from epoch_000.ckpt") == 1


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model.lr_backbone=abc", "error: model.lr_backbone: expected a float >= 0, got 'abc'"),
        ("data.batch_size=1.5", "error: data.batch_size: expected an integer, got 1.5"),
        # was: the string 'no' reached the model, where it reads as true
        (
            "model.freeze_backbone=no",
            "error: model.freeze_backbone: expected true or false, got 'no'",
        ),
        (
            "model.channels_last=off",
            "error: model.channels_last: expected true or false or null, got 'off'",
        ),
        (
            "data.mean=[1,x,2]",
            "error: data.mean: expected a list of floats or null, got [1, 'x', 2]",
        ),
        (
            "trainer.max_epochs=-3",
            "error: trainer: `max_epochs` must be a non-negative integer or -1. You passed in -3.",
        ),
        # a key timedelta lacks, a count of seconds (were: TypeError, AttributeError tracebacks)
        (
            "+trainer.max_time={hour:1}",
            "error: trainer.max_time={'hour': 1}: expected a duration DD:HH:MM:SS (00:12:00:00) "
            "or a mapping of weeks, days, hours, minutes, seconds, milliseconds, microseconds "
            "({hours: 12})",
        ),
        (
            "+trainer.max_time=3600",
            "error: trainer.max_time=3600: expected a duration DD:HH:MM:SS (00:12:00:00) or a "
            "mapping of weeks, days, hours, minutes, seconds, milliseconds, microseconds "
            "({hours: 12})",
        ),
        (
            "+trainer.max_time=12h",
            "error: trainer.max_time: `Timer(duration='12h')` is not a valid duration. Expected "
            "a string in the format DD:HH:MM:SS.",
        ),
        # was: Lightning's refusal of one setting after another, its advice no way past
        (
            "trainer.barebones=true",
            "error: trainer.barebones=true leaves out the logging, checkpoints and callbacks an "
            "sft run records itself with (its metrics, result.json, resume=): not supported; the "
            "least a run does: callbacks=none '~logger' trainer.enable_progress_bar=false",
        ),
        # was: the run ended at max_epochs, the minimum passed over without a word
        (
            "trainer.min_epochs=40",
            "error: trainer.min_epochs=40 is above trainer.max_epochs=10, where the run ends: "
            "lower trainer.min_epochs or raise trainer.max_epochs",
        ),
        # bounds (was: torch's or Lightning's traceback, a ZeroDivisionError mid-epoch, or
        # silent acceptance of a negative rate)
        ("model.lr_head=-1", "error: model.lr_head: expected a float >= 0, got -1"),
        ("model.reg_lambda=-1", "error: model.reg_lambda: expected a float >= 0, got -1"),
        (
            "model.warmup_ratio=2",
            "error: model.warmup_ratio: expected a float >= 0 and <= 1, got 2",
        ),
        # 1 (was: accepted) trains every example towards the uniform distribution
        (
            "model.label_smoothing=1",
            "error: model.label_smoothing: expected a float >= 0 and < 1, got 1",
        ),
        ("model.num_classes=1", "error: model.num_classes: expected an integer >= 2, got 1"),
        (
            "model.head.dropout=2",
            "error: model.head.dropout: expected a float >= 0 and < 1, got 2",
        ),
        (
            "trainer.val_check_interval=0",
            "error: trainer.val_check_interval: expected a float > 0 or a string or dict or null, got 0",
        ),
        (
            "trainer.check_val_every_n_epoch=0",
            "error: trainer.check_val_every_n_epoch: expected an integer >= 1 or null, got 0",
        ),
        # was: a ZeroDivisionError traceback (0), a run accumulating 2 batches (-2)
        (
            "trainer.accumulate_grad_batches=0",
            "error: trainer.accumulate_grad_batches: expected an integer >= 1, got 0",
        ),
        (
            "trainer.accumulate_grad_batches=-2",
            "error: trainer.accumulate_grad_batches: expected an integer >= 1, got -2",
        ),
        # was: accepted, and training ran unclipped (Lightning clips only above 0)
        (
            "+trainer.gradient_clip_val=-1",
            "error: trainer.gradient_clip_val: expected a float >= 0 or null, got -1",
        ),
        ("seed=abc", "error: seed: expected an integer >= 0 and <= 4294967295 or null, got 'abc'"),
        # was: numpy's "ValueError: -1 is not in bounds" through seed_everything
        ("seed=-1", "error: seed: expected an integer >= 0 and <= 4294967295 or null, got -1"),
        # was: the string passed the check and reached the model ("TypeError: '>' not supported")
        (
            "model.lr_head='0.1'",
            "error: model.lr_head: expected a float >= 0, got the string '0.1': write it without "
            "quotes (from ${oc.env:...}: ${oc.decode:${oc.env:...}} reads the number)",
        ),
        # a seed from an environment variable is text, which seed_everything reads, but the
        # data's seed (${seed}) must be a number: how to read one
        (
            "seed=${oc.env:SFT_TEST_SEED}",
            "error: data.seed: expected an integer or null, got the string '3': write it without quotes "
            "(from ${oc.env:...}: ${oc.decode:${oc.env:...}} reads the number)",
        ),
        # a precision whose package is not installed (was: Hydra's multi-line report)
        (
            "trainer.precision=transformer-engine",
            "error: trainer: Requirement 'transformer_engine>=0.11.0' not met. HINT: Try running "
            "`pip install -U 'transformer_engine>=0.11.0'`",
        ),
        # text data with an image model (was: omegaconf's InterpolationKeyError traceback, then
        # a line on the interpolation the text data reads)
        (
            "data=sst2",
            "error: the model's backbone takes image inputs but TextClassificationDataModule "
            "gives texts: pair an image backbone with an image datamodule (text data: a text "
            "model such as model=minilm_fused)",
        ),
        # a device count Lightning refuses, callbacks that are no callback configs (were:
        # Hydra's multi-line report, a TypeError traceback)
        (
            "trainer.devices=abc",
            "error: trainer: `devices` selected with `CPUAccelerator` should be an int > 0.",
        ),
        (
            "+callbacks.foo=1",
            "error: callbacks.foo=1: expected a config with a _target_ (e.g. "
            "+callbacks.foo._target_=<module.Class>), or null to switch it off",
        ),
        # a config naming no class (was: "Missing key input_spec" traceback for the model,
        # "DictConfig sets no num_features" for the backbone, "DictConfig is not an sft
        # datamodule" for the data)
        (
            "~model._target_",
            "error: model: no _target_ (the class to build, e.g. sft.models.SFTClassifier); a "
            "config of your own that extends one of sft's lists it in its defaults",
        ),
        (
            "~model.backbone._target_",
            "error: model.backbone: no _target_ (the class to build, e.g. "
            "sft.models.backbones.create_backbone); a config of your own that extends one of "
            "sft's lists it in its defaults",
        ),
        (
            "~data._target_",
            "error: data: no _target_ (the class to build, e.g. "
            "sft.data.text.TextClassificationDataModule); a config of your own that extends one "
            "of sft's lists it in its defaults",
        ),
        # a misspelt _target_ (was: the callback left out without a word)
        (
            "+callbacks.tracker._tagret_=my.Tracker",
            "error: callbacks.tracker: no _target_ (it sets _tagret_): name the class to build in "
            "callbacks.tracker._target_, or set callbacks.tracker=null to switch it off",
        ),
        (
            "+callbacks.lr_monitor.mesg=1",
            "error: callbacks.lr_monitor.mesg: LearningRateMonitor takes no such setting (it "
            "takes: logging_interval, log_momentum, log_weight_decay); "
            "~callbacks.lr_monitor.mesg removes it (or leave out its +...)",
        ),
        # another optimizer than the packaged SGD, whose `nesterov: true` it does not take (was:
        # no word on how to drop the setting the config gives)
        (
            "model.optimizer._target_=torch.optim.RMSprop",
            "error: model.optimizer.nesterov: RMSprop takes no such setting (it takes: params, "
            "lr, alpha, eps, weight_decay, momentum, centered, capturable, foreach, maximize, "
            "differentiable); ~model.optimizer.nesterov removes it (or leave out its +...)",
        ),
        # a required setting removed (was: Hydra's "Error in call to target ... missing 1
        # required positional argument")
        (
            "~model.num_classes",
            "error: missing value for model.num_classes: SFTClassifier needs it; set "
            "model.num_classes=...",
        ),
        (
            "model.optimizer._target_=torch.optim.Foo",
            "error: model.optimizer._target_: cannot import 'torch.optim.Foo'; torch.optim has "
            "no 'Foo'",
        ),
        # a module of the user's own without PYTHONPATH (was: "expected the dotted path of a
        # class or function", which it is)
        (
            "model.optimizer._target_=my_optimizers.Fast",
            "error: model.optimizer._target_: cannot import 'my_optimizers.Fast'; no module "
            "named 'my_optimizers': a module of your own is imported from the folders of "
            "PYTHONPATH (from its folder: PYTHONPATH=. sft-...), or install it",
        ),
        (
            "model.optimizer._target_=torch.optim.AdamWW",
            "error: model.optimizer._target_: cannot import 'torch.optim.AdamWW'; torch.optim "
            "has no 'AdamWW' (did you mean 'AdamW'?)",
        ),
    ],
)
def test_config_values_are_type_checked_before_anything_runs(
    override, line, tmp_path, monkeypatch, capsys
):
    """Was: a TypeError traceback from deep inside (lr_backbone=abc), or silent acceptance."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFT_TEST_SEED", "3")
    argv = ["sft-train", "model=resnet18_cifar", override, f"paths.log_dir={tmp_path}"]
    assert run_entry_point(train_module.main, argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == line


def test_unquoted_numbers_as_class_names_are_told_to_be_quoted(tmp_path, monkeypatch, capsys):
    """`data.label_names=[1,3,5]`: the command line reads numbers, and the error said only that
    it expected strings (was: no word on quoting)."""
    monkeypatch.chdir(tmp_path)
    argv = ["sft-train", "experiment=sst2_minilm", "data.label_names=[1,3,5]"]
    assert run_entry_point(train_module.main, [*argv, f"paths.log_dir={tmp_path}"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: data.label_names: expected a list of strings or null, got [1, 3, 5] (YAML reads "
        """1, true and null as values, not names: quote them, 'data.label_names=["1","3","5"]')"""
    )


def test_training_without_validation_runs_with_the_default_callbacks(train_cfg, caplog):
    """`+trainer.limit_val_batches=0` with the default callbacks: early stopping on val/acc is
    switched off, said in the log (was: Lightning's RuntimeError for the missing metric at the
    first epoch's end); the run trains, saves last.ckpt and tests the current weights."""
    cfg = train_cfg("trainer.max_epochs=2", "+trainer.limit_val_batches=0")
    assert cfg.callbacks.early_stopping.monitor == "val/acc"
    metrics = train(cfg)
    assert "early stopping on val/acc is off" in caplog.text
    assert "test/acc" in metrics
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_a_run_stopped_early_says_so_in_its_log(train_cfg, caplog):
    """Early stopping ending the last epoch part-way (sst2_minilm_full at batch 64: 2.5 of 3
    epochs): the log said only "`Trainer.fit` stopped: `max_epochs=3` reached" (was: no word on
    early stopping, in an earlier epoch no word at all)."""
    cfg = train_cfg(
        "trainer.max_epochs=3",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1.0",  # no validation after the first improves
        "test=false",
    )
    with caplog.at_level(logging.INFO):
        train(cfg)
    assert "New best score" in caplog.text
    assert "val/acc did not improve in the last 1 records" in caplog.text


def test_a_run_cut_short_by_max_steps_ends_cleanly(train_cfg):
    """`trainer.max_steps` inside the first epoch (also a resume to a larger max_steps): the run
    ends with its checkpoint and test (was: EarlyStopping's RuntimeError for the missing
    val/acc at the cut-short epoch's end, and no checkpoint)."""
    cfg = train_cfg("++trainer.max_steps=2")
    metrics = train(cfg)
    assert "test/acc" in metrics
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("limit", ["0", "0.0"])
def test_no_training_batch_skips_the_linear_probe_with_a_warning(train_cfg, caplog, limit):
    """trainer.limit_train_batches=0 with the default linear probe: torch.cat's ValueError
    traceback from the probe's empty feature list (0.0 probed a batch, training on none)."""
    cfg = train_cfg(f"+trainer.limit_train_batches={limit}", "model.linear_probe={}", "test=false")
    train(cfg)
    assert "no training batch is read, so the linear probe does not run" in caplog.text
    assert "linear probe: base head fitted" not in caplog.text


def test_one_class_of_training_data_is_not_fixed_by_num_classes_1(tmp_path):
    """An image folder with one class folder: the error said `set model.num_classes=1`, which
    the type check then refuses (num_classes >= 2)."""
    from PIL import Image

    (tmp_path / "tree" / "train" / "ant").mkdir(parents=True)
    for j in range(8):
        Image.new("RGB", (8, 8), (10 * j, 0, 0)).save(
            tmp_path / "tree" / "train" / "ant" / f"{j}.png"
        )
    cfg = compose_config(
        "train",
        [
            *FAST,
            "data=image_folder",
            f"data.data_dir={tmp_path / 'tree'}",
            "data.image_size=8",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.val_size=2",
            "model.num_classes=2",
            "model.linear_probe=null",
        ],
        tmp_path / "run",
    )
    with pytest.raises(SFTError, match=r"train has one class folder \(ant\): a classifier needs"):
        train(cfg)


# a small CNN for 2 classes, and the settings of a tiny image folder (two_class_tree)
SMALL_CNN = [
    "model.num_classes=2",
    "~model.backbone",
    "+model.backbone={_target_:sft.models.backbones.create_backbone,name:small_cnn,width:8}",
]


def folder_data(root: Path) -> list[str]:
    return [
        "data=image_folder",
        f"data.data_dir={root}",
        "data.image_size=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
    ]


def two_class_tree(root: Path, per_class: int) -> Path:
    """`root/train/{ant,bee}/<j>.png`: 20x20 images, `per_class` of each; no val/ or test/."""
    from PIL import Image

    for c, name in enumerate(["ant", "bee"]):
        (root / "train" / name).mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (20, 20), (200 * c, 10 * j, 60)).save(
                root / "train" / name / f"{j}.png"
            )
    return root


def test_a_data_warning_is_in_the_runs_log(tmp_path, capsys):
    """`data.skip_bad_files=true` names the files it leaves out in train.log too (was: a Python
    UserWarning on stderr only, so the run's log never said which images it trained without)."""
    root = two_class_tree(tmp_path / "tree", per_class=6)
    (root / "train" / "bee" / "broken.png").write_bytes(b"not an image")
    small_cnn = "{_target_:sft.models.backbones.create_backbone,name:small_cnn,width:8}"
    run = tmp_path / "run"
    argv = [
        "sft-train",
        "data=image_folder",
        f"data.data_dir={root}",
        "data.image_size=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.skip_bad_files=true",
        "model.num_classes=2",
        "~model.backbone",
        f"+model.backbone={small_cnn}",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run}",
        f"paths.log_dir={tmp_path}",
    ]
    assert run_entry_point(train_module.main, argv) == 0, capsys.readouterr().err[-2000:]
    log = (run / "train.log").read_text()
    broken = root / "train" / "bee" / "broken.png"
    assert (
        f"1 of 13 images under {root / 'train'} cannot be decoded: {broken} "
        "(UnidentifiedImageError: cannot identify image file); data.skip_bad_files=true: left out"
    ) in log
    assert "Tip:" not in log  # Lightning's advertisements of its cloud services (were: two)


def test_an_export_checks_its_parity_on_a_folder_of_test_images_alone(tmp_path):
    """sft-eval scores a folder holding only test/; sft-export, whose parity check reads the
    same test images, refused it: "image folder .../train does not exist"."""
    from sft.jobs.export import export

    root = two_class_tree(tmp_path / "tree", per_class=6)
    run = tmp_path / "run"
    train(compose_config("train", [*folder_data(root), *SMALL_CNN, "trainer.max_epochs=1"], run))
    moved = tmp_path / "moved"
    shutil.copytree(root / "train", moved / "test")  # labelled images, in test/ alone
    last = run / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt_path={last}", "formats=[torchscript]", f"+data.data_dir={moved}"]
    cfg = compose_config("export", overrides, tmp_path / "export")
    assert (export(cfg) / "model.pt").is_file()


def test_a_centre_cropped_model_predicts_evaluates_and_exports_as_it_trained(tmp_path):
    """data.crop_pct (timm's: the centre of the shorter side, aspect kept) and
    data.interpolation: images were only squashed whole, with a bilinear filter. sft-predict,
    sft-eval and sft-export's metadata decode as the model trained."""
    from PIL import Image

    from sft.data.image_decode import ImageDecoder
    from sft.inference.bundle import load_bundle
    from sft.inference.inputs import ImageInputs
    from sft.inference.predictor import predict_probs
    from sft.jobs.export import export

    root = two_class_tree(tmp_path / "tree", per_class=6)
    run = tmp_path / "run"
    data = [*folder_data(root), "data.crop_pct=1.0", "data.interpolation=bicubic"]
    train(compose_config("train", [*data, *SMALL_CNN, "trainer.max_epochs=1"], run))
    last = run / "checkpoints" / "last.ckpt"

    # a wide image: its centre square is the ant colour, its sides the bee's
    wide = Image.new("RGB", (60, 20), (200, 0, 60))
    wide.paste((0, 0, 60), (20, 0, 40, 20))
    bundle = load_bundle(last)
    cropped = ImageDecoder(16, crop_pct=1.0, interpolation="bicubic")(wide)
    assert (cropped.float() - ImageDecoder(16)(wide).float()).abs().max() > 50
    probs = predict_probs(bundle, ImageInputs(["wide"], [wide]))
    with torch.no_grad():
        expected = bundle.logits(bundle.image_inputs(cropped[None])).softmax(-1)
    torch.testing.assert_close(probs, expected)

    unset = [o for o in folder_data(root) if not o.startswith("data.image_size=")]
    evaluate(compose_config("eval", [f"ckpt_path={last}", *unset], tmp_path / "eval"))
    decoded = OmegaConf.load(tmp_path / "eval" / "config_resolved.yaml").data
    assert (decoded.crop_pct, decoded.interpolation) == (1.0, "bicubic")

    shutil.copytree(root / "train", tmp_path / "moved" / "test")
    cfg = compose_config(
        "export",
        [f"ckpt_path={last}", "formats=[torchscript]", f"+data.data_dir={tmp_path / 'moved'}"],
        tmp_path / "export",
    )
    metadata = json.loads((export(cfg) / "metadata.json").read_text())
    assert metadata["image_preparation"] == (
        "its centre square (1 of the shorter side) resized to 16 x 16 px (bicubic, antialiased)"
    )


def test_image_folder_without_test_folder_trains_and_evaluates(tmp_path, caplog):
    """README: `test/` is optional. sft-train skips testing with a line saying so, and sft-eval
    scores, predicts and draws the confusion matrix of validation (was: `error: image folder
    .../test does not exist` after training, result failed)."""
    root = two_class_tree(tmp_path / "tree", per_class=10)
    data = folder_data(root)
    run = tmp_path / "run"
    cfg = compose_config("train", [*data, *SMALL_CNN, "trainer.max_epochs=1"], run)
    metrics = train(cfg)
    assert "val/acc" in metrics and not any(k.startswith("test/") for k in metrics)
    assert f"no test folder {root / 'test'}" in caplog.text
    # the classes and split sizes, as for text data (was: never said)
    assert f"image folder {root}: 2 classes (ant, bee); train 18, val 2" in caplog.text
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    out = tmp_path / "eval"
    metrics = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", *data], out))
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert "(data.test_dir=test: no such folder): metrics are on the validation" in caplog.text
    rows = list(csv.DictReader((out / "predictions.csv").open(newline="")))
    assert len(rows) == 2  # the 2 validation images (val_fraction 0.1 of 20)
    # each names its image, carved from the training folder (was: only its position)
    for row in rows:
        assert row["id"].startswith(f"train/{row['label_name']}/")
        assert (root / row["id"]).is_file()
    assert (out / "confusion_matrix.png").is_file()
    # the same run directory again: its predictions are kept (was: written over)
    with pytest.raises(SFTError, match=r"predictions\.csv already exists: give another hydra"):
        evaluate(compose_config("eval", [f"ckpt_path={ckpt}", *data], out))
    changed = "the checkpoint's run validated on (the folder, or data.val_fraction"
    assert changed not in caplog.text

    # images added to the training folder: the carve is drawn again and can hold images the
    # model trained on (was: scored without a word)
    shutil.copytree(root / "train" / "ant", root / "train" / "ant2")
    for image in (root / "train" / "ant2").iterdir():
        image.rename(root / "train" / "ant" / f"new_{image.name}")
    (root / "train" / "ant2").rmdir()
    evaluate(compose_config("eval", [f"ckpt_path={ckpt}", *data], tmp_path / "eval2"))
    assert f"the images carved from {root / 'train'} for validation are not" in caplog.text
    assert changed in caplog.text and "instead (++data.test_dir=<folder under" in caplog.text

    # data=image_folder without its image size: read at the model's, and recorded so (was:
    # config_resolved.yaml said the config's own size)
    unsized = [o for o in data if not o.startswith("data.image_size=")]
    evaluate(compose_config("eval", [f"ckpt_path={ckpt}", *unsized], out / "4"))
    assert OmegaConf.load(out / "4" / "config_resolved.yaml").data.image_size == 16

    # labelled images in val/ only: scored (was: "image folder .../train does not exist", then
    # the name-the-folder error)
    other = tmp_path / "other"
    shutil.copytree(root / "train", other / "val")
    evaluate(compose_config("eval", [f"ckpt_path={ckpt}", *folder_data(other)], out / "3"))
    rows = list(csv.DictReader((out / "3" / "predictions.csv").open(newline="")))
    assert len(rows) == len(list((other / "val").rglob("*.png")))
    assert all(row["id"].startswith("val/") for row in rows)
    # neither: what to name
    (tmp_path / "empty").mkdir()
    with pytest.raises(SFTError, match=r"sft-eval scores data\.test_dir \(test\), or without"):
        evaluate(
            compose_config(
                "eval", [f"ckpt_path={ckpt}", *folder_data(tmp_path / "empty")], out / "5"
            )
        )
    # no such data folder at all (moved): that folder named (was: told to name a test folder
    # under it)
    with pytest.raises(SFTError, match=r"none \(data\.data_dir\) does not exist; expected"):
        evaluate(
            compose_config(
                "eval", [f"ckpt_path={ckpt}", *folder_data(tmp_path / "none")], out / "6"
            )
        )


def test_class_folders_right_under_the_data_dir_are_named(tmp_path):
    """The Kaggle layout, `<data_dir>/<class>/...`: the error says data.train_dir=. reads it
    (was: only that `<data_dir>/train` does not exist)."""
    root = two_class_tree(tmp_path / "kaggle", per_class=2)
    for folder in (root / "train").iterdir():
        folder.rename(root / folder.name)
    (root / "train").rmdir()
    dm = instantiate(compose_config("train", folder_data(root), tmp_path / "run").data)
    with pytest.raises(
        SFTError, match=r"folders under .*kaggle are the classes: data\.train_dir=\.$"
    ):
        dm.setup("fit")
    (root / "val").mkdir()  # a split folder is not taken for a class
    (root / "ant").rename(root / "val" / "ant")
    (root / "bee").rename(root / "val" / "bee")
    with pytest.raises(SFTError, match=r"train does not exist; expected .*<images>$"):
        dm.setup("fit")


def test_a_class_folder_given_as_the_data_dir_is_named(tmp_path, caplog):
    """data.data_dir=<root>/train/ant, one level too deep: the error says so, and comes before
    any line about the test folder (was: "no test folder .../ant/test: sft-train skips
    testing", then only that .../ant/train does not exist)."""
    root = two_class_tree(tmp_path / "tree", per_class=2)
    dm = instantiate(
        compose_config("train", folder_data(root / "train" / "ant"), tmp_path / "r").data
    )
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(
            SFTError,
            match=r"ant holds images itself, as a class folder does: data\.data_dir is the "
            r"folder that holds train/<class>/$",
        ),
    ):
        dm.setup("fit")
    assert not [m for m in caplog.messages if "skips testing" in m]


def test_debug_profiler_prints_its_report_and_lightnings_info_lines(tmp_path, data_dir):
    """`debug=profiler`: Lightning's INFO lines and the profiler's report, once, on the console
    and in the run's log, with Lightning's DEBUG lines (were: nowhere; the debug configs'
    logging config removed the handler of Lightning's logger, which does not propagate)."""
    run = tmp_path / "run"
    result = run_module(
        "sft.train",
        "debug=profiler",
        *FAST,
        "data.val_size=64",
        "trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "test=false",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console, log = result.stdout + result.stderr, (run / "debug.log").read_text()
    for line in ("GPU available: False", "`Trainer.fit` stopped", "FIT Profiler Report"):
        assert console.count(line) == 1 and log.count(line) == 1, line
    assert "[lightning.pytorch.trainer.trainer][DEBUG]" in log


def test_validation_by_wall_time_is_accepted(train_cfg, tmp_path):
    """Lightning 2.6 validates by wall time, `trainer.val_check_interval="00:00:00:01"` (as
    its own message for check_val_every_n_epoch=null advises): refused as not a float."""
    timed = ['+trainer.val_check_interval="00:00:00:01"', "trainer.check_val_every_n_epoch=null"]
    metrics = train(train_cfg(*timed, "trainer.max_epochs=1", run_dir=tmp_path / "run"))
    assert "test/acc" in metrics


def test_a_run_that_never_validates_says_so(train_cfg, tmp_path, caplog):
    """max_steps before the first validation (or check_val_every_n_epoch past max_epochs)
    ended "completed" with no validation metric and no ranked checkpoint, without a word (a
    multirun's summary warned)."""
    never = ["trainer.max_epochs=2", "+trainer.max_steps=3", "test=false"]
    said = (
        r"No validation ran: the run trained \d+ steps and ended before its first one \(see "
        r"trainer\.max_steps, .*\), so it has no val/acc_best and ranks no checkpoint"
    )
    with logs_warning(caplog, said), warnings.catch_warnings(record=True) as caught:
        metrics = train(train_cfg(*never, run_dir=tmp_path / "never"))
    assert not [key for key in metrics if key.startswith("val/")]
    # and not Lightning's word beside it: "could not find the monitored key ... HINT: Did you
    # call log('val/acc', value)?"
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        once = ["trainer.max_epochs=1", "test=false"]
        metrics = train(train_cfg(*once, run_dir=tmp_path / "once"))
        assert "val/acc_best" in metrics
        # a resume of the finished run trains nothing: its validations are in its first part
        train(train_cfg(*once, f"resume={tmp_path / 'once'}", run_dir=tmp_path / "once"))
    assert "No validation ran" not in caplog.text


def test_validation_between_optimizer_steps_is_warned(train_cfg, tmp_path, caplog):
    """val_check_interval counts batches: every 2 batches under accumulate_grad_batches=3,
    validations scored the same weights again, early stopping's patience spent on them."""
    between = ["+trainer.accumulate_grad_batches=3", "+trainer.val_check_interval=2"]
    with logs_warning(
        caplog,
        r"^validation every 2 batches \(trainer\.val_check_interval=2\) and an optimizer step every "
        r"3 \(trainer\.accumulate_grad_batches=3\): a validation between steps",
    ):
        train(train_cfg(*between, "trainer.max_epochs=1", "test=false", run_dir=tmp_path / "r"))
    caplog.clear()
    # counted over epochs (check_val_every_n_epoch=null): batch 9 is the 3rd of epoch 1, inside
    # a step of 4 batches (no word: the interval passed the epoch's length)
    across = ["+trainer.val_check_interval=9", "trainer.check_val_every_n_epoch=null"]
    with logs_warning(caplog, r"^validation every 9 batches .* a validation between steps"):
        run = ["+trainer.accumulate_grad_batches=4", *across, "test=false"]
        train(train_cfg(*run, "trainer.max_epochs=2", run_dir=tmp_path / "across"))
    caplog.clear()
    # the interval a multiple of the steps, an epoch's batches not: said so (was: advice to
    # validate at a multiple of 4 batches, which 8 is)
    multiple = ["+trainer.val_check_interval=8", "trainer.check_val_every_n_epoch=null"]
    with logs_warning(caplog, r"between steps .*; an epoch's 6 batches are no multiple of 4, "):
        run = ["+trainer.accumulate_grad_batches=4", *multiple, "test=false"]
        train(train_cfg(*run, "trainer.max_epochs=2", run_dir=tmp_path / "multiple"))
    caplog.clear()
    # at steps; once an epoch (its last batch steps, 6 batches by 4); by wall time (was: a
    # TypeError at train start); over epochs at steps (6 batches by 3)
    timed = ['+trainer.val_check_interval="00:00:00:01"', "trainer.check_val_every_n_epoch=null"]
    for i, validation in enumerate(
        (["+trainer.val_check_interval=3"], ["+trainer.val_check_interval=1.0"], timed, across)
    ):
        per_step = "3" if i in (0, 3) else "4"
        run = [f"+trainer.accumulate_grad_batches={per_step}", *validation, "test=false"]
        with caplog.at_level(logging.WARNING):
            train(train_cfg(*run, "trainer.max_epochs=1", run_dir=tmp_path / f"s{i}"))
    assert "a validation between steps" not in caplog.text


def test_debug_profiler_times_the_run_as_it_trains(tmp_path):
    """debug=profiler timed every op under anomaly detection (debug's default), 4-6x slower
    than the run it profiles, and on the CPU whatever the device or trainer config."""
    profiled = compose_config("train", ["experiment=sst2_minilm", "debug=profiler"], tmp_path)
    assert profiled.trainer.detect_anomaly is False and profiled.trainer.accelerator == "auto"
    on_cpu = compose_config("train", ["trainer=cpu", "debug=profiler"], tmp_path)
    assert on_cpu.trainer.accelerator == "cpu"
    for debug in ("fdr", "limit", "overfit"):  # these debug on the CPU, as before
        debugged = compose_config("train", [f"debug={debug}"], tmp_path)
        assert debugged.trainer.accelerator == "cpu" and debugged.trainer.detect_anomaly


def test_debug_limit_runs_on_a_few_label_training_set(train_cfg, tmp_path):
    """debug=limit took 0.01 of each epoch: refused by Lightning for any training split under
    100 batches (here 6), the few-label ones the README sets up included."""
    metrics = train(train_cfg("debug=limit", run_dir=tmp_path / "run"))
    assert "test/acc" in metrics


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["trainer.val_check_interval=1000"],
            "error: trainer: `val_check_interval` (1000) must be less than or equal to the number "
            "of the training batches (6).",
        ),
        (
            ["+trainer.limit_train_batches=0.01"],
            "error: trainer: You requested to check 0.01 of the `train_dataloader` but 0.01 * 6 < 1.",
        ),
    ],
)
def test_lightning_refusals_during_fit_are_one_error_line(
    overrides, line, tmp_path, data_dir, monkeypatch, capsys
):
    """Lightning refuses these when fit sets up its loops, not when the trainer is built (was:
    a ValueError / MisconfigurationException traceback)."""
    monkeypatch.chdir(tmp_path)
    argv = ["sft-train", *FAST, *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    assert run_entry_point(train_module.main, argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(line)


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=linear_probe"],
        # LoRA freezes the backbone's weights: lr_backbone trains nothing (was: a run that
        # trained nothing, said to train the adapters and head)
        ["adapter=lora", "model.lr_adapter=0", "model.lr_head=0"],
    ],
    ids=["linear_probe", "lora"],
)
def test_nothing_to_fit_is_an_error(train_cfg, overrides):
    """method=linear_probe on a model without `model.linear_probe` froze everything and trained
    at learning rate 0: a run that scored a random head (was: silent)."""
    with pytest.raises(Exception) as raised:  # through Hydra's instantiate
        train(train_cfg(*overrides, "model.linear_probe=null"))
    assert "model.linear_probe is null and no learning rate" in str(find_user_error(raised.value))


def test_a_run_that_failed_before_logging_can_be_run_again_in_its_directory(tmp_path, monkeypatch):
    """`hydra.run.dir=<dir>` again after a run there failed before logging anything (a wrong
    setting): its record holds nothing to keep, so the corrected run goes ahead."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    argv = ["sft-train", *FAST, "trainer.max_epochs=1", "test=false", f"hydra.run.dir={run_dir}"]
    assert run_entry_point(train_module.main, [*argv, "model.num_classes=3"]) == 1
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
    assert run_entry_point(train_module.main, argv) == 0
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    # and its config: sft-compare labels the run by .hydra/overrides.yaml (was: the failed
    # attempt's model.num_classes=3)
    assert "model.num_classes=3" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert not list(run_dir.glob(".hydra/resumed_*"))


def test_a_new_run_never_overwrites_a_runs_checkpoints(train_cfg, tmp_path):
    """`hydra.run.dir=<dir>` given twice: the second run would replace the first's checkpoints
    (was: silently written over); resume= continues it."""
    run_dir = tmp_path / "run"
    train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(SFTError, match=r"already holds a run's checkpoints .* resume="):
        train(train_cfg("trainer.max_epochs=1", "test=false", run_dir=run_dir))
    assert last.read_bytes() == before


@pytest.mark.parametrize(
    ("choice", "said"),
    [
        ("none", "none"),
        # (was: the same error for any option without early stopping)
        ("model_checkpoint", "model_checkpoint"),
        ("[last_checkpoint,model_checkpoint]", "[last_checkpoint,model_checkpoint]"),
    ],
)
def test_callbacks_option_with_an_experiment_that_sets_a_callbacks_setting(tmp_path, choice, said):
    """experiment=cifar10_resnet18 sets callbacks.early_stopping.patience: with callbacks=none
    that setting stood alone, and the run failed on "callbacks.early_stopping: no _target_ (it
    sets patience)", a key the user never wrote."""
    run = tmp_path / "run"
    argv = ["sft-train", "experiment=cifar10_resnet18", f"callbacks={choice}", *FAST]
    argv += ["+trainer.max_steps=2", "test=false", f"hydra.run.dir={run}"]
    assert run_entry_point(train_module.main, argv) == 0
    log = (run / "train.log").read_text()
    assert f"callbacks={said}: callbacks.early_stopping (patience, set by another config)" in log
    assert choice != "none" or not list(run.rglob("*.ckpt"))
    # set on the command line, such an entry is a mistake of the user's: one error line
    argv += ["+callbacks.early_stopping.min_delta=0.1"]
    argv[-2] = f"hydra.run.dir={tmp_path / 'typed'}"
    assert run_entry_point(train_module.main, argv) == 1


def test_a_run_without_checkpoint_callbacks_writes_no_checkpoints(train_cfg, tmp_path, caplog):
    """`callbacks=none`: Lightning added its own checkpoint callback, which saved under
    `tensorboard/checkpoints/`, where `resume=auto` never looks (it started afresh), and the
    run called that file its best checkpoint. Now none is written, and the log says so."""
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        train(train_cfg("callbacks=none", "trainer.max_epochs=1", run_dir=run_dir))
    assert not list(run_dir.rglob("*.ckpt"))
    assert "this run writes no checkpoints" in caplog.text
    assert "Testing the final weights (no checkpoints in this run)." in caplog.text


def test_fast_dev_run_tests_the_final_weights_without_a_warning(train_cfg, tmp_path, caplog):
    """`debug=fdr`: Lightning's fast_dev_run ranks no checkpoints by design, so every such run
    warned "No best checkpoint recorded"; now an info line says why the final weights are
    tested."""
    with caplog.at_level(logging.INFO):
        train(train_cfg("debug=fdr", run_dir=tmp_path / "run"))
    assert "Testing the final weights (fast_dev_run ranks no checkpoints)." in caplog.text
    assert "No best checkpoint" not in caplog.text


def test_lightnings_own_checkpoint_is_not_called_the_best(train_cfg, tmp_path, caplog):
    """`callbacks=none trainer.enable_checkpointing=true`: Lightning's default callback ranks
    no metric, so the checkpoint tested is its last one (was: logged as the best checkpoint)."""
    with caplog.at_level(logging.INFO):
        train(
            train_cfg(
                "callbacks=none",
                "+trainer.enable_checkpointing=true",
                "trainer.max_epochs=1",
                run_dir=tmp_path / "run",
            )
        )
    assert "Tested the last checkpoint (no monitored metric): " in caplog.text
    assert "Best checkpoint:" not in caplog.text


def test_checkpoints_kept_from_validations_within_an_epoch_are_not_written_over(
    train_cfg, tmp_path
):
    """save_top_k=-1 with two validations per epoch: both were saved as epoch_000.ckpt, the
    second over the first, so a best state in the top k could be lost."""
    run_dir = tmp_path / "run"
    keep_all = ["callbacks.model_checkpoint.save_top_k=-1", "+trainer.val_check_interval=0.5"]
    train(train_cfg(*keep_all, "trainer.max_epochs=2", "test=false", run_dir=run_dir))
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch_*.ckpt"))
    assert names == [
        "epoch_000-step_000003.ckpt",
        "epoch_000-step_000006.ckpt",
        "epoch_001-step_000009.ckpt",
        "epoch_001-step_000012.ckpt",
    ]


@pytest.mark.parametrize(
    ("setting", "hint"),
    [("+trainer.logger=false", "~logger for none"), ("+trainer.callbacks=[]", "callbacks=none")],
)
def test_trainer_settings_that_config_groups_give_are_refused(train_cfg, tmp_path, setting, hint):
    """`+trainer.logger=false`: recorded in the config, and passed over (the `logger` group's
    loggers were given to the Trainer), so the run logged to TensorBoard anyway."""
    with pytest.raises(SFTError, match=rf"^trainer\.(logger|callbacks)=.*: sft builds .*{hint}"):
        train(train_cfg(setting, "trainer.max_epochs=1", run_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_users_own_checkpoint_callback_beside_sfts(train_cfg, tmp_path, caplog):
    """A Checkpoint of the user's that is no ModelCheckpoint (no monitor, no save_top_k) ended
    every run before training with an AttributeError; the best checkpoint is still tested."""
    own = "+callbacks.own._target_=helpers.probes.OwnCheckpoint"
    with caplog.at_level(logging.INFO):
        metrics = train(train_cfg(own, "trainer.max_epochs=1", run_dir=tmp_path / "run"))
    assert "test/acc" in metrics
    assert "Best checkpoint: " in caplog.text


def test_a_monitored_loss_is_ranked_lowest_first(tmp_path):
    """`callbacks.model_checkpoint.monitor=val/loss` (or early stopping's) kept the configs'
    `mode: max`: the checkpoint of the highest loss was the best one, and early stopping
    stopped while the loss fell."""
    overrides = ["callbacks=[default,early_stopping]"]
    cfg = compose_config("train", overrides, tmp_path)
    assert cfg.callbacks.model_checkpoint.mode == cfg.callbacks.early_stopping.mode == "max"
    overrides += [f"callbacks.{c}.monitor=val/loss" for c in ("model_checkpoint", "early_stopping")]
    cfg = compose_config("train", overrides, tmp_path)
    assert cfg.callbacks.model_checkpoint.mode == cfg.callbacks.early_stopping.mode == "min"
    # as given, when given
    cfg = compose_config("train", [*overrides, "callbacks.model_checkpoint.mode=max"], tmp_path)
    assert cfg.callbacks.model_checkpoint.mode == "max"


def test_the_best_checkpoint_is_tested_whatever_the_callbacks_order(train_cfg, tmp_path, caplog):
    """`callbacks=[last_checkpoint,model_checkpoint]`: Lightning's checkpoint_callback is the
    first in the list, last_checkpoint's, so last.ckpt was tested (logged as "no monitored
    metric") while model_checkpoint kept the best one."""
    run_dir = tmp_path / "run"
    order = ["callbacks=[last_checkpoint,model_checkpoint]", "trainer.max_epochs=2"]
    with caplog.at_level(logging.INFO):
        train(train_cfg(*order, run_dir=run_dir))
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    assert f"Best checkpoint: {best}" in caplog.text
    assert "no monitored metric" not in caplog.text


@pytest.mark.parametrize(
    "leaves, found",
    [
        ([], "checkpoints"),
        # no checkpoint callback (was: Lightning's own, in tensorboard/checkpoints/, overwritten,
        # and both runs' event files in one tensorboard/)
        (["callbacks=none"], "record"),
        # a run without checkpoints (as the studies run) leaves only its result.json (was:
        # replaced by the second run's)
        (
            [
                *(f"callbacks.{c}=null" for c in ("model_checkpoint", "last_checkpoint")),
                "callbacks.step_checkpoint=null",
                "+trainer.enable_checkpointing=false",
            ],
            "record",
        ),
    ],
)
def test_a_run_directory_given_twice_is_refused_before_hydra_writes_in_it(
    tmp_path, monkeypatch, capsys, leaves, found
):
    """sft-train hydra.run.dir=<a run's directory>, a second time: refused before Hydra adds its
    config (.hydra/resumed_<time>/) and log lines to that run (was: refused in train(), after)."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    argv = [
        "sft-train",
        *FAST,
        *leaves,
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.run.dir={run_dir}",
    ]
    assert run_entry_point(train_module.main, argv) == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_entry_point(train_module.main, argv) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"error: {run_dir} already holds a run's {found}")
    )
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return
    # resume=auto there has no last.ckpt to continue: it is refused as a new run (was: trained
    # afresh over the run's checkpoints and record)
    assert run_entry_point(train_module.main, [*argv, "resume=auto"]) == 1
    assert f"error: {run_dir} already holds a run's {found}" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@contextlib.contextmanager
def held_by_another_process(folder: Path):
    """`folder` marked in use (sft.runs.lock) by a live process, as a run or sweep still
    training there marks it; killed (SIGKILL) at the end."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sft.runs.lock import hold; hold(sys.argv[1], 'x'); "
            "print('held', flush=True); time.sleep(600)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_directory_in_use_by_a_running_process_is_refused(sweep, tmp_path, monkeypatch, capsys):
    """A run given the hydra.run.dir of a run still training before its first checkpoint (or
    resume= of one still training), and a second sweep into the hydra.sweep.dir of one whose
    jobs were running, trained in the same folders: their checkpoints, records and TensorBoard
    curves mixed, and both exited 0. Now the second is one error line naming the process, and
    the folder is free once that process has ended, however it ended (here SIGKILL)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "busy"
    setting = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    argv = ["sft-train", *(["-m"] if sweep else []), *FAST, "trainer.max_steps=1", "test=false"]
    argv.append(f"{setting}={folder}")
    with held_by_another_process(folder) as pid:
        assert run_entry_point(train_module.main, argv) == 1
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"error: {folder} is in use by an sft run or sweep still running")
        assert f"(pid {pid} on " in last and last.endswith(f"another {setting}")
        assert [p.name for p in folder.iterdir()] == [".sft.lock"]
    assert run_entry_point(train_module.main, argv) == 0


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_log_dir_that_is_a_dangling_link_is_one_error(sweep, tmp_path, monkeypatch, capsys):
    """SFT_OUTPUT_DIR (paths.log_dir) a link to a folder that is gone, or one Hydra cannot make
    for any reason (a read-only parent, a link loop): Hydra's traceback of the OSError (here
    "FileExistsError: File exists", which misled) instead of one line."""
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "gone")
    argv = ["sft-train", *(["-m"] if sweep else []), *FAST, f"paths.log_dir={link}"]
    assert run_entry_point(train_module.main, argv) == 1
    assert not (tmp_path / "gone").exists()  # nothing is made for a refused run
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: the run directory ") and last.endswith(
        f"cannot be made: {link}: a link to {tmp_path / 'gone'}, which leads to no folder; give "
        f"another paths.log_dir (or hydra.{'sweep' if sweep else 'run'}.dir)"
    ), last


@pytest.mark.parametrize("sweep", [False, True])
def test_a_log_dir_that_is_a_file_is_one_error(sweep, tmp_path, monkeypatch, capsys):
    """paths.log_dir=<a file> (was: NotADirectoryError traceback from Hydra making the run
    directory under it)."""
    monkeypatch.chdir(tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    argv = ["sft-train", *(["-m"] if sweep else []), *FAST, f"paths.log_dir={a_file}"]
    assert run_entry_point(train_module.main, argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {a_file} is a file, not a folder: the run directory {a_file}/")
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize(
    "length", [["trainer.max_epochs=1"], ["trainer.max_steps=3", "+trainer.val_check_interval=3"]]
)
def test_a_finished_run_resumed_keeps_its_recorded_metrics(tmp_path, monkeypatch, length):
    """resume= of a finished run (as re-running a sweep into its directory does to its finished
    jobs) trains nothing more and tests again: its result.json kept only the test metrics (was:
    val/acc_best and every other metric of the run dropped, so sweep summaries lost them), nor
    its epochs (a run ended by max_steps inside its first epoch went from 1 to 0; it completed
    none, and both parts record 0); nor its resolved config (was: the resume's)."""
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    argv = ["sft-train", *FAST, *length, "+trainer.limit_test_batches=1"]
    assert run_entry_point(train_module.main, [*argv, f"hydra.run.dir={run_dir}"]) == 0
    before = json.loads((run_dir / "result.json").read_text())
    first = before["metrics"]
    assert {"val/acc_best", "test/acc"} <= set(first)
    resolved = (run_dir / "config_resolved.yaml").read_text()
    assert run_entry_point(train_module.main, [*argv, f"resume={run_dir}"]) == 0
    # the first part's resolved config is kept, the resume's beside its Hydra config (was:
    # written over)
    assert (run_dir / "config_resolved.yaml").read_text() == resolved
    (part,) = (run_dir / ".hydra").glob("resumed_*/config_resolved.yaml")
    assert f"resume: {run_dir}" in part.read_text()
    again = json.loads((run_dir / "result.json").read_text())
    assert again["status"] == "completed" and again["metrics"] == first
    completed = 1 if length == ["trainer.max_epochs=1"] else 0
    assert again["epochs"] == before["epochs"] == completed
    # the run's time is both parts' (was: the second's second of testing alone)
    assert again["started_at"] == before["started_at"]
    assert again["wall_time_s"] > before["wall_time_s"]


def test_a_moved_run_resumes_with_its_own_best_checkpoint(tmp_path, monkeypatch, caplog):
    """resume= of a finished run whose directory was moved: its checkpoint record (absolute
    paths) is read as the same files in the new place, and the test loads the best checkpoint
    there (was: Lightning dropped the record on the changed dirpath but kept the old
    best_model_path: FileNotFoundError for the old place, and the run's result.json, complete
    before, became a failure without metrics)."""
    monkeypatch.chdir(tmp_path)
    argv = ["sft-train", *FAST, "trainer.max_epochs=1", "+trainer.limit_test_batches=1"]
    first = tmp_path / "first"
    assert run_entry_point(train_module.main, [*argv, f"hydra.run.dir={first}"]) == 0
    recorded = json.loads((first / "result.json").read_text())["metrics"]
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    state = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)

    follow_moved_run(state, moved / "checkpoints" / "last.ckpt")
    warned = [r for r in caplog.records if r.name == "sft.runs.resume" and r.levelname == "WARNING"]
    (record,) = [
        v
        for k, v in state["callbacks"].items()
        if k.startswith("ModelCheckpoint{'monitor': 'val/acc'")
    ]
    assert record["dirpath"] == str((moved / "checkpoints").resolve())
    assert record["best_model_path"] == str((moved / "checkpoints" / "epoch_000.ckpt").resolve())
    assert list(record["best_k_models"]) == [record["best_model_path"]]
    assert record["best_model_score"] is not None and not warned

    # finished: the resumed run validates nothing more and tests its recorded best
    assert run_entry_point(train_module.main, [*argv, f"resume={moved}"]) == 0
    again = json.loads((moved / "result.json").read_text())
    assert again["status"] == "completed" and again["metrics"] == recorded


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            "width:16",
            "does not fit this run's model (another setup): it has other shapes: backbone.",
        ),
        # the weights fit, the optimizer's groups do not (was: Lightning's ValueError traceback
        # from restoring the optimizer, and the files rewritten)
        (
            "model.freeze_backbone=true",
            "its optimizer holds 4 parameter groups of [1, 1, 3, 6] weights, this run's would "
            "hold 2 of [1, 1] (model.freeze_backbone=False -> True): ckpt_path= and resume= "
            "continue the optimizer as it was; set the model settings the checkpoint was trained "
            "with, or start a new run from its backbone with +model.backbone.checkpoint=",
        ),
    ],
)
def test_a_refused_resume_leaves_the_runs_files_as_they_were(
    change, error, tmp_path, monkeypatch, capsys
):
    """resume= with a model its checkpoint does not fit is refused before anything is written
    (was: the finished run's result.json became "failed" and its config_resolved.yaml described
    the refused model)."""
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    argv = ["sft-train", *FAST, "trainer.max_epochs=1", "test=false", f"paths.log_dir={tmp_path}"]
    assert run_entry_point(train_module.main, [*argv, f"hydra.run.dir={run_dir}"]) == 0
    before = {p: (run_dir / p).read_bytes() for p in ("result.json", "config_resolved.yaml")}
    assert json.loads(before["result.json"])["status"] == "completed"
    changed = [a.replace("width:8", change) for a in argv] if "width" in change else [*argv, change]
    capsys.readouterr()
    assert run_entry_point(train_module.main, [*changed, f"resume={run_dir}"]) == 1
    assert {p: (run_dir / p).read_bytes() for p in before} == before
    assert error in capsys.readouterr().err.strip().splitlines()[-1]


def test_text_data_num_workers_is_checked(tmp_path):
    """Was: torch's ValueError traceback when the first loader was built."""
    cfg = compose_config("train", [*TINY_TEXT, "data.num_workers=-1"], tmp_path)
    with pytest.raises(SFTError, match=r"^data\.num_workers: expected an integer >= 0, got -1$"):
        train(cfg)


def test_ddp_with_synced_batch_norms_on_the_cpu_is_one_error(tmp_path, monkeypatch, capsys):
    """`trainer=ddp trainer.accelerator=cpu`: conf/trainer/ddp.yaml syncs batch norms, which
    torch does on GPUs only (was: its ValueError traceback from every DDP rank)."""
    monkeypatch.chdir(tmp_path)
    argv = ["sft-train", *FAST, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    assert run_entry_point(train_module.main, [*argv, f"hydra.run.dir={tmp_path / 'run'}"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: trainer.sync_batchnorm=true needs GPUs")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_is_one_error_before_anything_is_built(trainer, train_cfg):
    """Was: the model and data built, ~150 config lines printed, then `trainer: No supported
    gpu backend found!`, which names no setting."""
    with pytest.raises(
        SFTError, match=r"^trainer\.accelerator=gpu but this machine .* no CUDA GPU"
    ):
        # FAST runs on the CPU: the GPU setting of the trainer config, as it ships
        train(train_cfg(f"trainer={trainer}", "trainer.accelerator=gpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_eval_with_a_gpu_trainer_without_a_gpu_is_one_error_before_anything_is_written(
    checkpoints, tmp_path
):
    """`sft-eval trainer=gpu` (as the README's trainer=gpu examples suggest): was the model and
    data built, the config written, then Lightning's `No supported gpu backend found!`."""
    out = tmp_path / "eval"
    cfg = compose_config("eval", [f"ckpt_path={checkpoints['image']}", "trainer=gpu"], out)
    with pytest.raises(SFTError, match=r"^trainer\.accelerator=gpu but this machine .* no CUDA"):
        evaluate(cfg)
    assert not (out / "config_resolved.yaml").exists()


def test_image_runs_train_in_double_precision(train_cfg):
    """`trainer.precision=64-true`: the image batches made from uint8 after Lightning's input
    conversion, and the linear probe's, are float64 too (was: "Input type (float) and bias type
    (double)")."""
    overrides = ["trainer.precision=64-true", "trainer.max_epochs=1", "test=false"]
    metrics = train(train_cfg(*overrides, "model.linear_probe={max_iter:5}"))
    assert 0.0 <= metrics["val/acc"] <= 1.0


def test_debug_overfit_runs_its_epochs_without_early_stopping(tmp_path):
    """Held-out accuracy does not rise while 3 batches are memorised: early stopping ended
    `debug=overfit` after 8 of its 20 epochs (was: silently)."""
    cfg = compose_config("train", ["debug=overfit"], tmp_path)
    assert cfg.trainer.max_epochs == 20 and cfg.callbacks.get("early_stopping") is None


def test_channels_last_on_a_text_backbone_says_it_changes_nothing(tmp_path, caplog):
    """model.channels_last=true with a text model: a warning (was: accepted without a word)."""
    cfg = compose_config("train", [*TINY_TEXT, "model.channels_last=true"], tmp_path)
    with logs_warning(caplog, r"model\.channels_last=true lays out image batches"):
        instantiate(cfg.model)


def test_a_relative_data_dir_is_found_by_sft_eval_from_another_directory(tmp_path, monkeypatch):
    """`sft-train data.data_dir=tree` (relative), then `sft-eval ckpt_path=...` run elsewhere:
    the checkpoint keeps the folder as an absolute path (was: `tree` as typed, looked up from
    sft-eval's directory: `error: ... tree/train does not exist`)."""
    from PIL import Image

    for c, name in enumerate(["ant", "bee"]):
        (tmp_path / "tree" / "train" / name).mkdir(parents=True)
        for j in range(8):
            Image.new("RGB", (20, 20), (200 * c, 10 * j, 60)).save(
                tmp_path / "tree" / "train" / name / f"{j}.png"
            )
    small_cnn = "{_target_:sft.models.backbones.create_backbone,name:small_cnn,width:8}"
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    cfg = compose_config(
        "train",
        [
            "data=image_folder",
            "data.data_dir=tree",
            "data.image_size=16",
            "data.batch_size=4",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "model.num_classes=2",
            "~model.backbone",
            f"+model.backbone={small_cnn}",
            "trainer.max_epochs=1",
        ],
        run,
    )
    train(cfg)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ckpt = run / "checkpoints" / "last.ckpt"
    metrics = evaluate(compose_config("eval", [f"ckpt_path={ckpt}"], tmp_path / "eval"))
    assert 0.0 <= metrics["val/acc"] <= 1.0


@pytest.mark.parametrize("multirun", [[], ["-m"]])
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../escape", "is a folder under paths.log_dir/<task>/"),
        ("exp/../../../escape", "is a folder under paths.log_dir/<task>/"),
        ("", "is a folder under paths.log_dir/<task>/"),
        (".", "is a folder under paths.log_dir/<task>/"),
        ("[a]", "is one folder name, not a list or mapping"),  # (was: a folder named ['a'])
    ],
)
def test_a_run_name_cannot_put_the_run_outside_the_log_dir(
    tmp_path, monkeypatch, capsys, name, why, multirun
):
    """`name=` is a folder under paths.log_dir/<task>/: one naming '..' is refused before
    anything is made (was: `name=../../escape` wrote the run outside it), as is an empty one
    (`name=`, `name=.`: the run among the experiments' folders, paths.log_dir/train/<time>)."""
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "a" / "outputs"
    argv = ["sft-train", *multirun, *FAST, f"paths.log_dir={logs}", f"name={name}"]
    assert run_entry_point(train_module.main, argv) == 1
    shown = "['a']" if name == "[a]" else name
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"error: name={shown}: a run's name {why}")
    )
    assert not (tmp_path / "a" / "escape").exists() and not logs.exists()


def test_the_confusion_matrix_is_drawn_without_a_layout_warning(tmp_path):
    """sft-eval printed matplotlib's "The figure layout has changed to tight" on every run."""
    import warnings
    from types import SimpleNamespace

    from sft.jobs.eval import save_confusion_matrix

    names = [f"a rather long class name {i}" for i in range(12)]
    probs = torch.softmax(torch.randn(50, 12, generator=torch.Generator().manual_seed(0)), 1)
    labels = torch.arange(50) % 12
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning)
        save_confusion_matrix(
            tmp_path / "cm.png", probs, labels, names, SimpleNamespace(loggers=[])
        )
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_class_names_the_default_font_lacks_are_drawn_or_said_once(tmp_path, caplog):
    """Class names in other scripts gave matplotlib's "Glyph ... missing from font(s) DejaVu
    Sans" warning per character, and boxes, even where an installed font has them: an
    installed font that has them draws them (STIXGeneral, shipped with matplotlib, has the
    watch sign), and characters no font has are said in one line."""
    import warnings
    from types import SimpleNamespace

    import matplotlib

    from sft.jobs.eval import save_confusion_matrix
    from sft.utils.fonts import families_drawing

    families, undrawn = families_drawing(["\u231a watch", "cat"])
    assert "STIXGeneral" in families and undrawn == ""
    # a user's own fallback list is read whole (was: its first font alone)
    with matplotlib.rc_context({"font.family": ["DejaVu Sans", "STIXGeneral"]}):
        assert families_drawing(["\u231a watch"]) == (["DejaVu Sans", "STIXGeneral"], "")
    names = ["\u231a watch", "\u6b63\u9762", "\u8d1f\u9762"]  # the last two: Chinese
    probs = torch.softmax(torch.randn(30, 3, generator=torch.Generator().manual_seed(0)), 1)
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="sft.jobs.eval"):
        warnings.filterwarnings("error", category=UserWarning)
        save_confusion_matrix(
            tmp_path / "cm.png", probs, torch.arange(30) % 3, names, SimpleNamespace(loggers=[])
        )
    assert (tmp_path / "cm.png").stat().st_size > 1000
    said = [m for m in caplog.messages if "no installed font" in m]
    if "\u6b63" in families_drawing(names)[1]:  # no CJK font installed (this machine)
        assert said == [
            f"{tmp_path / 'cm.png'}: no installed font has the characters "
            "'\u6b63\u8d1f\u9762' of class names: they are drawn as boxes (install a font that "
            "has them, e.g. Noto Sans CJK)"
        ]
    else:
        assert said == []


def test_the_confusion_matrix_of_many_or_dollar_named_classes_reaches_tensorboard(tmp_path):
    """Class names with `$$` (price tiers) raised matplotlib's math-text ParseException after
    scoring; with 40+ classes the figure never reached TensorBoard (added to the writer the
    test had closed, which nothing closed again)."""
    from types import SimpleNamespace

    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sft.jobs.eval import save_confusion_matrix

    names = ["$", "$$", "$$$", "$$$$"] + [f"class {i}" for i in range(56)]
    probs = torch.softmax(torch.randn(300, 60, generator=torch.Generator().manual_seed(0)), 1)
    labels = torch.arange(300) % 60
    logger = TensorBoardLogger(save_dir=tmp_path / "tb", name=None, version="")
    logger.log_metrics({"test/acc": 0.5}, step=0)
    logger.finalize("success")  # as the test's end leaves it
    save_confusion_matrix(
        tmp_path / "cm.png", probs, labels, names, SimpleNamespace(loggers=[logger])
    )
    assert (tmp_path / "cm.png").stat().st_size > 1000
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["test/confusion_matrix"]


def test_an_image_model_made_for_another_input_size_is_one_error_line(tmp_path, capsys):
    """timm's fixed-size models assert their input size, in the linear probe's first batch
    (was: timm's AssertionError and a Hydra traceback)."""
    root = two_class_tree(tmp_path / "tree", per_class=4)
    vit = "{_target_:sft.models.backbones.create_backbone,name:timm,model_name:test_maxvit}"
    argv = [
        "sft-train",
        *folder_data(root),
        "model.num_classes=2",
        "~model.backbone",
        f"+model.backbone={vit}",
        "trainer.max_steps=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    assert run_entry_point(train_module.main, argv) == 1
    err = capsys.readouterr().err
    assert (
        "error: model.backbone: MaxxVit refused images at the data's size "
        "(model.backbone.input_size=null) (height (4) must be divisible by window (5)); set "
        "model.backbone.input_size to a size it takes"
    ) in err
    assert "Traceback" not in err


def test_eval_warns_when_the_tokenizer_is_not_the_one_the_model_trained_with(
    checkpoints, tmp_path, caplog
):
    """A model folder whose tokenizer files were replaced (or `+data.tokenizer=` naming another)
    scored with other token ids than it learnt, silently (val/acc 0.551 -> 0.496, no word)."""
    from transformers import AutoTokenizer

    from sft.hub import resolve_model_name

    other = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    other.add_tokens(["unheard-of-word"])
    other.save_pretrained(tmp_path / "other")
    args = [
        f"ckpt_path={checkpoints['text']}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_predict_batches=1",
    ]
    warning = "is not the one the model was trained with"
    evaluate(compose_config("eval", args, tmp_path / "same"))
    assert warning not in caplog.text
    evaluate(
        compose_config("eval", [*args, f"+data.tokenizer={tmp_path / 'other'}"], tmp_path / "o")
    )
    assert f"tokenizer '{tmp_path / 'other'}' {warning}" in caplog.text


def test_a_checkpoint_whose_model_folder_moved_says_how_to_point_at_it(checkpoints, tmp_path):
    """Was `could not load model '<folder>': no such folder`, with no way out: sft-eval and
    sft-predict refuse model overrides."""
    from sft.models import load_classifier
    from sft.utils.checkpoint_io import read_checkpoint

    checkpoint = read_checkpoint(checkpoints["text"])
    gone = tmp_path / "models" / "bert"
    checkpoint["hyper_parameters"]["backbone"]["model_name_or_path"] = str(gone)
    with pytest.raises(SFTError) as err:
        load_classifier(checkpoints["text"], checkpoint)
    message = str(err.value)
    assert "\n" not in message
    assert f"its model reads model.backbone.model_name_or_path={gone}, which no longer" in message
    assert f"put it back, or link it there (ln -s <its new place> {gone})" in message


def test_a_small_checkpoint_whose_base_weights_file_moved_says_so(checkpoints, tmp_path):
    """adapter.save_only_trainable leaves the base weights out: they are read from the
    backbone's checkpoint= file (was: `backbone checkpoint not found`, without why)."""
    from sft.models import load_classifier
    from sft.models.adapters import BASE_WEIGHTS
    from sft.utils.checkpoint_io import read_checkpoint

    gone = tmp_path / "base.pt"
    checkpoint = read_checkpoint(checkpoints["text"])
    checkpoint["hyper_parameters"]["backbone"]["checkpoint"] = str(gone)
    load_classifier(checkpoints["text"], checkpoint)  # the weights are in it: not read
    checkpoint[BASE_WEIGHTS] = {}
    with pytest.raises(SFTError, match=r"base\.pt, which no longer exists \(its base weights, "):
        load_classifier(checkpoints["text"], checkpoint)


def test_a_checkpoint_from_before_tokenizer_digests_loads_without_a_warning(
    checkpoints, tmp_path, caplog
):
    from sft.contracts import TOKENIZER_DIGEST
    from sft.inference.bundle import load_bundle
    from sft.utils.checkpoint_io import read_checkpoint

    checkpoint = read_checkpoint(checkpoints["text"])
    del checkpoint[TOKENIZER_DIGEST]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    bundle = load_bundle(old)
    assert bundle.model.input_spec.tokenizer_digest is None
    assert len(bundle.datamodule.tokenizer) == 30522
    assert "is not the one the model was trained with" not in caplog.text


def test_required_settings_given_positionally_are_not_missing():
    """Hydra's `_args_` fills required parameters by position (StochasticWeightAveraging's
    swa_lrs), as `_partial_` leaves them for later: neither is a missing value."""
    swa = {"_target_": "lightning.pytorch.callbacks.StochasticWeightAveraging"}
    check_config_types({**swa, "_args_": [0.01]}, "callbacks.swa")
    check_config_types({**swa, "_partial_": True}, "callbacks.swa")
    with pytest.raises(SFTError, match=r"^missing value for callbacks.swa.swa_lrs: "):
        check_config_types(swa, "callbacks.swa")


MY_MODELS = """
from sft.models import SFTClassifier


class MyClassifier(SFTClassifier):  # as the README writes one
    def __init__(self, **kwargs):
        super().__init__(**kwargs)


class WithOwnSetting(SFTClassifier):
    def __init__(self, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.label_smoothing = label_smoothing


class PassesArgsOn(SFTClassifier):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


class ReadsItsKwargs(SFTClassifier):
    def __init__(self, **kwargs):
        self.extra = kwargs.pop("extra", None)
        super().__init__(**kwargs)
"""


def test_a_model_of_ones_own_that_hands_its_kwargs_on_is_checked_as_sfts(tmp_path, monkeypatch):
    """A model subclass as the README writes one (`__init__(self, **kwargs)`, passed on to
    SFTClassifier's): a misspelt key, a value out of range or of the wrong type is the one line
    that sft's own model gets (was: Hydra's "Error in call to target" with a TypeError or
    torchmetrics' ValueError). A subclass that reads its kwargs itself is left unchecked."""
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    backbone = {"_target_": "sft.models.backbones.create_backbone", "name": "small_cnn"}
    model = {"backbone": backbone, "num_classes": 10}
    mine = {"_target_": "my_models.MyClassifier", **model}
    with pytest.raises(
        SFTError, match=r"^model\.lr_hed: MyClassifier takes no such setting \(did you mean 'lr_h"
    ):
        check_config_types({**mine, "lr_hed": 0.1}, "model")
    with pytest.raises(SFTError, match=r"^model\.num_classes: expected an integer >= 2, got 1$"):
        check_config_types({**mine, "num_classes": 1}, "model")
    with pytest.raises(SFTError, match=r"^model\.lr_head: expected a float >= 0, got 'abc'$"):
        check_config_types({**mine, "lr_head": "abc"}, "model")
    with pytest.raises(SFTError, match=r"^missing value for model\.num_classes: "):
        check_config_types({"_target_": "my_models.MyClassifier", "backbone": backbone}, "model")
    own = {"_target_": "my_models.WithOwnSetting", **model}
    check_config_types({**own, "label_smoothing": 0.1}, "model")
    with pytest.raises(SFTError, match=r"^model\.label_smoothing: expected a float, got 'x'$"):
        check_config_types({**own, "label_smoothing": "x"}, "model")
    with pytest.raises(SFTError, match=r"^model\.lr_hed: WithOwnSetting takes no such setting"):
        check_config_types({**own, "lr_hed": 0.1}, "model")
    check_config_types({"_target_": "my_models.ReadsItsKwargs", **model, "extra": 1}, "model")
    # `*args` handed on too: none of the base's parameters is given by position
    check_config_types({"_target_": "my_models.PassesArgsOn", **model}, "model")
    with pytest.raises(SFTError, match=r"^model\.lr_hed: PassesArgsOn takes no such setting"):
        check_config_types({"_target_": "my_models.PassesArgsOn", **model, "lr_hed": 0.1}, "model")
    lstm = {"_target_": "torch.nn.LSTM", "input_size": 8, "hidden_size": 4}  # ("LSTM", *args)
    check_config_types(lstm, "model.backbone")
    # Lightning's TensorBoardLogger hands its **kwargs to a base that keeps them (for
    # SummaryWriter): any key is its to take
    tensorboard = {"_target_": "lightning.pytorch.loggers.TensorBoardLogger", "save_dir": "x"}
    check_config_types({**tensorboard, "purge_step": 3}, "logger.tensorboard")


def test_a_resumed_image_folder_run_keeps_the_size_it_trained_at():
    """data.image_size is null now (the backbone's size): a run trained before at 32 px would
    have resumed at 128 px, without a word; like its normalisation, it keeps its own."""
    from omegaconf import OmegaConf

    from sft.jobs.train import keep_trained_inputs

    data = OmegaConf.create({"image_size": None, "mean": None, "std": None})
    trained = {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    keep_trained_inputs(data, {"datamodule_hyper_parameters": trained}, Path("last.ckpt"))
    assert data.image_size == 32 and list(data.mean) == [0.5] * 3


def test_a_single_run_warns_of_an_optimized_metric_it_did_not_log(tmp_path, monkeypatch, capsys):
    """`optimized_metric=val/accc` (a typo): was silent on a single run, until a sweep of it
    ranked nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = [
        "sft-train",
        *FAST,
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "test=false",
        "optimized_metric=val/accc",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path}",
    ]
    assert run_entry_point(train_module.main, argv) == 0
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert "optimized_metric=val/accc was not logged by this run (it logged: " in err
    assert "val/acc_best" in err.split("val/accc was not logged", 1)[1]


def test_resuming_a_run_still_training_before_its_first_checkpoint_says_it_is_in_use(
    tmp_path, monkeypatch, capsys
):
    """resume= of a run that was still training and had saved no last.ckpt yet: "last.ckpt
    does not exist, nothing to resume from", as if the run had ended without one."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "busy"
    folder.mkdir()
    argv = ["sft-train", *FAST, "trainer.max_steps=1", "test=false", f"resume={folder}"]
    with held_by_another_process(folder) as pid:
        assert run_entry_point(train_module.main, argv) == 1
        last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"error: resume={folder}: {folder} is in use by an sft run or sweep still running (pid "
        f"{pid} on {socket.gethostname()}): wait for it to end, then resume it"
    )


def test_max_steps_past_the_epochs_end_is_warned(train_cfg, caplog):
    """`trainer.max_epochs=1 trainer.max_steps=50` trained one epoch's 6 steps without a word
    (HF Trainer's max_steps overrides its epochs; Lightning stops at whichever comes first)."""
    cfg = train_cfg("trainer.max_epochs=1", "++trainer.max_steps=50", "test=false")
    warning = (
        "trainer.max_steps=50: trainer.max_epochs=1 ends the run first, after 6 optimizer steps "
        "(the run stops at whichever comes first); set trainer.max_epochs=-1 to train for "
        "max_steps"
    )
    with logs_warning(caplog, "^" + re.escape(warning)):
        train(cfg)


def test_an_image_size_the_model_resizes_away_is_warned(tmp_path, caplog):
    """`data.image_size=24` beside `model.backbone.input_size=16`: images decoded at 24 px were
    resized to 16 by the model without a word (the timm user's --img-size is input_size)."""
    root = two_class_tree(tmp_path / "tree", per_class=6)
    overrides = [
        *SMALL_CNN,
        *folder_data(root),
        "data.image_size=24",
        "+model.backbone.input_size=16",
        "debug=fdr",
    ]
    warning = (
        "data.image_size=24: images are decoded at 24 px, and the model resizes them to 16 px "
        "(model.backbone.input_size), the size it trains and predicts at: set "
        "model.backbone.input_size=24 to train at 24 px"
    )
    with logs_warning(caplog, "^" + re.escape(warning)):
        train(compose_config("train", overrides, tmp_path / "run"))
    caplog.clear()
    same = [*overrides[:-2], "+model.backbone.input_size=24", "debug=fdr"]
    with caplog.at_level(logging.WARNING):
        train(compose_config("train", same, tmp_path / "same"))
    assert not [m for m in logged_warnings(caplog) if "resizes them" in m]


def test_a_run_trains_on_timm_style_augmentation(train_cfg):
    """A random-resized crop, RandAugment, random erasing, MixUp and CutMix with label smoothing:
    the loss takes the batches' soft labels, train/acc scores each example's larger share, and
    validation and the linear probe see the images as they are."""
    cfg = train_cfg(
        "data.crop_scale=[0.35,1]",
        "data.rand_augment=9",
        "data.random_erasing=0.25",
        "data.mixup_alpha=0.8",
        "data.cutmix_alpha=1.0",
        "model.label_smoothing=0.1",
        "++trainer.max_steps=3",
        "test=false",
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss_epoch"]) and 0 <= metrics["train/acc"] <= 1
