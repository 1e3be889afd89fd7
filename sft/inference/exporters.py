"""Writers of the export formats, each with a runner that loads the written files back the way a
user without sft would (torch.jit.load, onnxruntime, transformers) for the parity check."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from sft.errors import SFTError, first_line
from sft.inference.bundle import InferenceBundle
from sft.models.adapters import (
    adapter_layers,
    merge_adapters,
    modules_saved,
    saved_module_parameters,
)
from sft.models.backbones.huggingface import HFEncoder, encoder_class, pool
from sft.utils.io import atomic_write

EXPORT_EXTRA_HINT = "pip install 'sft[export]'"
# Runs a written export on deployable-module arguments, returns logits as a CPU tensor.
Runner = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


@contextlib.contextmanager
def transformers_quiet() -> Iterator[None]:
    """transformers' warnings and progress bars off while an export is written and loaded back.
    They are about sft's own steps, not the user's: the pooler that every reload of an `hf/`
    folder reports as newly initialised (sft's pooling never uses it, and training dropped it),
    the `loss_type` and deprecated attributes that tracing reads, "Loading weights" bars. The
    parity line printed after each format says whether the export is right."""
    logger = logging.getLogger("transformers")  # transformers' library root logger
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # image-only installs: nothing of transformers' runs
        hf_logging = None
    bars = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def input_names(modality: str) -> list[str]:
    return ["input_ids", "attention_mask"] if modality == "text" else ["images"]


def export_torchscript(
    module: nn.Module, args: tuple[torch.Tensor, ...], path: Path
) -> tuple[Path, Runner]:
    """`torch.jit.trace`: the exported graph holds no Python, so no sft either."""
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-dependent Python branches get fixed for the example's layout (e.g. "q_length
        # > 1"); the parity check on another batch and sequence size shows they generalise.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # deprecations that are not the user's to act on: torch 2.14 flags every torch.jit
        # call (the format is what was asked for), tracing reads transformers' old attributes
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, args)
        # through a Python file, whole or not there: torch's own file writer aborted the process
        # on a full disk (a C++ terminate), leaving a cut-off model.pt
        atomic_write(path, lambda f: torch.jit.save(traced, f))
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return loaded(*inputs)

    return path, run


# torch's dynamo ONNX exporter writes this opset or a later one (it converts down no further)
DYNAMO_MIN_OPSET = 18


def export_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    modality: str,
    dynamo: bool = True,
    opset: int | None = None,
) -> tuple[Path, Runner]:
    """`torch.onnx.export` with a dynamic batch (and sequence) axis, checked with onnxruntime.

    dynamo=True is torch's default exporter (torch.export + onnxscript); dynamo=False the
    deprecated TorchScript-based one, several times faster to run on small models.
    """
    if dynamo and opset is not None and opset < DYNAMO_MIN_OPSET:
        # (was: an opset-18 file written, exit status 0, and onnxscript's traceback printed)
        raise SFTError(
            f"onnx.opset={opset}: torch's dynamo exporter (onnx.dynamo=true) writes opset "
            f"{DYNAMO_MIN_OPSET} or later; onnx.dynamo=false exports older opsets"
        )
    try:
        import onnx
        import onnxruntime as ort

        if dynamo:
            import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as exc:
        raise SFTError(f"ONNX export needs {exc.name}: {EXPORT_EXTRA_HINT}") from None
    # onnxscript/onnx_ir log every optimisation pass at INFO: noise in a run's log
    for logger in ("onnxscript", "onnx_ir"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    names = input_names(modality)
    dims = {0: "batch", 1: "sequence"} if modality == "text" else {0: "batch"}
    # verbose=False: without it the dynamo exporter prints each of its stages to stdout
    options: dict = {"verbose": False, **({"opset_version": opset} if opset is not None else {})}
    if dynamo:
        # one Dim object per axis name: input_ids and attention_mask share batch and sequence
        shared = {v: torch.export.Dim(v) for v in dims.values()}
        shapes = {k: {i: shared[v] for i, v in dims.items()} for k in names}
        # one self-contained file, unless the weights pass protobuf's 2 GB limit
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        options.update(dynamic_shapes=shapes, external_data=size > 1_800_000_000)
    else:
        options.update(dynamic_axes={**{k: dims for k in names}, "logits": {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter; parity is checked below
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=dynamo,
                input_names=names,
                output_names=["logits"],
                **options,
            )
        except Exception as exc:  # e.g. RuntimeError: Unsupported onnx_opset_version: 3
            if opset is None or "opset" not in str(exc).lower():
                raise
            reason = first_line(exc)
            raise SFTError(f"onnx.opset={opset}: the ONNX exporter refused it ({reason})") from exc
    written = next(
        (
            o.version
            for o in onnx.load(str(path), load_external_data=False).opset_import
            if not o.domain
        ),
        None,
    )
    if opset is not None and written != opset:  # the exporter chose another, with a warning
        raise SFTError(
            f"onnx.opset={opset}: the exporter wrote opset {written} instead (the dynamo "
            "exporter converts to the opsets onnxscript supports): choose another, or leave "
            "onnx.opset out"
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        feeds = {n: t.cpu().numpy() for n, t in zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(["logits"], feeds)[0])

    return path, run


def save_tokenizer(bundle: InferenceBundle, folder: Path) -> None:
    """The run's tokenizer, saved to truncate at the length the model was trained and checked
    with (`tok(texts, truncation=True)` would otherwise cut at the backbone's 512). Its
    tokenizer.json too, which the `tokenizers` library (Python, Rust) and ONNX services read
    alone: it truncates there and pads a batch to its longest text (was: the packaged MiniLM's,
    which cut at 128 and padded every text to 128, so texts longer than the trained 64 tokens
    scored otherwise, without a word)."""
    tokenizer = bundle.datamodule.tokenizer
    max_length = bundle.datamodule.max_length
    backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer's
    saved = (tokenizer.model_max_length, dict(tokenizer.init_kwargs), tokenizer.model_input_names)
    saved_backend = (backend.truncation, backend.padding) if backend is not None else None
    tokenizer.model_max_length = max_length
    if "max_length" in tokenizer.init_kwargs:  # a stray call default in tokenizer_config.json
        tokenizer.init_kwargs["max_length"] = max_length
    # what the exported models take (pair models are not exported): `tok(texts)` passes on as
    # it is (was: BERT's token_type_ids too, which onnxruntime refused as an unknown input)
    # (save_pretrained writes the init_kwargs' keys, each with the attribute's value)
    tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = input_names("text")
    if backend is not None:
        backend.enable_truncation(max_length)
        # a batch padded to its longest text, one text not at all (was: every text to 128)
        backend.no_padding()
        if tokenizer.pad_token is not None:
            backend.enable_padding(
                direction=tokenizer.padding_side,
                pad_id=tokenizer.pad_token_id,
                pad_type_id=tokenizer.pad_token_type_id,
                pad_token=tokenizer.pad_token,
            )
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.model_max_length, tokenizer.init_kwargs, tokenizer.model_input_names = saved
        if saved_backend is not None:
            truncation, padding = saved_backend
            backend.no_truncation()
            if truncation is not None:
                backend.enable_truncation(**truncation)
            if padding is not None:
                backend.enable_padding(**padding)


def export_hf(bundle: InferenceBundle, head: nn.Module, folder: Path) -> tuple[Path, Runner]:
    """A `save_pretrained` folder: the encoder, its tokenizer, and the folded head.

    Our pooling (mean over real tokens, or [CLS]) and head are not a transformers class, so the
    head goes beside the encoder as `classifier_head.safetensors` (weight, bias) with
    `sft_head.json` saying how logits are computed and naming the classes. `config.json` does
    not name them: `AutoModelForSequenceClassification` (and `pipeline`) would load the folder
    with a new, random classifier and present its scores under the real class names.
    """
    from transformers import AutoModel

    encoder = bundle.model.backbone
    if not isinstance(encoder, HFEncoder):
        raise SFTError("formats=[hf] needs a Hugging Face text backbone (backbone huggingface)")
    if not isinstance(head, nn.Linear):
        raise SFTError("formats=[hf] needs a head that folds into one Linear (branch linear/none)")
    names = bundle.class_names
    # LoRA adapters folded in: the folder holds a plain transformers model
    hf_model = merge_adapters(copy.deepcopy(encoder.model))
    # the class that loads it: AutoModel builds an encoder saved alone (T5EncoderModel) with a
    # random decoder
    model_class = encoder_class(hf_model.config) or AutoModel
    # no class names, not even the backbone's own (a published fine-tune's): see above
    hf_model.config.id2label = {i: f"LABEL_{i}" for i in range(len(names))}
    hf_model.config.label2id = {f"LABEL_{i}": i for i in range(len(names))}
    folder.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(folder)
    save_tokenizer(bundle, folder)
    _save_head(bundle, head, folder, f"{model_class.__name__}(input_ids, attention_mask)")
    # a model of its own code (auto_map): the command was given trust_remote_code=true for it
    # (check_remote_code), and the folder holds that code (was: refused at this reload)
    trusted = bool(bundle.model.hparams["backbone"].get("trust_remote_code"))
    reloaded = model_class.from_pretrained(folder, trust_remote_code=trusted).eval()
    return folder, _pooled_runner(reloaded, head, encoder.pooling)


def _save_head(bundle: InferenceBundle, head: nn.Linear, folder: Path, encoder_call: str) -> None:
    """The folded head beside the encoder (`classifier_head.safetensors`: weight, bias) and
    `sft_head.json`, which says how logits are computed and names the classes."""
    from safetensors.torch import save_file

    save_file(
        {"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu()},
        str(folder / "classifier_head.safetensors"),
    )
    (folder / "sft_head.json").write_text(
        json.dumps(
            {
                "pooling": bundle.model.backbone.pooling,
                "class_names": bundle.class_names,
                "logits": f"pool({encoder_call}.last_hidden_state) @ weight.T + bias; pool: "
                "mean over tokens where attention_mask is 1, or the first ([CLS]) token",
                "max_length": bundle.datamodule.max_length,
            },
            indent=1,
        )
    )


def _pooled_runner(encoder: nn.Module, head: nn.Module, pooling: str) -> Runner:
    def run(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        input_ids, mask = inputs
        with torch.no_grad():
            hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return head(pool(hidden, mask, pooling))

    return run


def peft_base(bundle: InferenceBundle) -> str:
    """The base model a peft adapter of this checkpoint adapts (a hub id or local folder);
    SFTError, saying why, when an adapter file alone would not reproduce the model: it has no
    adapters, its head does not fold, or its backbone's own weights are not the base's (trained
    biases or norms, weights of another file, a changed config, no pretrained weights)."""
    backbone, adapter = bundle.trained_backbone, bundle.model.hparams.get("adapter")
    if not isinstance(bundle.model.backbone, HFEncoder):
        raise SFTError("formats=[peft] needs a Hugging Face text backbone (backbone huggingface)")
    if adapter is None:
        raise SFTError(
            "formats=[peft]: this model has no adapters (it trained without adapter=lora)"
        )
    if not getattr(bundle.model.head, "folds", False):
        raise SFTError(
            "formats=[peft] needs a head that folds into one Linear (branch linear/none)"
        )
    why = None
    if adapter.get("bias", "none") != "none" or adapter.get("train_norms"):
        why = "it also trained the backbone's biases or norms (adapter.bias, adapter.train_norms)"
    elif (
        not backbone.get("pretrained")
        or backbone.get("checkpoint")
        or backbone.get("config_overrides")
    ):
        why = (
            "its base is not a published model's weights (pretrained=false, a checkpoint or "
            "config_overrides)"
        )
    if why:
        raise SFTError(
            f"formats=[peft]: a LoRA adapter file would not reproduce this model, as {why}: "
            "export hf (the adapters merged into a whole model)"
        )
    return str(backbone["model_name_or_path"])


def export_peft(bundle: InferenceBundle, head: nn.Module, folder: Path) -> tuple[Path, Runner]:
    """A peft adapter folder (`adapter_config.json`, `adapter_model.safetensors`, as
    `PeftModel.save_pretrained` writes them) for the base model it names, with the run's
    tokenizer and the folded head (`classifier_head.safetensors`, `sft_head.json`, as in the hf
    folder): `PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)` is the encoder.
    sft injects its adapters into its backbone wrapper (peft's `inject_adapter_in_model`), which
    keeps no PeftModel to save: peft's own config and state dict of them, named from the
    transformers model the wrapper holds."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoModel

    from sft.hub import ALIASES, resolve_model_name

    base = peft_base(bundle)
    encoder = bundle.model.backbone  # HFEncoder: the transformers model is its `model`
    inner = encoder.wrapped_prefix
    state = get_peft_model_state_dict(encoder, adapter_name="default")
    # modules trained whole: peft's file holds them by their own weights' names
    names = bundle.model.hparams["adapter"].get("modules_to_save") or []
    saved = modules_saved(encoder, names, str(bundle.trained_backbone.get("name")))
    state |= saved_module_parameters(encoder, saved)
    weights = {
        # PeftModel's names: `base_model.model.<module of the transformers model>...`
        "base_model.model." + name.removeprefix(inner): tensor.detach().cpu().contiguous()
        for name, tensor in state.items()
    }
    config = copy.copy(encoder.peft_config["default"])
    config.target_modules = sorted(name.removeprefix(inner) for name in adapter_layers(encoder))
    config.modules_to_save = sorted(name.removeprefix(inner) for name in saved) or None
    # an alias (the packaged MiniLM) as its hub id: the folder is used elsewhere
    config.base_model_name_or_path = ALIASES[base][1] if base in ALIASES else base
    config.inference_mode = True
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file(weights, str(folder / "adapter_model.safetensors"))
    save_tokenizer(bundle, folder)
    model_class = encoder_class(encoder.model.config) or AutoModel
    _save_head(
        bundle,
        head,
        folder,
        f"PeftModel({model_class.__name__}(base), this folder)(input_ids, attention_mask)",
    )
    # loaded back as a peft user would, on the base's published weights, in float32 as sft
    # trains it (transformers 5 loads a half-precision base as stored); a base of its own code
    # as the command was allowed (check_remote_code)
    trusted = bool(bundle.trained_backbone.get("trust_remote_code"))
    base_model = model_class.from_pretrained(
        resolve_model_name(base), dtype=torch.float32, trust_remote_code=trusted
    )
    reloaded = PeftModel.from_pretrained(base_model, str(folder)).eval()
    return folder, _pooled_runner(reloaded, head, encoder.pooling)
