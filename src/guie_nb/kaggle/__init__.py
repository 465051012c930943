"""Kaggle plumbing: kernel metadata, staging (baked notebooks + metadata), the helper-package
dataset, and push / status / output through the real `kaggle` client.

Nothing here is imported by the notebooks themselves: they only need the bootstrap cell that
puts the helper dataset on `sys.path` (see `layout.HELPERS_SLUG`).
"""
