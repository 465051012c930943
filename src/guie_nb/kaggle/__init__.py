"""Kaggle plumbing: kernel metadata, staging (baked notebooks + metadata + run ids), the
helper-package dataset, the client (credentials, checked push / status / output / submit through
the real `kaggle` client), the chain state machine, and `python -m guie_nb.kaggle`.

The notebooks import only the neutral `paths` and `inputs` (through `guie_nb.environment`,
`guie_nb.model.weights`, `guie_nb.export.handoff`), never the client: their bootstrap cell puts
the helper dataset on `sys.path` (see `paths.HELPERS_SLUG`).
"""
