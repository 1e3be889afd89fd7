from sft.callbacks.backbone_unfreeze import BackboneUnfreeze

__all__ = ["BackboneUnfreeze"]
