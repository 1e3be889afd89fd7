"""sft's commands from Python: a notebook, a script, a loop of runs of one's own.

    from sft import api

    run = api.train("experiment=sst2_minilm", "seed=1")
    run.metrics["val/acc_best"], run.output_dir
    scored = api.evaluate(f"ckpt_path={run.output_dir}/checkpoints/last.ckpt")
    predict = api.load_predictor(f"{run.output_dir}/checkpoints/last.ckpt")
    predict(["a gripping film", "dull"]).predicted      # ['positive', 'negative']

Each call of train and evaluate runs in this process what the command with those overrides
runs: the same checks, run directory, log and record (result.json; scores.json for
`evaluate`), and returns that record. A mistake the command would print as its `error:` line
is raised as SFTError with it (RunFailed, with the run's record, for a run that had begun),
Ctrl-C as KeyboardInterrupt, a bug as its own exception. The logging a run sets up is undone
afterwards, so runs can follow one another. One run per call: a sweep is a loop over calls
(or `sft-train -m`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from sft.data.image_decode import check_mode
from sft.data.image_folder import first_bad, undecodable
from sft.errors import SFTError, find_user_error
from sft.inference.bundle import InferenceBundle, load_bundle
from sft.inference.inputs import ImageInputs, TextInputs, warn_empty_texts
from sft.inference.predictor import predict_probs
from sft.runs.result import (
    COMPLETED,
    INTERRUPTED,
    PRUNED,
    RunRecorder,
    RunResult,
    record_file,
    recorders_made,
)
from sft.utils.cli import ONE_RUN_ONLY
from sft.utils.ddp_ranks import launcher_environment_restored
from sft.utils.logs import logging_restored


def train(*overrides: str | Sequence[str]) -> RunResult:
    """`sft-train <overrides>` (or one list of them): the run's record (status completed), its
    metrics the final ones."""
    from sft.train import main

    return _run("train", main, overrides)


def evaluate(*overrides: str | Sequence[str]) -> RunResult:
    """`sft-eval <overrides>` (`ckpt_path=` and any others; or one list of them): its record,
    scores.json's."""
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

    def __call__(self, inputs: Any, batch_size: int = 64) -> Predictions:
        """`inputs`: a list of them, or one (a text, a pair, an image or an image file)."""
        image = self.bundle.modality == "image"
        one = (
            isinstance(inputs, str | os.PathLike | Image.Image) or _is_image_array(inputs)
            if image
            else isinstance(inputs, str) or (self.pairs and _is_pair(inputs))
        )
        # one input of another type is named below (was: list()'s TypeError for a number)
        inputs = [inputs] if one or not isinstance(inputs, Iterable) else list(inputs)
        ids = [str(i) for i in range(len(inputs))]
        if image:
            # numpy uint8 images, (height, width[, channels]) in RGB order, as numpy.asarray of a
            # PIL image gives them (OpenCV's are BGR: reversed first)
            inputs = [_array_image(i) if isinstance(i, np.ndarray) else i for i in inputs]
            wrong = [i for i in inputs if not isinstance(i, str | os.PathLike | Image.Image)]
            if wrong:
                raise SFTError(
                    "this model classifies images: give PIL images, uint8 arrays or image "
                    f"files, got {type(wrong[0]).__name__} {_short(wrong[0])}"
                )
            images = [i if isinstance(i, Image.Image) else Path(i) for i in inputs]
            if folders := [i for i in images if isinstance(i, Path) and i.is_dir()]:
                raise SFTError(
                    f"{folders[0]}: a folder; give image files (sft-predict inputs=<folder> "
                    "predicts a folder's images)"
                )
            missing = [i for i in images if isinstance(i, Path) and not i.is_file()]
            if missing:
                raise SFTError(f"{missing[0]}: no such image file (give PIL images or files)")
            files = [i for i in images if isinstance(i, Path)]
            # every file checked before any is predicted, as sft-predict does (was: the first
            # bad one at its batch, asked whether it had "changed since it was listed")
            if bad := undecodable(files, self.bundle.image_size):
                raise SFTError(
                    f"{len(bad)} of {len(files)} image files cannot be decoded: {first_bad(bad)}"
                )
            # images decoded already, as files are (was: a ValueError for PIL modes I and F)
            for position, image in enumerate(images):
                if isinstance(image, Image.Image):
                    try:
                        check_mode(image)
                    except ValueError as exc:
                        raise SFTError(f"image {position}: {exc}") from None
            probs = predict_probs(self.bundle, ImageInputs(ids, images), batch_size)
            return Predictions(probs, self.class_names)
        if self.pairs:
            wrong = [i for i in inputs if not _is_pair(i)]
            if wrong:
                raise SFTError(
                    "this model classifies sentence pairs: give (text, text_pair) tuples of "
                    f"strings, got {_short(wrong[0])}"
                )
            texts, pairs = [t for t, _ in inputs], [p for _, p in inputs]
        else:
            wrong = [i for i in inputs if not isinstance(i, str)]
            if wrong:
                raise SFTError(
                    f"this model classifies single texts: give strings, got {_short(wrong[0])}"
                )
            texts, pairs = inputs, None
        # as sft-predict warns of a file's (was: predicted without a word)
        warn_empty_texts(Path("(python)"), texts, pairs, list(range(len(texts))), row="input")
        probs = predict_probs(
            self.bundle, TextInputs(ids, texts, pairs, Path("(python)")), batch_size
        )
        return Predictions(probs, self.class_names)


def _short(value: Any) -> str:
    """`value`'s repr on one line, cut at 60 characters (an array's ran over many)."""
    return f"{' '.join(repr(value).split()):.60}"


def _is_image_array(value: Any) -> bool:
    """One image as a numpy array: (height, width) or (height, width, channels)."""
    return isinstance(value, np.ndarray) and value.ndim in (2, 3)


def _array_image(array: np.ndarray) -> Image.Image:
    """A uint8 (height, width), (height, width, 1, 3 or 4) array as the PIL image it holds;
    SFTError for others (floats: on which scale?)."""
    shape = array.shape
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and shape[-1] in (1, 3, 4))
    ):
        raise SFTError(
            "an image array is uint8, (height, width) or (height, width, 3) in RGB order, as "
            f"numpy.asarray of a PIL image gives it; got {array.dtype} {shape}"
        )
    return Image.fromarray(array[..., 0] if array.ndim == 3 and shape[-1] == 1 else array)


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    )


def load_predictor(
    ckpt_path: str | Path,
    device: str = "cpu",
    data: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> Predictor:
    """The model of a training checkpoint (as sft-predict loads it: weights-only, checked),
    for predictions from Python; load once, call on many inputs. `data`: settings of the
    checkpoint's data to change, as sft-predict's `+data.<key>=` (`{"max_length": 128}`);
    `trust_remote_code`: as sft-predict's, for a checkpoint trained with it (were: neither)."""
    return Predictor(load_bundle(ckpt_path, device, data, trust_remote_code))


ERROR_PREFIX = "error: "


class _ErrorLine:
    """A text stream that writes through to `stream`, but for the `error:` line, which the
    call raises (was: shown twice in a notebook, printed and raised); it keeps that line, and
    the last lines written (Hydra's own errors have no `error:`)."""

    def __init__(self, stream) -> None:
        self.stream, self.error, self._line = stream, None, ""
        self.last: collections.deque[str] = collections.deque(maxlen=8)
        self._held = ""  # the start of a line that may be the error line
        self._passing = False  # the current line is being written through

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if line.startswith(ERROR_PREFIX):
                self.error = line.removeprefix(ERROR_PREFIX)
            # an error's own lines: not a log line, a detail or Hydra's advice
            if line.strip() and not line.startswith(("[", " ", "\t", "Set the environment")):
                self.last.append(line.strip())
        for piece in text.splitlines(keepends=True):
            ends = piece.endswith("\n")
            if self._passing:
                self.stream.write(piece)
            else:
                self._held += piece
                start = self._held.rstrip("\n")
                if not (start.startswith(ERROR_PREFIX) or ERROR_PREFIX.startswith(start)):
                    self.stream.write(self._held)  # no error line: through, and the rest of it
                    self._held, self._passing = "", not ends
                elif ends:  # the error line (or an empty one, written through)
                    if not start:
                        self.stream.write(self._held)
                    self._held = ""
            if ends:
                self._passing = False
        return len(text)

    def release(self) -> None:
        """Write what is held of a last line that did not end (not an error line after all)."""
        if self._held and not self._held.startswith(ERROR_PREFIX):
            self.stream.write(self._held)
        self._held = ""

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno...
        return getattr(self.stream, name)


class RunFailed(SFTError):
    """A run that had begun and failed: its `error:` line, and its record (`record`: status,
    metrics logged so far, output_dir). A mistake said before a run began is an SFTError."""

    def __init__(self, message: str, record: RunResult) -> None:
        super().__init__(message)
        self.record = record


@contextlib.contextmanager
def _command_line(argv: list[str]) -> Iterator[None]:
    """sys.argv as the command's, and Hydra's global state kept (a notebook's own
    `hydra.initialize`): the command initialises it afresh, which Hydra refuses twice."""
    saved, sys.argv = sys.argv, argv
    hydra = GlobalHydra.instance()
    kept = hydra.hydra
    hydra.clear()
    try:
        yield
    finally:
        sys.argv = saved
        hydra.clear()
        if kept is not None:
            hydra.initialize(kept)


@contextlib.contextmanager
def _one_run_only() -> Iterator[None]:
    """The command's checks told that this call runs one run (a config that makes it a sweep
    is refused before any job)."""
    token = ONE_RUN_ONLY.set(True)
    try:
        yield
    finally:
        ONE_RUN_ONLY.reset(token)


# what Lightning's seed_everything sets: its DDP ranks and DataLoader workers seed from them
LIGHTNING_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")

# a folder of one's own configs (`--config-dir <folder>`), which a run may name from Python too
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def _not_one_run(overrides: tuple[str, ...]) -> str | None:
    """The first flag other than `--config-dir` (`-m`, `--cfg`, `--help`...) or `hydra.mode`
    override among `overrides`: each makes the call other than one run."""
    folder_follows = False
    for override in overrides:
        if folder_follows or override.startswith(tuple(f"{f}=" for f in CONFIG_DIR_FLAGS)):
            folder_follows = False
            continue
        folder_follows = override in CONFIG_DIR_FLAGS
        if folder_follows:
            continue
        if override.startswith("-") or override.partition("=")[0].lstrip("+") == "hydra.mode":
            return override
    return None


def _as_overrides(command: str, given: tuple[Any, ...]) -> tuple[str, ...]:
    """The call's overrides, each a string; one list (or tuple) of them is taken as they are
    (were: AttributeError for a list, a path or None)."""
    if len(given) == 1 and isinstance(given[0], list | tuple):
        given = tuple(given[0])
    for override in given:
        if not isinstance(override, str):
            example = (
                f' (a checkpoint? "ckpt_path={override}")'
                if isinstance(override, os.PathLike) and command == "eval"
                else ""
            )
            raise SFTError(
                f"sft.api.{'evaluate' if command == 'eval' else command}: overrides are strings "
                f'such as "seed=1" (as arguments, or one list of them); got '
                f"{type(override).__name__} {_short(override)}{example}"
            )
    return given


def _run(command: str, main: Callable[[], object], overrides: tuple[str, ...]) -> RunResult:
    """The command's run; its exception raised again where the run had one: KeyboardInterrupt
    for a run Ctrl-C or a signal stopped, RunFailed for a mistake or failure the command says in
    its `error:` line, the error itself for a bug (Hydra had turned it into exit status 1)."""
    overrides = _as_overrides(command, overrides)
    if refused := _not_one_run(overrides):
        raise SFTError(
            f"{refused}: sft.api runs one run, from overrides (and --config-dir) alone; a sweep "
            f"is a loop over calls (or sft-{command} -m on the command line), a config is shown "
            f"by sft-{command} --cfg job"
        )
    errors = _ErrorLine(sys.stderr)
    status = 0
    with (
        _one_run_only(),
        _command_line([f"sft-{command}", *overrides]),
        recorders_made() as recorders,
        logging_restored(),
        # Lightning's DDP launcher sets MASTER_PORT and the like in this process (trainer=ddp_sim),
        # and seed_everything its seed, which a later run with seed=null would take up
        launcher_environment_restored(also=LIGHTNING_SEED_ENV),
        contextlib.redirect_stderr(errors),
    ):
        raised: Exception | None = None
        try:
            main()
        except SystemExit as exc:  # the command's exit status (1: its error line said why)
            status = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # HYDRA_FULL_ERROR=1 (or a debugger): Hydra raises it itself
            status, raised = 1, exc
        errors.release()
    if len(recorders) > 1:  # a config set hydra.mode=MULTIRUN, under HYDRA_FULL_ERROR=1
        raise SFTError(
            f"sft-{command} ran {len(recorders)} jobs (a sweep: hydra.mode=MULTIRUN in a config); "
            "sft.api runs one run: their records are in "
            f"{Path(recorders[0].result.output_dir).parent}"
        )
    record = _record(recorders)
    if status == 0 and record is not None and record.status in (COMPLETED, PRUNED):
        return record
    stop = (recorders[-1].exception if recorders else None) or raised
    if record is not None and record.status == INTERRUPTED:
        raise KeyboardInterrupt(record.error) from stop
    user_error = find_user_error(stop) if stop is not None else None
    if stop is not None and not isinstance(stop, SystemExit) and user_error is None:
        raise stop  # a bug: its own exception and traceback, for the debugger
    error = (
        (record.error if record is not None else None)
        or errors.error
        or (str(user_error) if user_error is not None else None)
        or " ".join(errors.last)  # e.g. Hydra's "Could not override ..."
    )
    error = error or f"sft-{command} ended with exit status {status}"
    if record is None:  # a mistake said before any run began: nothing to hold (README)
        raise SFTError(error) from stop
    raise RunFailed(error, record) from stop


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
