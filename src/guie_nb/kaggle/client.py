"""The Kaggle client side in one module: credentials, the client, and its checked operations.

Credentials: KAGGLE_USERNAME + KAGGLE_KEY, else kaggle.json (warned about unless mode 600). The key
is held only to hand it to the `kaggle` client's process environment; it never appears in a repr,
a message, a log line or a staged file, and `redact` scrubs it from text we pass on.

Each call runs the real `kaggle` client (2.2.x) in its own process (`_call.py`, the child side)
with the credentials in that process's environment only, and an empty KAGGLE_CONFIG_DIR so the
client reads nothing else. 401/403 raise AuthError naming the credentials; 429 and 5xx are
retried with exponential backoff, then raise KaggleError.

Guards against the client's own faults (kaggle 2.2.1):
- `kernels status` right after a push can report the previous run's COMPLETE: `run_status` takes
  COMPLETE only when the kernel's output carries the pushed run id (`guie_run.json`, written by
  the notebook; staging bakes the id), else reports STALE.
- `kernels output` saves any HTTP body as the file: `output` refuses non-200 answers, short
  bodies and unreadable zips, and checks `submission.zip` against the kernel's own report.
- `datasets version` skips a failed upload and creates the version anyway: `_call.py` makes a
  failed upload stop the call, so no version is created.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from guie_nb.kaggle.paths import RUN_MARKER, SUBMIT_REPORT, VERIFICATION_REPORT

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


class BrokenDownload(KaggleError):
    """A downloaded output file is not what the kernel wrote: HTTP error, cut short, unreadable
    zip, or a sha256 that differs from the kernel's own report."""


class StaleRun(KaggleError):
    """The status is not yet the pushed run's: the output carries another run id."""


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
        """Download the kernel's output files matching `file_pattern` (regex) into `dest`, each
        checked: HTTP 200 (in the child), as many bytes as announced, a readable zip for `*.zip`,
        and `submission.zip` against the kernel's own report (`verification.json` /
        `submit_report.json`) when that report is downloaded with it. Raises BrokenDownload."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            result = self.call("output", f"output of {kernel}", kernel=kernel, path=str(dest),
                               file_pattern=file_pattern)
        except KaggleError as err:
            if "download of output file" in str(err):
                raise BrokenDownload(f"broken download from {kernel}: {err}", err.status) from None
            raise
        for d in result.get("downloads", []):
            if d["content_length"] is not None and d["bytes"] != d["content_length"]:
                raise BrokenDownload(f"broken download from {kernel}: output file {d['url_name']!r} cut short: "
                                     f"{d['bytes']} of {d['content_length']} bytes")
        files = [Path(f) for f in result["files"]]
        for f in files:
            if f.suffix == ".zip":
                try:
                    with zipfile.ZipFile(f) as zf:
                        bad = zf.testzip()
                except (zipfile.BadZipFile, OSError) as err:
                    raise BrokenDownload(f"broken download from {kernel}: output file {f.name!r} is not a "
                                         f"readable zip ({err})") from None
                if bad is not None:
                    raise BrokenDownload(f"broken download from {kernel}: output file {f.name!r}: member {bad!r} "
                                         "fails its CRC check")
        self._check_against_report(kernel, dest, files)
        return files

    @staticmethod
    def _check_against_report(kernel: str, dest: Path, files: list[Path]) -> None:
        from guie_nb.export.handoff import HandoffError, check_zip_against, read_report

        names = {f.name for f in files}
        for report_name in (SUBMIT_REPORT, VERIFICATION_REPORT):
            if report_name in names:
                try:
                    report = read_report(dest / report_name, f"{kernel}'s {report_name}")
                    if report.get("submission") in names:
                        check_zip_against(dest / report["submission"], report, f"{kernel}'s {report['submission']}")
                except HandoffError as err:
                    raise BrokenDownload(f"broken download from {kernel}: {err}") from None

    def run_marker(self, kernel: str, dest: str | Path) -> dict | None:
        """The kernel's `guie_run.json` (the run id its latest output was written by), or None."""
        dest = Path(dest)
        (dest / RUN_MARKER).unlink(missing_ok=True)
        files = self.output(kernel, dest, rf"^{RUN_MARKER.replace('.', '[.]')}$")
        if not any(f.name == RUN_MARKER for f in files):
            return None
        try:
            return json.loads((dest / RUN_MARKER).read_text())
        except json.JSONDecodeError as err:
            raise BrokenDownload(f"broken download from {kernel}: {RUN_MARKER} is not JSON ({err})") from None

    def run_status(self, kernel: str, run_id: str, dest: str | Path) -> dict:
        """The status of the run `run_id` pushed to `kernel`: Kaggle's status, except that a COMPLETE
        (or ERROR) whose output carries another run id is reported as STALE (`found_run_id` says
        which). A COMPLETE with no run marker at all is STALE too: every staged kernel writes one."""
        st = dict(self.status(kernel))
        st["run_id"] = run_id
        if st["status"] in ("COMPLETE", "ERROR"):
            marker = self.run_marker(kernel, dest)
            found = marker.get("run_id") if marker else None
            st["found_run_id"] = found
            if found != run_id and (st["status"] == "COMPLETE" or found is not None):
                st["reported"], st["status"] = st["status"], "STALE"
        return st

    def wait_run(self, kernel: str, run_id: str, dest: str | Path, poll_s: float = 30.0,
                 max_polls: int = 2000, max_stale: int = 20) -> dict:
        """Poll `run_status` until the run ends; raises StaleRun after `max_stale` STALE polls in a
        row (the status never caught up with the push), KaggleError after `max_polls`."""
        stale = 0
        for _ in range(max_polls):
            st = self.run_status(kernel, run_id, dest)
            if st["status"] in TERMINAL:
                return st
            stale = stale + 1 if st["status"] == "STALE" else 0
            if stale >= max_stale:
                raise StaleRun(f"{kernel}: Kaggle reports {st['reported']}, but the output is from run "
                               f"{st['found_run_id']!r}, not the pushed run {run_id!r} ({stale} polls): stale status")
            self.sleep(poll_s)
        raise KaggleError(f"{kernel} still {st['status']} after {max_polls} polls")

    def submit(self, competition: str, kernel: str, version: int, file_name: str, message: str) -> dict:
        """`kaggle competitions submit <competition> -k <kernel> -v <version> -f <file_name> -m <message>`."""
        return self.call("submit", f"submit {kernel} version {version}", competition=competition, kernel=kernel,
                         version=int(version), file_name=file_name, message=message)

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
