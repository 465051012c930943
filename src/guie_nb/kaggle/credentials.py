"""Kaggle credentials: KAGGLE_USERNAME + KAGGLE_KEY, else kaggle.json (warned about unless mode 600).

The key is held only to hand it to the `kaggle` client's process environment. It never appears
in a repr, a message, a log line or a staged file; `redact` scrubs it from text we pass on.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path


class CredentialsError(RuntimeError):
    """No usable Kaggle credentials (the message says where they were looked for)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    key: str = field(repr=False)
    source: str = "environment"

    def redact(self, text: str) -> str:
        """`text` without the key, raw or inside a Basic auth header."""
        if not self.key:
            return text
        basic = base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return text.replace(basic, "***").replace(self.key, "***")


def config_file(env=None) -> Path:
    env = os.environ if env is None else env
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    return Path(env.get("HOME", str(Path.home()))) / ".kaggle" / "kaggle.json"


def load_credentials(env=None, warn=None) -> Credentials:
    """Credentials from the environment, else from kaggle.json; `warn(msg)` reports a loose mode."""
    env = os.environ if env is None else env
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    user, key = env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY")
    if user and key:
        return Credentials(user, key, "environment")
    path = config_file(env)
    if not path.is_file():
        raise CredentialsError("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put an API "
                               f"token in {path} (chmod 600); see docs/kaggle.md")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warn(f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")
    try:
        data = json.loads(path.read_text())
        user, key = data["username"], data["key"]
    except (json.JSONDecodeError, KeyError, TypeError):
        # never echo the file: it holds the key
        raise CredentialsError(f"{path} must be JSON with 'username' and 'key'") from None
    if not user or not key:
        raise CredentialsError(f"{path} has an empty 'username' or 'key'")
    return Credentials(str(user), str(key), str(path))


def owner_from_environment(env=None) -> str | None:
    """The Kaggle username, for kernel ids: KAGGLE_USERNAME, else kaggle.json's username."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_USERNAME"):
        return env["KAGGLE_USERNAME"]
    path = config_file(env)
    try:
        return json.loads(path.read_text()).get("username") or None
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
