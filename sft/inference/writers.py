"""Prediction files: CSV or JSON rows with class probabilities, and GLUE submission files."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from sft.errors import SFTError
from sft.utils.io import atomic_write

# GLUE's leaderboard file name per task; sft-predict writes SST-2's
GLUE_SST2_FILE = "SST-2.tsv"
# the columns of the texts in a predictions file (sft-predict reads them back as inputs)
PREDICTED_TEXT, PREDICTED_PAIR = "text", "text_pair"


def prediction_rows(
    ids: list[str],
    probs: torch.Tensor,
    names: list[str],
    texts: list[str] | None = None,
    pairs: list[str] | None = None,
) -> list[dict]:
    """One dict per input: id, (text, text_pair), pred (class index), pred_name, prob_<class>..."""
    preds = probs.argmax(-1).tolist()
    rows = []
    for i, (pred, row) in enumerate(zip(preds, probs.tolist(), strict=True)):
        record: dict = {"id": ids[i]}
        if texts is not None:
            record[PREDICTED_TEXT] = texts[i]
        if pairs is not None:
            record[PREDICTED_PAIR] = pairs[i]
        record.update(pred=pred, pred_name=names[pred])
        record.update({f"prob_{n}": round(p, 6) for n, p in zip(names, row, strict=True)})
        rows.append(record)
    return rows


def write_predictions(path: Path, rows: list[dict], fmt: str) -> None:
    """`fmt` csv (a header row) or json (a list of objects, probabilities as numbers)."""
    if fmt == "json":
        rows = _numbered_ids(rows)
        atomic_write(
            path,
            lambda f: json.dump(rows, f, indent=1, ensure_ascii=False),
            text=True,
            new_only=True,
        )
        return

    def write_csv(f) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        # probabilities as sft-eval's predictions.csv writes them (was: 9e-05 beside 0.000086)
        writer.writerows(
            {k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows
        )

    atomic_write(path, write_csv, text=True, new_only=True)


def _numbered_ids(rows: list[dict]) -> list[dict]:
    """Rows whose ids are all whole numbers written in digits (line numbers, GLUE's index) with
    the ids as JSON numbers (was: "1", "2", ...), whatever type the input's own id column had.
    Ids such as "007" or file names keep all ids as text, so one file holds one id type."""
    if not all(str(row["id"]).isdecimal() and str(int(row["id"])) == row["id"] for row in rows):
        return rows
    return [{**row, "id": int(row["id"])} for row in rows]


# SST-2's labels on GLUE's server, by the class names a model may have for them
GLUE_SST2_LABELS = {"negative": 0, "positive": 1, "neg": 0, "pos": 1, "0": 0, "1": 1}


def glue_labels_of(class_names: Sequence[str], asked: str) -> list[int]:
    """GLUE's SST-2 label (0 negative, 1 positive) of each of a model's two classes, by name:
    the class index was written whatever the names (`[positive, negative]`: every label
    inverted, without a word). SFTError for names that say neither."""
    labels = [GLUE_SST2_LABELS.get(str(name).strip().lower()) for name in class_names]
    if sorted(label for label in labels if label is not None) != [0, 1]:
        raise SFTError(
            f"{asked} writes GLUE's SST-2 labels (0 negative, 1 positive), but the model's classes "
            f"are {list(class_names)}: name them negative/positive (or 0/1), or set "
            "glue_submission=false"
        )
    return [int(label) for label in labels]


def write_glue_submission(
    path: Path, indices: list[str], probs: torch.Tensor, glue_labels: Sequence[int] = (0, 1)
) -> None:
    """`index<TAB>prediction` with GLUE's integer labels (`glue_labels`: of each class), the
    format GLUE's server expects."""

    def write(f) -> None:
        f.write("index\tprediction\n")
        for index, pred in zip(indices, probs.argmax(-1).tolist(), strict=True):
            f.write(f"{index}\t{glue_labels[pred]}\n")

    atomic_write(path, write, text=True, new_only=True)
