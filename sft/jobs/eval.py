"""The evaluation job (`sft-eval`): checkpoint -> test metrics, confusion matrix (PNG, logged),
predictions CSV.

Without a labelled test split (GLUE SST-2) the metrics, confusion matrix and predictions are the
validation split's.

sft-eval ckpt_path=outputs/train/cifar10_resnet18/<run>/checkpoints/last.ckpt
"""

import csv
import logging
import os
import pydoc
import signal
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import lightning as L
import matplotlib
import torch
from hydra.utils import instantiate
from omegaconf import Container, DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from torchmetrics.classification import MulticlassConfusionMatrix

from sft.callbacks.metric_lines import metric_text
from sft.contracts import TRAINED_PRECISION
from sft.errors import SFTError, TrainingInterrupted
from sft.inference.model_inputs import (
    MODEL_INPUT_KEYS,
    check_text_pairs,
    warn_model_input_changes,
)
from sft.models.backbones import backbone_speed_hints
from sft.models.classifier import SFTClassifier, class_probabilities
from sft.models.loading import (
    check_buildable_targets,
    check_class_names,
    check_remote_code,
    datamodule_from_checkpoint,
    load_classifier,
    trained_data_config,
)
from sft.models.metrics import check_metric_names, is_name_list
from sft.runs.result import RunRecorder
from sft.runs.resume import trained_epochs
from sft.utils.checkpoint_io import read_checkpoint
from sft.utils.config import print_and_save_config, task_overrides
from sft.utils.config_types import Seed, check_config_types, check_value
from sft.utils.fonts import families_drawing
from sft.utils.hardware import check_accelerator, has_bf16, resolve_auto_precision, uses_gpu
from sft.utils.instantiate import (
    answers_ctrl_c,
    build_trainer,
    instantiate_loggers,
    lightning_refusals,
)
from sft.utils.io import atomic_write, check_not_written, checkpoint_path, expand_home
from sft.utils.logs import rank_zero_warning
from sft.utils.overrides import override_key
from sft.utils.terminal import progress_bar_off_unless_terminal

matplotlib.use("Agg")  # files only, no display needed
log = logging.getLogger(__name__)
# the settings that name a test split (text files, image folders), and why one scores nothing
_TEST_KEYS = {"test_split": "it has no labels", "test_dir": "no such folder"}
PREDICTIONS = "predictions.csv"
CONFUSION_MATRIX = "confusion_matrix.png"


def write_predictions(
    path: Path,
    probs: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    ids: list[str] | None = None,
) -> None:
    """One row per example of the scored split: index, id (the datamodule's `predicted_ids`:
    an image's path, a text's line; else the index), true label, predicted label, class
    probabilities."""
    preds = probs.argmax(-1)

    def write(f: IO[str]) -> None:
        writer = csv.writer(f, lineterminator="\n")  # as summary.csv (was: CRLF)
        writer.writerow(
            [
                "index",
                "id",
                "label",
                "label_name",
                "pred",
                "pred_name",
                *[f"prob_{n}" for n in names],
            ]
        )
        for i, (y, p, row) in enumerate(
            zip(labels.tolist(), preds.tolist(), probs.tolist(), strict=True)
        ):
            # unlabelled rows (label -1) of a partly labelled test split leave these empty
            label = (y, names[y]) if y >= 0 else ("", "")
            ident = ids[i] if ids is not None else i
            writer.writerow([i, ident, *label, p, names[p], *(f"{v:.6f}" for v in row)])

    # whole or not there (was: a full disk left a cut-off file, which a re-run was refused over)
    atomic_write(path, write, text=True, new_only=True)


def save_confusion_matrix(
    path: Path, probs: torch.Tensor, labels: torch.Tensor, names: list[str], trainer: L.Trainer
) -> torch.Tensor:
    """Confusion matrix as PNG, and as a figure in the run's TensorBoard."""
    metric = MulticlassConfusionMatrix(num_classes=len(names))
    metric.update(probs, labels)
    count = len(names)
    families, undrawn = families_drawing(names)
    if undrawn:  # one line, not matplotlib's warning per character
        log.warning(
            f"{path}: no installed font has the characters {undrawn[:20]!r} of class names: "
            "they are drawn as boxes (install a font that has them, e.g. Noto Sans CJK)"
        )
    with matplotlib.rc_context({"font.family": families}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph .* missing from font", UserWarning)
        # a count in each cell up to CELL_COUNTS_UP_TO classes: matplotlib drew 150 classes'
        # 22,500 in ~110 s and 4 GB; `$` escaped: names are drawn as text, not math (`$$`
        # raised)
        fig, _ = metric.plot(
            labels=[name.replace("$", r"\$") for name in names],
            add_text=count <= CELL_COUNTS_UP_TO,
        )
        # torchmetrics' figure lays itself out (constrained) when saved: tight_layout() warned
        fig.set_size_inches(min(max(6, 0.6 * count), 40), min(max(5, 0.5 * count), 34))
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), new_only=True)
        for logger in trainer.loggers:
            if hasattr(logger.experiment, "add_figure"):
                logger.experiment.add_figure("test/confusion_matrix", fig)
                # the logger's writer was closed as the test ended: add_figure opened another,
                # which nothing closed, and a large figure never reached its file
                logger.experiment.close()
    return metric.compute()


CELL_COUNTS_UP_TO = 40  # classes


def data_config_for_checkpoint(cfg: DictConfig, checkpoint: dict[str, Any]) -> DictConfig:
    """`cfg.data` for evaluating `checkpoint`'s model: interpolations of `model.*` (e.g.
    `data.tokenizer: ${model.backbone.model_name_or_path}`) resolve against the checkpoint's
    model config, and the model's input settings come from the data it was trained on."""
    with open_dict(cfg):
        cfg.model = checkpoint.get("hyper_parameters", {})
    try:
        data = OmegaConf.to_container(cfg.data, resolve=True)
    except InterpolationResolutionError as err:
        raise SFTError(
            f"{err.full_key or 'data'}: {str(err).splitlines()[0]}: this data config reads a "
            "setting the checkpoint's model does not have; give data of the kind the model was "
            "trained on (text or images)"
        ) from err
    trained = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    if "image_size" not in trained:
        # a datamodule of one size (CIFAR-10's 32 px) records none: its class has it (was: an
        # image folder then decoded at the backbone's size, sft-predict at the trained one)
        size = fixed_image_size(checkpoint.get("datamodule_target"))
        if size is not None:
            trained["image_size"] = size
    size, trained_size = fixed_image_size(data.get("_target_")), trained.get("image_size")
    if "image_size" not in data and None not in (size, trained_size) and size != trained_size:
        # (was: a model trained at 96 px scored CIFAR-10's 32 px images without a word)
        rank_zero_warning(
            log,
            f"{str(data.get('_target_')).rpartition('.')[2]} reads {size} px images and the "
            f"model was trained on {trained_size} px ones: it scores inputs unlike its training "
            f"ones (data=image_folder reads a folder of the images at {trained_size} px)",
        )
    set_here = {override_key(o) for o in task_overrides()}
    # `sft-eval data=<other data>`: the model's input settings are the checkpoint's unless the
    # command line sets them (was: an image folder's default size, not the one it trained at)
    for key in MODEL_INPUT_KEYS:
        if key in data and key in trained and f"data.{key}" not in set_here:
            data[key] = trained[key]
    warn_model_input_changes(data, trained)
    check_text_pairs(data, trained)
    return OmegaConf.create(data)


def fixed_image_size(target: Any) -> int | None:
    """The one image size of a datamodule class that has no `image_size` setting (CIFAR-10's
    32 px); None for others, or a class not importable here."""
    if not isinstance(target, str):  # data overrides only: the checkpoint's
        return None
    try:  # pydoc: quiet (hydra's get_class logs an ERROR line for what it cannot import)
        size = getattr(pydoc.locate(target), "image_size", None)
    except pydoc.ErrorDuringImport:  # not importable here: nothing to take from it
        return None
    return size if isinstance(size, int) else None


def named_test_split(cfg: DictConfig, data_cfg: DictConfig | None) -> str | None:
    """The key (test_split, test_dir) of a test split the command line names, which must then
    be scored: a file must hold labels (was: with its label column misnamed, validation was
    scored instead, with a warning; SST-2's config says that its GLUE test file has none), a
    folder must exist. None: none named (`data.test_split=null` leaves the split out)."""
    set_here = {override_key(o) for o in task_overrides()}
    named = [
        k for k in _TEST_KEYS if f"data.{k}" in set_here and OmegaConf.select(cfg, f"data.{k}")
    ]
    if not named:
        return None
    labelled = "test_labelled" in (data_cfg or {}) and "data.test_labelled" not in set_here
    if named[0] == "test_split" and labelled:
        data_cfg.test_labelled = cfg.data.test_labelled = True
    return named[0]


# where a split of the data files sft reads lies: (folder setting, the split's setting)
_SPLIT_SETTINGS = {
    "image folder": ("data_dir", {"train": "train_dir", "val": "val_dir", "test": "test_dir"}),
    "file": ("data_dir", {"train": "train_split", "val": "val_split", "test": "test_split"}),
}


def split_path(hparams: Mapping[str, Any], role: str) -> tuple[str, Path] | None:
    """(what, the path as set) of split `role` of an image folder's or text files' settings;
    None for data of other kinds (CIFAR-10's files, Hugging Face datasets), or a split carved
    from the training one."""
    kind = "image folder" if "train_dir" in hparams else "file"
    folder_key, keys = _SPLIT_SETTINGS[kind]
    name = hparams.get(keys[role])
    if kind == "file" and ("train_split" not in hparams or hparams.get("source") == "hf"):
        return None
    if not name or not hparams.get(folder_key):
        return None
    return kind, expand_home(str(hparams[folder_key])) / str(name)


def warn_scoring_training_data(
    scored: Mapping[str, Any], trained: Mapping[str, Any], role: str
) -> None:
    """A warning when the split sft-eval scores is the checkpoint's training folder or file
    (`data.test_dir=train`): its scores are of examples the model was trained on. (Training
    warns of such splits; sft-eval does not read the training data, and said nothing.)"""
    scored_at, trained_at = split_path(scored, role), split_path(trained, "train")
    if scored_at is None or trained_at is None or scored_at[0] != trained_at[0]:
        return
    kind, path = scored_at  # named as set: the same real path may be reached through a link
    if os.path.realpath(path) == os.path.realpath(trained_at[1]):
        split = {"val": "validation", "test": "test"}[role]
        log.warning(
            f"the {split} split scored, {path}, is the {kind} the model was trained on: its "
            "scores are of examples the model was trained on"
        )


def follow_trained_precision(trainer_cfg: DictConfig, checkpoint: Mapping[str, Any]) -> None:
    """`trainer.precision=auto` for a checkpoint: the precision it trained at, so the scores
    are those the run's own test gave (was: only 32-true and 64-true were followed; else auto
    picked by the backbone family, whatever training used: test/acc 0.449 for the run's 0.453).
    Not half precision this machine lacks or emulates (fp16 on a CPU, bf16 on an older GPU or
    a CPU without bf16 units): auto's own pick there."""
    trained = str(checkpoint.get(TRAINED_PRECISION, ""))
    if str(trainer_cfg.get("precision")) != "auto" or not trained:
        return
    try:  # a value of the file's, put into the config: one of Lightning's precisions
        check_value(trained, typing.get_type_hints(L.Trainer.__init__)["precision"], "precision")
    except SFTError:
        log.warning(
            f"checkpoint: {TRAINED_PRECISION}={trained[:40]!r} is no precision: not followed"
        )
        return
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if trained.startswith("16") and not uses_gpu(accelerator):
        return
    if trained.startswith("bf16") and not has_bf16(accelerator):
        return
    trainer_cfg.precision = trained
    log.info(f"trainer.precision=auto -> {trained} (the precision the checkpoint trained at)")


class ScoredOutputs(L.Callback):
    """The class probabilities and labels of the batches that validate or test scores, in
    order; None when a step returns no `logits` and `labels` (a model of the user's)."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, torch.Tensor]] | None = []

    def _keep(self, outputs: Any) -> None:
        if self.outputs is None:
            return
        if not (isinstance(outputs, Mapping) and {"logits", "labels"} <= outputs.keys()):
            self.outputs = None
            return
        probs = class_probabilities(outputs["logits"]).cpu()
        self.outputs.append({"probs": probs, "labels": outputs["labels"].cpu()})

    def on_validation_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *_: Any
    ) -> None:
        self._keep(outputs)

    def on_test_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *_: Any
    ) -> None:
        self._keep(outputs)


def predicts_what_it_scores(model: L.LightningModule, datamodule: Any) -> bool:
    """Whether predicting would give what the scoring pass did: the model predicts with
    SFTClassifier's own step, and the datamodule's predict loader serves the scored split's
    examples in the order its test (or validation) loader does. A user's model may predict
    otherwise (test-time augmentation), a user's datamodule in another order."""
    if type(model).predict_step is not SFTClassifier.predict_step:
        return False
    scored = (
        datamodule.test_dataloader()
        if datamodule.has_labelled_test
        else datamodule.val_dataloader()
    )
    predicted = datamodule.predict_dataloader()
    loaders = (scored, predicted)
    return (
        all(isinstance(loader, DataLoader) for loader in loaders)
        and scored.dataset is predicted.dataset
        and scored.collate_fn is predicted.collate_fn
        and all(type(loader.sampler) is SequentialSampler for loader in loaders)
        and all(type(loader.batch_sampler) is BatchSampler for loader in loaders)
    )


def _score(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any, scored: ScoredOutputs
) -> tuple[dict[str, float], list[dict[str, torch.Tensor]]]:
    """The metrics of the split to score (the labelled test split, else validation) and the
    model's outputs on it, in file order: kept by `scored` as it scores them (was: a second
    pass, `trainer.predict`, over the split: twice the time), else predicted."""
    with lightning_refusals():
        if datamodule.has_labelled_test:
            metrics = trainer.test(model, datamodule=datamodule)[0]
        else:
            named = {
                k: v for k, v in getattr(datamodule, "hparams", {}).items() if k in _TEST_KEYS and v
            }
            why = "".join(f" (data.{k}={v}: {_TEST_KEYS[k]})" for k, v in named.items())
            # a test split the data names but that scores nothing: a warning (a file given
            # without its label column, a misspelt folder); none named: as configured
            log.log(
                logging.WARNING if named else logging.INFO,
                f"No labelled test split{why}: metrics are on the validation split.",
            )
            metrics = trainer.validate(model, datamodule=datamodule)[0]
        if scored.outputs and predicts_what_it_scores(model, datamodule):
            return metrics, scored.outputs
        # predictions of the split just scored, in file order
        outputs = trainer.predict(model, datamodule=datamodule)
    return metrics, outputs


def evaluate(cfg: DictConfig, recorder: RunRecorder | None = None) -> dict[str, Any]:
    """Score `cfg.ckpt_path` and write its predictions; `recorder` (scores.json) is told the
    epochs and steps the checkpoint trained."""
    check_value(cfg.get("seed"), Seed, "seed", number_text=True)  # "3" from ${oc.env:}
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    for written in (PREDICTIONS, CONFUSION_MATRIX):  # the run directory given twice
        check_not_written(out / written, "hydra.run.dir")
    checkpoint = read_checkpoint(checkpoint_path(cfg.ckpt_path))
    if recorder is not None:
        recorder.scored_checkpoint(trained_epochs(checkpoint), checkpoint.get("global_step"))
    # before anything reads its settings: `data=<text config>` interpolates the model's
    # (was: its tokenizer setting was instantiated unchecked)
    check_buildable_targets(checkpoint, cfg.ckpt_path)
    check_remote_code(checkpoint, cfg.ckpt_path, cfg.get("trust_remote_code") is True)
    metrics = cfg.get("metrics")
    metrics = OmegaConf.to_object(metrics) if isinstance(metrics, Container) else metrics
    num_classes = checkpoint.get("hyper_parameters", {}).get("num_classes")
    if metrics is not None and isinstance(num_classes, int):  # before the data is read
        if is_name_list(metrics) and "acc" not in metrics:  # always scored, as in training
            metrics = ["acc", *metrics]
        metrics = check_metric_names(metrics, num_classes, key="metrics")
    # before the config is printed: `data=` configs may interpolate the checkpoint's model
    data_cfg = data_config_for_checkpoint(cfg, checkpoint) if cfg.get("data") else None
    if data_cfg is not None and "_target_" not in data_cfg:
        # `+data.test_split=...` alone: the data the checkpoint was trained on, so changed
        data_cfg = OmegaConf.create(
            {**trained_data_config(cfg.ckpt_path, checkpoint), **OmegaConf.to_container(data_cfg)}
        )
    if data_cfg is not None:
        # config_resolved.yaml records the data this run reads (`data=<name>`: with the model's
        # input settings, was: the config's own image_size and statistics)
        with open_dict(cfg):
            cfg.data = data_cfg
    # the settings this run uses, checked and completed before config_resolved.yaml records them
    check_accelerator(cfg.trainer)
    follow_trained_precision(cfg.trainer, checkpoint)
    backbone_cfg = checkpoint.get("hyper_parameters", {}).get("backbone")
    resolve_auto_precision(cfg.trainer, backbone_speed_hints(backbone_cfg).cpu_bf16)
    typed = [override_key(o) for o in task_overrides()]
    progress_bar_off_unless_terminal(cfg.trainer, typed, rich=False)  # Lightning's TQDM bar
    check_config_types(cfg.trainer, "trainer")
    named_test = named_test_split(cfg, data_cfg)
    if data_cfg is not None:
        check_config_types(data_cfg, "data")
        datamodule = instantiate(data_cfg)
    else:
        datamodule = datamodule_from_checkpoint(cfg.ckpt_path, checkpoint=checkpoint)
    if named_test and not datamodule.has_labelled_test:
        value = cfg.data[named_test]
        raise SFTError(
            f"data.{named_test}={value}: {_TEST_KEYS[named_test]} to score"
            + (f" ({datamodule.root / value})" if named_test == "test_dir" else "")
        )
    if checkpoint.get("class_names"):
        # the scored split is read without the training data, which may be elsewhere by now
        datamodule.score_with(checkpoint["class_names"])
    limit = "limit_test_batches" if datamodule.has_labelled_test else "limit_val_batches"
    if cfg.trainer.get(limit) is not None and cfg.trainer.get("limit_predict_batches") is None:
        # the predictions and confusion matrix cover the batches the metrics do
        with open_dict(cfg.trainer):
            cfg.trainer.limit_predict_batches = cfg.trainer[limit]
    print_and_save_config(cfg, cfg.paths.output_dir)
    model = load_classifier(cfg.ckpt_path, checkpoint, metrics=metrics)
    datamodule.configure_input(model.input_spec)
    trainer = build_trainer(cfg.trainer, logger=instantiate_loggers(cfg.get("logger")))
    # beside the trainer's own callbacks (`+trainer.callbacks=[...]`), not instead of them
    scored = ScoredOutputs()
    trainer.callbacks.append(scored)
    if trainer.world_size > 1:
        # DDP's ranks would each predict a share of the split: predictions.csv was one rank's
        # rows under the first ids (subprocess DDP), or a traceback (ddp_spawn returns nothing)
        raise SFTError(
            f"sft-eval scores in one process, and trainer.devices={cfg.trainer.get('devices')} "
            f"trainer.num_nodes={cfg.trainer.get('num_nodes', 1)} start {trainer.world_size} "
            "(DDP), each of which would predict a share of the split: set trainer.devices=1 "
            "trainer.num_nodes=1 (scoring is one pass over the split)"
        )
    # the classes are known once the data is set up (Lightning's own setup call then finds
    # the splits loaded)
    datamodule.setup("test" if datamodule.has_labelled_test else "validate")
    check_class_names(datamodule.class_names, checkpoint.get("class_names"), cfg.ckpt_path)
    warn_scoring_training_data(
        datamodule.hparams,
        checkpoint.get("datamodule_hyper_parameters", {}),
        "test" if datamodule.has_labelled_test else "val",
    )
    # what the datamodule saved in the checkpoint (Lightning keeps `state_dict()` under its class
    # name and restores it on resume): an image folder checks its validation carve with it
    trained_state = checkpoint.get(type(datamodule).__qualname__)
    if trained_state:
        datamodule.load_state_dict(trained_state)

    try:
        metrics, outputs = _score(trainer, model, datamodule, scored)
    except SystemExit as exc:
        if not answers_ctrl_c(exc):
            raise
        # was: Lightning's exit status 1, without a word
        raise TrainingInterrupted(
            f"interrupted by SIGINT before the scores were written: {out} holds no metrics or "
            "predictions",
            signal.SIGINT,
        ) from None
    probs = torch.cat([o["probs"] for o in outputs]).float().cpu()
    labels = torch.cat([o["labels"] for o in outputs]).cpu()
    names = list(datamodule.class_names)

    ids = datamodule.predicted_ids()
    # limit_predict_batches predicts the first batches only
    write_predictions(
        out / PREDICTIONS, probs, labels, names, None if ids is None else ids[: len(labels)]
    )
    # the predicted split is labelled (a labelled test split, or validation without one)
    written = "predictions"
    if bool((labels >= 0).all()):
        save_confusion_matrix(out / CONFUSION_MATRIX, probs, labels, names, trainer)
        written += " and confusion matrix"
    log.info(f"metrics: {metric_text(metrics)}; {written} in {out}")  # as sft-train's line
    return metrics
