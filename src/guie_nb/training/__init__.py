"""Training and fine-tuning of the embedding model with a margin head."""
