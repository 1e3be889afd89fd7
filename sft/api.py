"""sft's commands from Python: a notebook, a script, a loop of runs of one's own.

    from sft import api

    run = api.train("experiment=sst2_minilm", "seed=1")
    run.metrics["val/acc_best"], run.output_dir
    scored = api.evaluate(f"ckpt_path={run.output_dir}/checkpoints/last.ckpt")
    predict = api.load_predictor(f"{run.output_dir}/checkpoints/last.ckpt")
    predict(["a gripping film", "dull"]).predicted      # ['positive', 'negative']

Each call of train and evaluate runs in this process what the command with those overrides runs: the same checks,
run directory, log and record (result.json; scores.json for `evaluate`), and returns that
record. A mistake the command would print as its `error:` line is raised as SFTError with it.
The logging a run sets up is undone afterwards, so runs can follow one another. One run per
call: a sweep is a loop over calls (or `sft-train -m` on the command line).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from sft.errors import SFTError
from sft.inference.bundle import InferenceBundle, load_bundle
from sft.inference.inputs import ImageInputs, TextInputs
from sft.inference.predictor import predict_probs
from sft.runs.result import COMPLETED, PRUNED, RunRecorder, RunResult, record_file, recorders_made
from sft.utils.logs import logging_restored


def train(*overrides: str) -> RunResult:
    """`sft-train <overrides>`: the run's record (status completed), its metrics the final ones."""
    from sft.train import main

    return _run("train", main, overrides)


def evaluate(*overrides: str) -> RunResult:
    """`sft-eval <overrides>` (`ckpt_path=` and any others): its record, scores.json's."""
    from sft.eval import main

    return _run("eval", main, overrides)


@dataclass
class Predictions:
    """Class probabilities (N, num_classes), float32 on CPU, in input order."""

    probs: torch.Tensor
    class_names: list[str]

    @property
    def predicted(self) -> list[str]:
        """The most probable class of each input, by name."""
        return [self.class_names[i] for i in self.probs.argmax(-1).tolist()]


class Predictor:
    """A checkpoint's model for inputs held in memory, prepared as in training (the text model's
    tokenizer and truncation, the image model's size and normalisation): texts (or
    `(text, text_pair)` pairs for a sentence-pair model), or images as PIL images or files."""

    def __init__(self, bundle: InferenceBundle) -> None:
        self.bundle = bundle
        self.class_names = list(bundle.class_names)
        self.pairs = bool(getattr(bundle.datamodule, "text_pair_column", None))

    def __call__(self, inputs: Sequence[Any], batch_size: int = 64) -> Predictions:
        inputs = list(inputs)
        ids = [str(i) for i in range(len(inputs))]
        if self.bundle.modality == "image":
            images = [i if isinstance(i, Image.Image) else Path(i) for i in inputs]
            missing = [i for i in images if isinstance(i, Path) and not i.is_file()]
            if missing:
                raise SFTError(f"{missing[0]}: no such image file (give PIL images or files)")
            return Predictions(
                predict_probs(self.bundle, ImageInputs(ids, images), batch_size), self.class_names
            )
        if self.pairs:
            bad = [i for i in inputs if not (isinstance(i, tuple | list) and len(i) == 2)]
            if bad:
                raise SFTError(
                    f"this model classifies sentence pairs: give (text, text_pair) tuples, "
                    f"got {bad[0]!r}"
                )
            texts, pairs = [str(t) for t, _ in inputs], [str(p) for _, p in inputs]
        else:
            bad = [i for i in inputs if not isinstance(i, str)]
            if bad:
                raise SFTError(f"this model classifies single texts: give strings, got {bad[0]!r}")
            texts, pairs = inputs, None
        probs = predict_probs(
            self.bundle, TextInputs(ids, texts, pairs, Path("(python)")), batch_size
        )
        return Predictions(probs, self.class_names)


def load_predictor(ckpt_path: str | Path, device: str = "cpu") -> Predictor:
    """The model of a training checkpoint (as sft-predict loads it: weights-only, checked),
    for predictions from Python; load once, call on many inputs."""
    return Predictor(load_bundle(ckpt_path, device))


class _ErrorLine:
    """A text stream that writes through to `stream` and keeps the last `error:` line."""

    def __init__(self, stream) -> None:
        self.stream, self.error, self._line = stream, None, ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if line.startswith("error: "):
                self.error = line.removeprefix("error: ")
        return self.stream.write(text)

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno...
        return getattr(self.stream, name)


@contextlib.contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """sys.argv as the command's, and Hydra as if it had not run (it refuses a second
    initialisation in one process)."""
    saved, sys.argv = sys.argv, argv
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def _run(command: str, main: Callable[[], object], overrides: tuple[str, ...]) -> RunResult:
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        raise SFTError(
            f"{flags[0]}: sft.api runs one run, from overrides alone; a sweep is a loop over "
            f"calls (or sft-{command} -m on the command line), a config is shown by "
            f"sft-{command} --cfg job"
        )
    errors = _ErrorLine(sys.stderr)
    status = 0
    with (
        _command_line([f"sft-{command}", *overrides]),
        recorders_made() as recorders,
        logging_restored(),
        contextlib.redirect_stderr(errors),
    ):
        try:
            main()
        except SystemExit as exc:  # the command's exit status (1: its error line said why)
            status = exc.code if isinstance(exc.code, int) else 1
    record = _record(recorders)
    if status == 0 and record is not None and record.status in (COMPLETED, PRUNED):
        return record
    error = (record.error if record is not None else None) or errors.error
    raise SFTError(error or f"sft-{command} ended with exit status {status}")


def _record(recorders: list[RunRecorder]) -> RunResult | None:
    """The record of the run: as its recorder finished it, or, for a run that stood as it was
    (a finished run continued with nothing to train), the one in its directory."""
    if not recorders:  # refused before the run began (a mistaken override)
        return None
    recorder = recorders[-1]
    if recorder.finished:
        return recorder.result
    path = Path(recorder.result.output_dir) / record_file(recorder.result.task)
    return RunResult.read(path) if path.is_file() else None
