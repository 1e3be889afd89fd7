"""The one tokenizer call of sft: training (the token cache) and inference (sft-predict,
sft-export) encode texts alike, so a model sees at inference the inputs it was trained on."""

from __future__ import annotations

from typing import Any


def encode_texts(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> Any:
    """Token ids of `texts` (with `pairs`: sentence pairs) truncated to `max_length` tokens
    (pairs: longest first), plus `token_type_ids` when the model takes them; no attention
    mask, which the collator makes when it pads. A transformers `BatchEncoding` of lists."""
    return tokenizer(
        texts,
        pairs,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids="token_type_ids" in tokenizer.model_input_names,
    )
