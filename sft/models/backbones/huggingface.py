"""Any Hugging Face encoder (BERT, RoBERTa, DistilBERT, DeBERTa, MiniLM, ...) as a text backbone.

Loaded through `AutoModel` from a hub id, a local folder or an alias of `sft.hub` (`minilm`:
the packaged all-MiniLM-L6-v2, which works offline). The backbone pools the last hidden states
into one vector per text; the classifier head is ours.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from sft.errors import SFTError
from sft.hub import load_pretrained, local_or_hub_name
from sft.utils.logs import first_few, rank_zero_warning

from .registry import register_backbone
from .wrappers import REMOVED_HEADS

Pooling = Literal["cls", "mean"]

log = logging.getLogger(__name__)

# "encoder.layer.3." (BERT, RoBERTa, DeBERTa), "transformer.layer.3." (DistilBERT), "layers.3."
_LAYER_RE = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, T, D) token states -> (B, D): the first ([CLS]) token, or the mean over real tokens
    (where attention_mask is 1), which sentence-transformers models (all-MiniLM-L6-v2) use.
    Shared by the backbone and the exported Hugging Face folder's check."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class HFEncoder(nn.Module):
    """Pooled features (B, hidden_size) of a transformers encoder `model`.

    For layer-wise LR decay it exposes `num_layers` and `layer_id(name)`: 0 for the embeddings,
    i + 1 for transformer layer i, num_layers + 1 for anything after the layers.
    """

    # before the transformers model's own module names in this module's (peft adapters, which
    # name the transformers model's, are read and written with it)
    wrapped_prefix = "model."

    def __init__(self, model: nn.Module, pooling: Pooling = "mean") -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise SFTError(
                f"backbone huggingface: pooling must be 'cls' or 'mean', got {pooling!r}"
            )
        # The pooler (BERT's dense+tanh on [CLS], trained for next-sentence prediction) is unused
        # by both poolings; dropping it avoids parameters without gradients (DDP rejects them).
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
            # a backbone checkpoint= of the transformers model's own weights has it: not loaded
            setattr(self, REMOVED_HEADS, ("model.pooler",))
        self.model = model
        self.pooling = pooling
        self.num_features: int = int(model.config.hidden_size)
        self.num_layers: int = int(model.config.num_hidden_layers)
        # DistilBERT has no segment embeddings and rejects token_type_ids; a model of one segment
        # type (type_vocab_size=1; DeBERTa's 0: none) indexed past it with a pair's second text
        # (type 1): both get none, the type 0 of every token
        self._takes_token_types = (
            "token_type_ids" in inspect.signature(model.forward).parameters
            and getattr(model.config, "type_vocab_size", 2) > 1
        )
        # what the token ids must fit: a max_length past the position table (every batch, a
        # shape test), a tokenizer of another model indexing past the embedding (the first one)
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self._vocab_rows = getattr(embedding, "num_embeddings", None)
        self.max_positions = _absolute_positions(model)
        self._ids_checked = False
        if _is_causal(model):
            self._refuse_or_warn_causal()

    def _refuse_or_warn_causal(self) -> None:
        """A decoder-only model (GPT-2, Llama, ...) was taken as an encoder without a word, and
        with pooling=cls its features ignored all but the first token of every text."""
        what = (
            f"the {self._described()} is a causal (decoder-only) model: each token sees only "
            "the tokens before it"
        )
        if self.pooling == "cls":
            raise SFTError(
                f"model.backbone: {what}, so its first token (pooling=cls) holds nothing of the "
                "rest of the text: set model.backbone.pooling=mean, or use an encoder (BERT, "
                "RoBERTa, DeBERTa, ...)"
            )
        rank_zero_warning(
            log,
            f"model.backbone: {what}; sft pools the mean of its token states (pooling=mean), "
            "where it fine-tunes encoders (BERT, RoBERTa, DeBERTa, ...)",
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **ignored: Any,  # other batch entries (e.g. lengths, ids) are not model inputs
    ) -> torch.Tensor:
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            self._check_inputs(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_types:
            inputs["token_type_ids"] = token_type_ids
        return pool(self.model(**inputs).last_hidden_state, attention_mask, self.pooling)

    def _check_inputs(self, input_ids: torch.Tensor) -> None:
        length = input_ids.shape[-1]
        if self.max_positions is not None and length > self.max_positions:
            raise SFTError(
                f"model.backbone: the {self._described()} has {self.max_positions} positions, "
                f"and a batch holds {length} tokens: set data.max_length={self.max_positions} "
                "(or less)"
            )
        if self._ids_checked or self._vocab_rows is None:
            return
        self._ids_checked = True  # once: the maximum waits for the device
        top = int(input_ids.max()) if input_ids.numel() else -1
        if top >= self._vocab_rows:
            raise SFTError(
                f"model.backbone: token id {top} is outside the {self._vocab_rows}-token "
                f"vocabulary of the {self._described()}: the tokenizer (data.tokenizer) is "
                "another model's"
            )

    def _described(self) -> str:
        return f"{self.model.config.model_type} model {self.model.config.name_or_path!r}"

    def layer_id(self, param_name: str) -> int:
        """Depth of parameter `param_name` (a name from this module's named_parameters())."""
        match = _LAYER_RE.search(param_name)
        if match:
            return int(match.group(1)) + 1
        if "embeddings" in param_name:  # also DeBERTa's encoder.rel_embeddings, used by all layers
            return 0
        return self.num_layers + 1

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, num_layers={self.num_layers}"


def _saved_config(cfg: dict) -> dict:
    path = cfg.get("model_name_or_path")
    if isinstance(path, str):
        cfg["model_name_or_path"] = local_or_hub_name(path)
    return cfg


@register_backbone(
    "huggingface",
    modality="text",
    cpu_bf16=True,
    saved_config=_saved_config,
    local_paths=("model_name_or_path",),
)
def huggingface(
    pretrained: bool = False,
    model_name_or_path: str = "minilm",
    pooling: Pooling = "mean",
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
    config_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """An `AutoModel` encoder: pretrained weights, or random init from its config (pretrained=False:
    tests, and checkpoints that bring their own weights).

    config_overrides: config fields to change (e.g. hidden_dropout_prob, or a tiny
        num_hidden_layers/hidden_size for tests with pretrained=False).
    trust_remote_code: run model code shipped in the repository; only for sources you trust.
    """
    import huggingface_hub.errors
    from transformers import AutoConfig, AutoModel  # slow import: only when a text model is built

    # huggingface_hub before strict dataclasses (transformers 4.x) raises no such error
    strict_errors = getattr(huggingface_hub.errors, "StrictDataclassError", ())
    overrides = dict(config_overrides or {})
    try:
        config, unused = load_pretrained(
            AutoConfig.from_pretrained,
            model_name_or_path,
            "model",
            trust_remote_code=trust_remote_code,
            return_unused_kwargs=True,
            **overrides,
        )
    except strict_errors as exc:  # a value of the wrong type: was a traceback
        reason = " ".join(str(exc).split())
        raise SFTError(f"model.backbone.config_overrides: {reason}") from None
    if unused:  # a misspelt or foreign field: transformers would ignore it
        key = next(iter(unused))
        close = difflib.get_close_matches(key, sorted(config.to_dict()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SFTError(
            f"model.backbone.config_overrides: {config.model_type} configs have no field "
            f"{key!r}{hint}"
        )
    if getattr(config, "auto_map", None) and not trust_remote_code:
        # a built-in model_type beside the folder's own code: transformers builds its own
        # class without a word (was: silent, as for Jina v2's config, model_type bert)
        rank_zero_warning(
            log,
            f"{model_name_or_path}: its config.json names code of its own (auto_map), which runs "
            f"only with model.backbone.trust_remote_code=true; transformers' built-in "
            f"{config.model_type} model is used instead, which may not be the model it ships",
        )
    if getattr(config, "is_encoder_decoder", False):
        raise SFTError(
            f"backbone huggingface: {model_name_or_path!r} is an encoder-decoder "
            f"({config.model_type}); sft fine-tunes encoders (BERT, RoBERTa, DeBERTa, ...)"
        )
    model_class = encoder_class(config) or AutoModel
    if pretrained:
        load = partial(
            load_pretrained,
            model_class.from_pretrained,
            model_name_or_path,
            "model",
            config=config,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
        try:
            model, loaded = load()
        except RuntimeError as exc:
            # "size mismatch for ...", "You set `ignore_mismatched_sizes` to `False`"
            if "mismatch" not in str(exc):
                raise
            if overrides:
                raise SFTError(
                    f"model.backbone.config_overrides {', '.join(sorted(overrides))}: the "
                    f"pretrained weights of {model_name_or_path!r} do not fit a model of these "
                    "settings (their shapes differ); change settings that keep the shapes "
                    "(dropout, ...), or train from scratch with model.backbone.pretrained=false"
                ) from exc
            # the folder's config.json and weights disagree (was: Hydra's InstantiationException
            # with "look at the above report"): loaded again, only to name the weights
            _, loaded = load(ignore_mismatched_sizes=True)
            raise SFTError(
                f"model.backbone: the weights of {model_name_or_path!r} do not fit its "
                f"config.json: {_named_keys(loaded.get('mismatched_keys'))} have other shapes "
                "there; give a folder whose config.json the weights were saved with"
            ) from exc
        _warn_of_missing_weights(loaded.get("missing_keys"), model_name_or_path)
        # fp32 whatever the stored dtype (transformers 5 keeps e.g. fp16 weights as they are):
        # Lightning's mixed precision expects fp32 parameters.
        model = model.float()
    elif model_class is AutoModel:
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    else:
        model = model_class._from_config(config)  # as AutoModel.from_config: dtype, attention
    if gradient_checkpointing:
        _enable_checkpointing(model, model_name_or_path)
    return HFEncoder(model, pooling)


def encoder_class(config: Any) -> type | None:
    """The class of an encoder saved without its decoder (`T5EncoderModel`, as sentence-T5
    models are), which `AutoModel` would build as the whole encoder-decoder with a random
    decoder (was: a warning of missing weights, then a crash in the first forward); None: use
    `AutoModel` (also for a model that maps `AutoModel` to code of its own)."""
    import transformers

    if "AutoModel" in (getattr(config, "auto_map", None) or {}):
        return None
    for name in getattr(config, "architectures", None) or ():
        model_class = getattr(transformers, name, None) if name.endswith("EncoderModel") else None
        if model_class is not None and isinstance(config, model_class.config_class):
            return model_class
    return None


def _is_causal(model: nn.Module) -> bool:
    """Whether the first token's state ignores the tokens after it (a decoder's causal mask).
    `is_decoder` says so for encoders built as decoders; families with a masked-LM model are
    encoders (and some, BigBird, change their attention for good on a short input); any other
    (GPT-2's `is_decoder` is False) is run on two 3-token texts that differ only in their last
    token."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = model.config
    if getattr(config, "is_decoder", False):
        return True
    vocab = getattr(config, "vocab_size", None)
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or not vocab or vocab < 3:
        return False
    ids = torch.tensor([[0, 1, 1], [0, 1, 2]])
    training = model.training
    try:
        with torch.no_grad():
            states = model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
        first = states.last_hidden_state[:, 0]
        return torch.allclose(first[0], first[1], rtol=1e-5, atol=1e-6)
    except Exception:  # a model of other inputs, on no device (meta): nothing to tell from it
        return False
    finally:
        model.train(training)


def _named_keys(keys: Any) -> str:
    """A few weight names of a loading report's key list ((name, ...) tuples or names)."""
    names = sorted(k[0] if isinstance(k, tuple) else str(k) for k in keys or ())
    return f"{len(names)} weight(s) ({first_few(names, 3)})" if names else "some weights"


def _warn_of_missing_weights(missing: Any, name: str) -> None:
    """A warning for pretrained weights the model has and the files lack: they start random,
    and L2-SP then pulls them towards that random start (was: transformers' report alone). The
    pooler is dropped (HFEncoder), so its weights are not missed."""
    missing = [k for k in missing or () if not str(k).startswith("pooler.")]
    if missing:
        rank_zero_warning(
            log,
            f"model.backbone: {_named_keys(missing)} of the model are not in the weights of "
            f"{name!r} and start random: its config.json describes a larger model than the "
            "weights (e.g. num_hidden_layers), or the weights are of another architecture",
        )


def _absolute_positions(model: nn.Module) -> int | None:
    """How many positions an absolute position table holds (RoBERTa's rows start after its
    padding index); None for relative or rotary positions, which set no such limit. The
    BERT family's `embeddings.position_embeddings`, GPT-2's `wpe` (was: not looked for, and a
    longer batch an IndexError traceback)."""
    table = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        table = getattr(model, "wpe", None)
    if not isinstance(table, nn.Embedding):
        return None
    offset = table.padding_idx + 1 if table.padding_idx is not None else 0
    return table.num_embeddings - offset


def _enable_checkpointing(model: nn.Module, name: str) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise SFTError(
            f"backbone huggingface: {name!r} does not support gradient checkpointing; set "
            "model.backbone.gradient_checkpointing=false"
        )
    # Non-reentrant checkpointing works with frozen inputs (embeddings) and DDP.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
