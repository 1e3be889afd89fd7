"""Data settings that belong to the trained model: its input normalisation and resolution,
tokenizer and length. Commands that read a checkpoint (sft-eval, sft-predict, sft-export) take
them from the data it was trained on unless the command line sets them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sft.errors import SFTError
from sft.hub import ALIASES
from sft.utils.logs import rank_zero_warning

log = logging.getLogger(__name__)

MODEL_INPUT_KEYS = (
    "mean",
    "std",
    "image_size",
    "crop_pct",
    "interpolation",
    "tokenizer",
    "max_length",
)


def warn_model_input_changes(settings: Mapping[str, Any], trained: Mapping[str, Any]) -> None:
    """A warning for each model input setting that `settings` (the command line's `data.<key>`)
    sets to another value than the model was trained with: it then sees other inputs than in
    training (another resolution, a shorter length), which is allowed but rarely meant."""
    for key in MODEL_INPUT_KEYS:
        if key not in settings or key not in trained:
            continue
        if _plain(key, settings[key]) != _plain(key, trained[key]):
            rank_zero_warning(
                log,
                f"data.{key}={settings[key]}: the model was trained with {key} {trained[key]}; "
                "its inputs now differ from its training inputs (leave data."
                f"{key} out to use {trained[key]})",
            )


def check_text_pairs(settings: Mapping[str, Any], trained: Mapping[str, Any]) -> None:
    """SFTError where `settings` (the data a checkpoint's model is to score) reads single texts
    for a model trained on sentence pairs, or pairs for one trained on single texts: it would
    score them without a word (a single-text model scored 1.0 on pairs), as sft-predict
    refuses. Other column names for the same kind of input are the data's own."""
    key = "text_pair_column"
    if key not in settings or key not in trained:  # images, or a datamodule without pairs
        return
    pair, trained_pair = settings[key], trained[key]
    if trained_pair is None and pair is not None:
        raise SFTError(
            f"data.{key}={pair}: this model classifies single texts (it was trained with "
            f"data.{key}=null): leave data.{key} out"
        )
    if trained_pair is not None and pair is None:
        raise SFTError(
            f"data.{key}=null: this model classifies sentence pairs (it was trained with "
            f"data.{key}={trained_pair}): name the column of the second texts, "
            f"data.{key}=<column>"
        )


def _plain(key: str, value: Any) -> Any:
    """`value` as compared: sequences as lists (a checkpoint's (0.5, 0.5, 0.5) is the command
    line's [0.5,0.5,0.5]), a tokenizer alias as its hub id (`minilm`)."""
    if key == "tokenizer" and isinstance(value, str) and value in ALIASES:
        return ALIASES[value][1]
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
