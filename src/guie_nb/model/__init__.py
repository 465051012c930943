"""Keras 3 models: the ViT backbone (open_clip layout), the embedding head, margin heads."""
