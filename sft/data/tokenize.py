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


def count_cut(encoded: Any) -> int:
    """How many of the texts `encode_texts` returned were cut at its `max_length`."""
    return sum(1 for encoding in encoded.encodings if encoding.overflowing)


def cut_note(cut: int, total: int, max_length: int, pairs: bool = False) -> str:
    if pairs:  # truncation="longest_first": the longer of the two texts loses tokens first
        return (
            f"{cut} of {total} pairs are longer than data.max_length={max_length} tokens "
            "together and are cut to it, the longer text first"
        )
    return (
        f"{cut} of {total} texts are longer than data.max_length={max_length} tokens and are cut "
        "to it"
    )
