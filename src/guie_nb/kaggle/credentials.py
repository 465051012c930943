"""Kept for imports: the credentials live in `guie_nb.kaggle.client` with the client."""

from guie_nb.kaggle.client import (  # noqa: F401
    Credentials, CredentialsError, config_file, load_credentials, owner_from_environment)
