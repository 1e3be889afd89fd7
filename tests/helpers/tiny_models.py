"""Tiny models the tests build: a 2-layer, 32-wide BERT with MiniLM's vocabulary and random
weights (no download, seconds to train on CPU)."""

TINY_BERT_OVERRIDES = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
# model.backbone's config for it
TINY_BERT = {
    "_target_": "sft.models.backbones.create_backbone",
    "name": "huggingface",
    "model_name_or_path": "minilm",
    "pretrained": False,
    "config_overrides": TINY_BERT_OVERRIDES,
}
