"""Inference from a training checkpoint: predictions on users' files (sft-predict) and
self-contained exports (sft-export: TorchScript, ONNX, Hugging Face folders)."""
