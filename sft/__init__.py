"""sft: supervised fine-tuning of pretrained backbones with a fused head (Lightning + Hydra)."""

__version__ = "0.1.0"
