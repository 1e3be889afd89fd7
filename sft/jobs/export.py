"""The export job (`sft-export`): checkpoint -> self-contained TorchScript / ONNX models (+ a
Hugging Face folder for text backbones), each checked against the checkpoint on real inputs.

sft-export ckpt_path=outputs/train/<name>/<run>/checkpoints/last.ckpt
sft-export ckpt_path=... formats=[onnx] output_dir=deploy/
"""

import copy
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from sft.errors import SFTError
from sft.inference.bundle import InferenceBundle, data_settings, load_bundle
from sft.inference.deployable import (
    build_deployable,
    forward_left_out,
    model_inputs,
    parity_inputs,
    sub_batch,
)
from sft.inference.exporters import (
    Runner,
    export_hf,
    export_onnx,
    export_peft,
    export_torchscript,
    input_names,
    peft_base,
    save_tokenizer,
    transformers_quiet,
)
from sft.models.backbones.huggingface import HFEncoder
from sft.utils.config_types import NonNegative, check_value
from sft.utils.io import atomic_write_text, check_not_written, expand_home

log = logging.getLogger(__name__)
# each format's file or folder in the output folder
EXPORT_NAMES = {"torchscript": "model.pt", "onnx": "model.onnx", "hf": "hf", "peft": "peft"}
FORMATS = tuple(EXPORT_NAMES)
# written last: a folder holding it holds a finished export
METADATA = "metadata.json"


def format_names(formats: Any) -> list[str] | None:
    """The `formats` setting as a list of known format names (None: every format the model
    supports); checked before the checkpoint is read (was: after loading it, ~10 s)."""
    if formats is None:
        return None
    # formats=onnx on the command line: one format (a string is not a list of its letters)
    formats = [formats] if isinstance(formats, str) else [str(f) for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise SFTError(
            f"formats: expected a non-empty list of {', '.join(FORMATS)}, got {formats} (null: "
            "every format the model supports but peft, which is written when asked)"
        )
    # a name given twice is one format (was: written and checked twice, "exported hf, hf")
    return list(dict.fromkeys(formats))


def check_formats(
    formats: Any, modality: str, head_folds: bool = True, hf_backbone: bool = True
) -> list[str]:
    """The formats to write, checked before any is: `hf` needs a text model of a Hugging Face
    backbone whose head folds into one Linear (no MLP branch); the default (null) is every
    format the model supports."""
    why_no_hf = None
    if not hf_backbone:  # a text backbone of the user's own: no save_pretrained folder
        why_no_hf = "hf needs a Hugging Face backbone (sft's huggingface); this model's is not one"
    elif not head_folds:
        why_no_hf = (
            "hf needs a head that folds into one Linear (model.head.branch linear or none); "
            "this model's has an MLP branch"
        )
    formats = format_names(formats)
    if formats is None:
        if modality == "text" and why_no_hf:
            log.info(f"formats: no hf folder ({why_no_hf})")
        return ["torchscript", "onnx", *(["hf"] if modality == "text" and not why_no_hf else [])]
    if "hf" in formats and modality != "text":
        raise SFTError("formats: hf (a save_pretrained folder) is for text backbones only")
    if "peft" in formats and modality != "text":
        raise SFTError(
            "formats: peft (an adapter folder for a transformers base model) is for text "
            "backbones only"
        )
    if "hf" in formats and why_no_hf:
        raise SFTError(f"formats: {why_no_hf}: export torchscript or onnx")
    return formats


@torch.no_grad()
def max_abs_diff(run: Runner, args: tuple[torch.Tensor, ...], reference: torch.Tensor) -> float:
    return float((run(args).float() - reference).abs().max())


# (deployable-module arguments, the checkpoint model's logits for them)
Checks = list[tuple[tuple[torch.Tensor, ...], torch.Tensor]]


def float32_rounding(
    model: torch.nn.Module, inputs: list[Any], logits: list[torch.Tensor]
) -> float:
    """Largest |float64 - float32 logits| of the checkpoint model itself (its own forward, on
    its own `inputs`): the rounding floor that an export running other kernels (onnxruntime's
    convolutions) cannot be expected to beat. Of the exported module, it would repeat what the
    export got wrong and call it rounding."""
    wide = copy.deepcopy(model).double()

    def widened(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: widened(v) for k, v in x.items()}
        return x.double() if x.is_floating_point() else x

    with torch.no_grad():
        return max(
            float((wide(widened(x)) - ref).abs().max())
            for x, ref in zip(inputs, logits, strict=True)
        )


def check_parity(
    name: str,
    run: Runner,
    checks: Checks,
    atol: float,
    rtol: float,
    floor: Callable[[], float],
    unfaithful_why: str | None = None,
) -> float:
    """Largest |exported - checkpoint| over the parity batches; SFTError above
    `atol + rtol * max|checkpoint logits|`: float32 rounding grows with the logits' scale.
    `floor`: the checkpoint model's own float32 rounding (`float32_rounding`), asked only on a
    failure; `unfaithful_why`: what the export is known to leave out, said when it fails."""
    diff = max(max_abs_diff(run, args, ref) for args, ref in checks)
    scale = max(float(ref.abs().max()) for _, ref in checks)
    tolerance = atol + rtol * scale
    print(
        f"{name}: max abs diff vs the checkpoint {diff:.2e} (tolerance {tolerance:.2g} = atol "
        f"{atol:g} + rtol {rtol:g} x max|logit| {scale:.3g})"
    )
    if diff <= tolerance:
        return diff
    # also NaN: not faithful. Else tell float32 rounding (deep conv nets: ~1e-5) from a bug.
    rounding = floor() if diff == diff else float("inf")
    hint = (
        f"the checkpoint model itself in float64 differs from float32 by {rounding:.2g}, so this "
        f"is float32 rounding of other kernels: pass atol={4 * rounding:.1g} to accept it"
        if diff <= 4 * rounding
        else "the export is not faithful" + (f" ({unfaithful_why})" if unfaithful_why else "")
    )
    raise SFTError(
        f"{name} export differs from the checkpoint by {diff:.3g} > atol={atol:g} + rtol={rtol:g} "
        f"x max|logit| {scale:.3g} on real inputs; {hint}"
    )


def metadata(bundle: InferenceBundle, files: dict[str, str], diffs: dict[str, float]) -> dict:
    """What a user needs to feed the exported models and read their outputs."""
    meta: dict[str, Any] = {
        "checkpoint": str(bundle.ckpt_path.resolve()),
        "modality": bundle.modality,
        "class_names": bundle.class_names,
        "inputs": input_names(bundle.modality),
        "outputs": ["logits"],
        "files": files,
        "parity_max_abs_diff": diffs,
    }
    if bundle.modality == "text":
        meta.update(
            # formats=[hf] or [peft] alone write no tokenizer/: their folder holds one
            tokenizer=f"{files.get('tokenizer') or files.get('hf') or files.get('peft')} "
            "(AutoTokenizer.from_pretrained)",
            max_length=bundle.datamodule.max_length,
            input_dtype="int64 (batch, sequence)",
        )
    else:
        mean, std = bundle.mean_std
        meta.update(
            image_size=bundle.image_size,
            # what a service does to an image file before the model, as in training
            image_preparation=bundle.image_decoder().describe(),
            input_format="float32 (batch, 3, image_size, image_size), RGB in [0, 1]",
            normalization={"mean": list(mean), "std": list(std), "note": "inside the model"},
        )
    return meta


def targets(out: Path, formats: list[str], modality: str) -> list[Path]:
    """What an export of `formats` writes in `out`: each format's file or folder, the tokenizer
    the text TorchScript and ONNX models need, and metadata.json."""
    paths = [out / METADATA, *(out / EXPORT_NAMES[f] for f in formats)]
    if modality == "text" and {"torchscript", "onnx"} & set(formats):
        paths.append(out / "tokenizer")
    return paths


def export(cfg: DictConfig) -> Path:
    """Write the exports and metadata.json to the output folder; returns it. Nothing there is
    replaced, and a failed export (a parity check) leaves none of its files behind."""
    samples = cfg.parity_samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise SFTError(f"parity_samples must be an integer >= 2, got {samples!r}")
    check_value(cfg.atol, NonNegative, "atol")
    check_value(cfg.rtol, NonNegative, "rtol")
    check_value(cfg.onnx.opset, int | None, "onnx.opset")
    format_names(cfg.formats)
    trust = cfg.get("trust_remote_code") is True
    bundle = load_bundle(cfg.ckpt_path, "cpu", data_settings(cfg), trust)
    head = bundle.model.head  # a head of the user's may not say (sft.inference.deployable)
    hf_backbone = isinstance(bundle.model.backbone, HFEncoder)
    formats = check_formats(
        cfg.formats, bundle.modality, getattr(head, "folds", False), hf_backbone
    )
    if "peft" in formats:
        peft_base(bundle)  # an adapter file alone reproduces the model: before anything is written
    out = expand_home(str(cfg.output_dir or Path(cfg.paths.output_dir) / "export"))
    written = targets(out, formats, bundle.modality)
    for path in written:
        check_not_written(path, "output_dir")
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_exports(cfg, bundle, formats, out)
    except BaseException:
        for path in written:  # all new: checked above
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    print(f"exported {', '.join(formats)} to {out}")
    return out


def write_exports(cfg: DictConfig, bundle: InferenceBundle, formats: list[str], out: Path) -> None:

    module = build_deployable(bundle)
    try:
        args = parity_inputs(bundle, cfg.parity_samples)
    except SFTError as exc:  # e.g. the data moved since training
        # a Hugging Face dataset is found by its name (a local one: its folder), not data_dir
        key = "dataset_name" if bundle.datamodule.hparams.get("source") == "hf" else "data_dir"
        if key in (data_settings(cfg) or {}):
            raise
        raise SFTError(
            f"{exc} (sft-export checks its exports on the checkpoint's data: +data.{key}=... "
            "reads it elsewhere)"
        ) from exc
    smaller = sub_batch(args, bundle.modality)
    inputs = [model_inputs(bundle, a) for a in (args, smaller)]
    checks = [(a, bundle.logits(x).cpu()) for a, x in zip((args, smaller), inputs, strict=True)]

    def floor() -> float:
        return float32_rounding(bundle.model, inputs, [ref for _, ref in checks])

    why = forward_left_out(bundle.model)
    what = "validation texts" if bundle.modality == "text" else "images"
    print(
        f"parity inputs: {args[0].shape[0]} real {what}, and a sub-batch of {smaller[0].shape[0]}"
    )
    folded = check_parity(
        "folded model", lambda a: module(*a), checks, cfg.atol, cfg.rtol, floor, why
    )
    diffs = {"folded": folded}

    files: dict[str, str] = {}
    if bundle.modality == "text" and {"torchscript", "onnx"} & set(formats):
        save_tokenizer(bundle, out / "tokenizer")
        files["tokenizer"] = "tokenizer/"
    for fmt in formats:
        path = out / EXPORT_NAMES[fmt]
        with transformers_quiet():
            if fmt == "torchscript":
                path, run = export_torchscript(module, args, path)
            elif fmt == "onnx":
                path, run = export_onnx(
                    module, args, path, bundle.modality, cfg.onnx.dynamo, cfg.onnx.opset
                )
            elif fmt == "peft":
                path, run = export_peft(bundle, module.head, path)
            else:
                path, run = export_hf(bundle, module.head, path)
            diffs[fmt] = check_parity(fmt, run, checks, cfg.atol, cfg.rtol, floor, why)
        files[fmt] = path.name + ("/" if path.is_dir() else "")
    atomic_write_text(out / METADATA, json.dumps(metadata(bundle, files, diffs), indent=1))
