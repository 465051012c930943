"""Push, poll and download through the real `kaggle` client, with retries and clear failures.

Each call runs the client in its own process (`_call.py`) with the credentials in that process's
environment only, and an empty KAGGLE_CONFIG_DIR so the client reads nothing else. 401/403 raise
AuthError naming the credentials; 429 and 5xx are retried with exponential backoff, then raise
KaggleError. Every message passed on has the key scrubbed out.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from guie_nb.kaggle.credentials import Credentials

log = logging.getLogger(__name__)
_CALL = Path(__file__).with_name("_call.py")
MARKER = "@@guie-kaggle-result@@"
TERMINAL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"}


class KaggleError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthError(KaggleError):
    """401/403: the credentials are wrong, or they may not access this kernel or dataset."""


def retriable(status: int | None) -> bool:
    return status == 429 or (status is not None and 500 <= status < 600)


class KaggleClient:
    def __init__(self, credentials: Credentials, retries: int = 4, backoff_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, timeout_s: float = 600):
        self.credentials = credentials
        self.retries, self.backoff_s, self.sleep, self.timeout_s = retries, backoff_s, sleep, timeout_s

    # -- one call -------------------------------------------------------------------------
    def _env(self, config_dir: str) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR")}
        env.update(KAGGLE_USERNAME=self.credentials.username, KAGGLE_KEY=self.credentials.key,
                   KAGGLE_CONFIG_DIR=config_dir, PYTHONUNBUFFERED="1")
        env.pop("VERBOSE", None), env.pop("VERBOSE_OUTPUT", None)  # verbose mode prints auth headers
        return env

    def _once(self, op: str, kwargs: dict) -> dict:
        with tempfile.TemporaryDirectory(prefix="guie-kaggle-") as config_dir:
            try:
                proc = subprocess.run([sys.executable, str(_CALL), op, json.dumps(kwargs)],
                                      env=self._env(config_dir), capture_output=True, text=True,
                                      timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                return {"ok": False, "status": None, "message": f"kaggle {op} timed out after {self.timeout_s} s"}
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
        if not lines:
            tail = self.credentials.redact((proc.stdout + proc.stderr)[-2000:])
            return {"ok": False, "status": None, "message": f"kaggle client crashed (exit {proc.returncode}): {tail}"}
        return json.loads(lines[-1][len(MARKER):])

    def call(self, op: str, what: str, **kwargs) -> dict:
        redact = self.credentials.redact
        for attempt in range(self.retries + 1):
            out = self._once(op, kwargs)
            if out.get("ok"):
                return out["result"]
            status, message = out.get("status"), redact(str(out.get("message", "")))
            if status in (401, 403):
                raise AuthError(
                    f"{what}: Kaggle refused the credentials of user {self.credentials.username!r} "
                    f"(HTTP {status}; from {self.credentials.source}). Check KAGGLE_USERNAME/KAGGLE_KEY "
                    f"or kaggle.json (a fresh token from kaggle.com/settings), and that this user owns "
                    f"or may access the kernel/dataset.", status)
            if retriable(status) and attempt < self.retries:
                delay = self.backoff_s * 2 ** attempt
                log.warning("%s: HTTP %s, retry %d/%d in %.1f s", what, status, attempt + 1, self.retries, delay)
                print(f"{what}: HTTP {status}, retrying in {delay:.1f} s ({attempt + 1}/{self.retries})",
                      file=sys.stderr, flush=True)
                self.sleep(delay)
                continue
            if retriable(status):
                raise KaggleError(f"{what}: Kaggle kept failing (HTTP {status}) after {self.retries} "
                                  f"retries: {message}", status)
            raise KaggleError(f"{what} failed" + (f" (HTTP {status})" if status else "") + f": {message}", status)
        raise AssertionError("unreachable")

    # -- operations -----------------------------------------------------------------------
    def push_kernel(self, folder: str | Path, timeout_s: int | None = None) -> dict:
        result = self.call("push", f"push {folder}", folder=str(folder),
                           timeout=str(timeout_s) if timeout_s else None)
        bad = {k: v for k, v in result["invalid_sources"].items() if v}
        if result.get("error"):
            raise KaggleError(f"push {folder}: Kaggle rejected the kernel: {result['error']}")
        if bad:
            raise KaggleError(f"push {folder}: Kaggle dropped invalid sources {bad}; the kernel would run "
                              "without them. Check the handles (and that the dataset/kernels exist)")
        return result

    def status(self, kernel: str) -> dict:
        return self.call("status", f"status {kernel}", kernel=kernel)

    def wait(self, kernel: str, poll_s: float = 30.0, max_polls: int = 2000) -> dict:
        """Poll until the kernel's session ends; returns the last status."""
        for _ in range(max_polls):
            st = self.status(kernel)
            if st["status"] in TERMINAL:
                return st
            self.sleep(poll_s)
        raise KaggleError(f"{kernel} still {st['status']} after {max_polls} polls")

    def output(self, kernel: str, dest: str | Path, file_pattern: str | None = None) -> list[Path]:
        Path(dest).mkdir(parents=True, exist_ok=True)
        result = self.call("output", f"output of {kernel}", kernel=kernel, path=str(dest),
                           file_pattern=file_pattern)
        return [Path(f) for f in result["files"]]

    def push_dataset(self, folder: str | Path, notes: str) -> dict:
        result = self.call("dataset", f"dataset {folder}", folder=str(folder), notes=notes)
        if result.get("error"):
            raise KaggleError(f"dataset {folder}: Kaggle rejected it: {result['error']}")
        return result

    def wait_dataset(self, ref: str, poll_s: float = 10.0, max_polls: int = 360) -> str:
        """Poll until the dataset's new version is processed: kernels pushed earlier would
        attach the previous version."""
        for _ in range(max_polls):
            status = self.call("dataset_status", f"dataset status {ref}", ref=ref)["status"]
            if status == "ready":
                return status
            if status in ("failed", "deleted"):
                raise KaggleError(f"dataset {ref} is {status} on Kaggle; see its page for the processing error")
            self.sleep(poll_s)
        raise KaggleError(f"dataset {ref} still {status} after {max_polls} polls")
