"""The prediction job (`sft-predict`): checkpoint + inputs -> predicted labels and class
probabilities.

sft-predict ckpt_path=<run>/checkpoints/last.ckpt inputs=reviews.txt            # one text per line
sft-predict ckpt_path=... inputs=data/sst2/test.tsv                              # + SST-2.tsv for GLUE
sft-predict ckpt_path=... inputs=photos/ format=json                             # a folder of images
"""

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sft.data.image_folder import first_bad, name_the_others, undecodable
from sft.errors import SFTError
from sft.inference.bundle import data_settings, load_bundle
from sft.inference.inputs import (
    STDIN,
    ImageInputs,
    TextInputs,
    input_kind,
    is_text_stream,
    read_images,
    read_texts,
)
from sft.inference.predictor import check_batch_size, check_modality, predict_probs
from sft.inference.writers import (
    GLUE_SST2_FILE,
    PREDICTED_PAIR,
    PREDICTED_TEXT,
    glue_labels_of,
    prediction_rows,
    write_glue_submission,
    write_predictions,
)
from sft.utils.config_types import check_value
from sft.utils.io import check_not_a_folder, check_not_written, expand_home, path_setting
from sft.utils.logs import log_to_files

log = logging.getLogger(__name__)
FORMATS = ("csv", "json")
# output suffixes of formats sft-predict does not write
OTHER_FORMATS = {"tsv": "tab-separated", "jsonl": "JSON Lines"}


def is_sst2_test_file(path: Path) -> bool:
    """GLUE's SST-2 test file: `sst2/test.tsv` (this project's layout) or `SST-2/test.tsv`."""
    return path.name == "test.tsv" and path.parent.name.lower().replace("-", "") == "sst2"


def inputs_path(value: Any) -> Path:
    return path_setting(
        value, "inputs", "one file, or one folder of images (put several files in a folder)"
    )


def decodable_images(inputs: ImageInputs, size: int, skip_bad_files: Any) -> ImageInputs:
    """The inputs, checked before any is predicted: every image that cannot be decoded named at
    once, and refused or (`skip_bad_files`) left out (was: an error for the first, at its
    batch)."""
    check_value(skip_bad_files, bool, "skip_bad_files")
    bad = undecodable(inputs.paths, size)
    if not bad:
        return inputs
    message = f"{len(bad)} of {len(inputs)} images cannot be decoded: {first_bad(bad)}"
    if len(bad) == len(inputs):  # none left to predict (was: "... to predict the others")
        raise SFTError(message)
    if not skip_bad_files:
        raise SFTError(f"{message}; remove them, or set skip_bad_files=true to predict the others")
    log.warning(f"{message}; skip_bad_files=true: left out of the predictions")
    name_the_others(log, bad)
    left_out = {path for path, _ in bad}
    kept = [(i, p) for i, p in zip(inputs.ids, inputs.paths, strict=True) if str(p) not in left_out]
    return ImageInputs([i for i, _ in kept], [p for _, p in kept])


def read_inputs(cfg: DictConfig, bundle: Any) -> TextInputs | ImageInputs:
    path = inputs_path(cfg.inputs)
    kind = input_kind(path)
    check_modality(bundle, kind, str(path))
    if kind == "image":
        # +data.skip_bad_files=true, the training setting's name, says the same
        skip = cfg.skip_bad_files or OmegaConf.select(cfg, "data.skip_bad_files", default=False)
        return decodable_images(read_images(path), bundle.image_size, skip)
    dm = bundle.datamodule
    if (path.suffix.lower() == ".txt" or is_text_stream(path)) and (cfg.text_column or cfg.quoting):
        key = "text_column" if cfg.text_column else "quoting"
        kind = "standard input" if path == STDIN else f"{path}, one text per line"
        raise SFTError(
            f"{key}= is for TSV/CSV/JSONL inputs, but inputs= is {kind}: leave {key} out"
        )
    if cfg.text_pair_column and dm.text_pair_column is None:
        raise SFTError(
            f"text_pair_column={cfg.text_pair_column}: this model classifies single texts (it "
            "was trained with data.text_pair_column=null): leave text_pair_column out"
        )
    quoting = cfg.quoting
    if quoting is None and dm.reader.source == path.suffix.lower().lstrip("."):
        # a file of the format the model was trained on is read as its training files were
        quoting = getattr(dm.reader, "quoting", None)
    text_column = cfg.text_column or dm.text_column
    pair_column = cfg.text_pair_column or dm.text_pair_column
    try:
        return read_texts(path, text_column, pair_column, quoting)
    except SFTError as training_columns:
        if cfg.text_column or cfg.text_pair_column:
            raise
        # sft-predict's own output (`text`, `text_pair`) read back (was: "no column 'sentence'")
        try:
            inputs = read_texts(path, PREDICTED_TEXT, pair_column and PREDICTED_PAIR, quoting)
        except SFTError:
            raise training_columns from None
        log.info(f"inputs={path}: texts from its {PREDICTED_TEXT!r} column, as sft-predict writes")
        return inputs


def predict(cfg: DictConfig) -> Path:
    """Write the predictions file (and a GLUE submission when asked); returns its path."""
    if cfg.format not in FORMATS:
        raise SFTError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    check_batch_size(cfg.batch_size)  # before the checkpoint and the inputs are read
    default = Path(cfg.paths.output_dir) / f"predictions.{cfg.format}"
    out = expand_home(str(cfg.output or default))
    named = out.suffix.lstrip(".").lower()  # (was: p.JSON written as csv)
    if named in OTHER_FORMATS:  # (was: comma-separated rows in a .tsv)
        raise SFTError(
            f"output={out} names a {OTHER_FORMATS[named]} file, but sft-predict writes "
            f"{' or '.join(FORMATS)}: give a .{cfg.format} output"
        )
    if named in FORMATS and named != cfg.format:
        raise SFTError(
            f"output={out} names a .{named} file but format={cfg.format}: set format={named}, or "
            f"give a .{cfg.format} output"
        )
    check_not_a_folder(out, "output=", f"predictions.{cfg.format}")
    check_not_written(out, "output")
    inputs_path(cfg.inputs)  # before the checkpoint is read
    trust = cfg.get("trust_remote_code") is True
    bundle = load_bundle(cfg.ckpt_path, cfg.device, data_settings(cfg), trust)
    inputs = read_inputs(cfg, bundle)
    glue = cfg.glue_submission
    if glue is None:
        glue = isinstance(inputs, TextInputs) and is_sst2_test_file(inputs.source)
    if glue and not isinstance(inputs, TextInputs):
        raise SFTError("glue_submission=true needs text inputs (GLUE's SST-2 test.tsv)")
    # glue_submission=null turns it on for SST-2's test.tsv (text inputs, checked above): say
    # which
    asked = (
        "glue_submission=true"
        if cfg.glue_submission or not glue
        else f"inputs={inputs.source} (SST-2's test file)"
    )
    if glue and len(bundle.class_names) != 2:
        raise SFTError(
            f"{asked} writes SST-2's binary labels, but {cfg.ckpt_path} predicts "
            f"{len(bundle.class_names)} classes ({', '.join(bundle.class_names)}); set "
            "glue_submission=false"
        )
    glue_labels = glue_labels_of(bundle.class_names, asked) if glue else None
    submission = out.parent / GLUE_SST2_FILE
    if glue:
        # the name is GLUE's: another file name in the same folder would not help
        check_not_written(submission, "output folder (or glue_submission=false)")
    probs = predict_probs(bundle, inputs, cfg.batch_size, progress=True)

    texts, pairs = (inputs.texts, inputs.pairs) if isinstance(inputs, TextInputs) else (None, None)
    rows = prediction_rows(inputs.ids, probs, bundle.class_names, texts, pairs)
    write_predictions(out, rows, cfg.format)
    said = [f"predictions of {len(rows)} input{'s' if len(rows) != 1 else ''}: {out}"]
    if glue:
        # GLUE numbers the test rows from 0: the file's index column, else the row order
        indices = inputs.ids if inputs.has_index else [str(i) for i in range(len(inputs))]
        write_glue_submission(submission, indices, probs, glue_labels)
        said.append(f"GLUE submission: {submission}")
    for line in said:  # on stdout, for scripts; and in predict.log (was: left empty)
        print(line)
        log_to_files(log, logging.INFO, line)
    return out
