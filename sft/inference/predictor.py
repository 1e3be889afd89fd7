"""Class probabilities of a checkpoint model for text or image inputs, in batches."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from sft.errors import SFTError
from sft.inference.bundle import InferenceBundle
from sft.inference.inputs import ImageInputs, TextInputs
from sft.utils.hardware import usable_cpus


def check_modality(bundle: InferenceBundle, kind: str, what: str) -> None:
    if kind != bundle.modality:
        # a folder is read as images, whatever files it holds
        holds = "is a folder (read as images)" if Path(what).is_dir() else f"holds {kind}s"
        raise SFTError(
            f"inputs={what} {holds} but checkpoint {bundle.ckpt_path} is "
            f"{'an' if bundle.modality[0] in 'aeiou' else 'a'} {bundle.modality} model; give {'a .txt/.tsv/.csv/.jsonl file' if bundle.modality == 'text' else 'an image file or a folder of images'}"
        )


def check_batch_size(batch_size: Any) -> None:
    """SFTError unless `batch_size` (sft-predict's) is an integer > 0."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise SFTError(f"batch_size must be an integer > 0, got {batch_size!r}")


def longest_first(features: list[dict[str, Any]]) -> list[int]:
    """The order in which texts are batched: by token count, longest first. Each batch pads to
    its own longest text, so texts of like length share one (a file in its own order padded a
    batch of short texts to the one long text among them), and a batch too large for memory
    fails at once rather than at the end, as transformers' group_by_length puts its longest
    batch first."""
    return sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))


@torch.no_grad()
def predict_probs(
    bundle: InferenceBundle,
    inputs: TextInputs | ImageInputs,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Softmax probabilities (N, num_classes), float32 on CPU, in input order. `progress`: a
    progress bar on a terminal (sft-predict's; tqdm's, which leaves other outputs alone)."""
    check_batch_size(batch_size)
    probs = torch.empty(len(inputs), len(bundle.class_names))  # no inputs: no rows
    text = isinstance(inputs, TextInputs)
    if text:
        check_modality(bundle, "text", str(inputs.source))
        # the tokenizer refuses an empty list
        features = bundle.tokenize(inputs.texts, inputs.pairs) if inputs.texts else []
    else:
        check_modality(bundle, "image", str(inputs.paths[0]) if inputs.paths else "(no images)")
    # drawn once the inputs are checked and tokenised: their warnings and errors on lines of
    # their own
    bar = tqdm(
        total=len(inputs), desc="predicting", unit=" inputs", disable=None if progress else True
    )
    with bar:
        if text:
            order = longest_first(features)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = bundle.collate([features[i] for i in rows])
                probs[rows] = bundle.logits(batch).softmax(-1).cpu()
                bar.update(len(rows))
        else:
            decode = bundle.image_decoder()
            # PIL releases the GIL while it decodes: a batch's files on every core. Images given
            # decoded (sft.api) one at a time: one image object given twice, not loaded yet,
            # would be read by two threads at once.
            files = not any(isinstance(p, Image.Image) for p in inputs.paths)
            with ThreadPoolExecutor(max_workers=min(batch_size, usable_cpus())) as pool:
                mapped = pool.map if files else map
                for start in range(0, len(inputs), batch_size):
                    images = list(mapped(decode, inputs.paths[start : start + batch_size]))
                    logits = bundle.logits(bundle.image_inputs(torch.stack(images)))
                    probs[start : start + len(images)] = logits.softmax(-1).cpu()
                    bar.update(len(images))
    return probs
