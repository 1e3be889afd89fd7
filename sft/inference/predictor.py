"""Class probabilities of a checkpoint model for text or image inputs, in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sft.data.image_decode import ImageDecoder
from sft.errors import SFTError
from sft.inference.bundle import InferenceBundle
from sft.inference.inputs import ImageInputs, TextInputs


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


@torch.no_grad()
def predict_probs(
    bundle: InferenceBundle, inputs: TextInputs | ImageInputs, batch_size: int = 64
) -> torch.Tensor:
    """Softmax probabilities (N, num_classes), float32 on CPU, in input order."""
    check_batch_size(batch_size)
    out = [torch.empty(0, len(bundle.class_names))]  # no inputs: no rows
    if isinstance(inputs, TextInputs):
        check_modality(bundle, "text", str(inputs.source))
        # the tokenizer refuses an empty list
        features = bundle.tokenize(inputs.texts, inputs.pairs) if inputs.texts else []
        for start in range(0, len(features), batch_size):
            batch = bundle.collate(features[start : start + batch_size])
            out.append(bundle.logits(batch).softmax(-1).cpu())
    else:
        check_modality(bundle, "image", str(inputs.paths[0]) if inputs.paths else "(no images)")
        decode = ImageDecoder(bundle.image_size)
        for start in range(0, len(inputs), batch_size):
            images = torch.stack([decode(p) for p in inputs.paths[start : start + batch_size]])
            out.append(bundle.logits(bundle.image_inputs(images)).softmax(-1).cpu())
    return torch.cat(out)
