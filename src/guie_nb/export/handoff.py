"""The verified `submission.zip` handed from the export kernel to the submit kernel.

The export kernel (04) verifies its zip in the scorer runtimes, which needs internet (it creates
Python 3.9 + TF 2.6.4 / torch 1.11 environments), so its output cannot be submitted: the
competition runs a submitted notebook offline. So 04 writes `verification.json` beside the zip
(`write_verification`), and the submit kernel (05, internet off) mounts 04's output, checks the
zip against that report (`check_verified`) and copies it to its own output with
`submit_report.json` (`hand_over`). `make submit` then submits 05's version, after checking the
downloaded zip against 05's report (`check_zip_against`).

Standard library and `export.submission` only: the submit kernel imports no TensorFlow.

Report schemas (JSON):
    verification.json  {"schema": 1, "submission": "submission.zip", "sha256": hex, "size": bytes,
                        "format": "saved_model" | "torchscript", "passed": bool, "failures": [str],
                        "verified_in": str, "verified_images": int, "run_id": str | null}
    submit_report.json {"schema": 1, "submission": "submission.zip", "sha256": hex, "size": bytes,
                        "format": str, "passed": bool, "run_id": str | null,
                        "export_run_id": str | null, "export_sha256": hex}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

from guie_nb.export.submission import SAVED_MODEL, TORCHSCRIPT, submission_format
from guie_nb.kaggle.paths import SUBMISSION, SUBMIT_REPORT, VERIFICATION_REPORT

FORMATS = (SAVED_MODEL, TORCHSCRIPT)
SCHEMA = 1


class HandoffError(RuntimeError):
    """The zip and its report disagree, or the report says verification did not pass."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def write_verification(zip_path: str | Path, *, passed: bool, fmt: str, failures: list[str] | None = None,
                       verified_in: str | None = None, verified_images: int = 0,
                       run_id: str | None = None) -> Path:
    """`verification.json` beside `zip_path`: the zip's sha256 and size as verified, and the run id
    that staging baked into this kernel (None for a local run)."""
    zip_path = Path(zip_path)
    report = {"schema": SCHEMA, "submission": zip_path.name, "sha256": file_sha256(zip_path),
              "size": zip_path.stat().st_size, "format": fmt, "passed": bool(passed),
              "failures": list(failures or []), "verified_in": verified_in, "verified_images": verified_images,
              "run_id": run_id}
    return _write_json(zip_path.with_name(VERIFICATION_REPORT), report)


def check_zip_against(zip_path: str | Path, report: dict, what: str = "submission.zip") -> None:
    """Raise HandoffError unless `zip_path` is a readable zip whose size and sha256 are the report's
    and whose contents are the report's format (exactly one model at the zip root)."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise HandoffError(f"{what}: {zip_path} is missing")
    size = zip_path.stat().st_size
    if size != report.get("size"):
        raise HandoffError(f"{what}: {size} bytes, but the report says {report.get('size')} (truncated or replaced)")
    digest = file_sha256(zip_path)
    if digest != report.get("sha256"):
        raise HandoffError(f"{what}: sha256 {digest[:12]}... differs from the report's "
                           f"{str(report.get('sha256'))[:12]}... (not the verified file)")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
        found = submission_format(zip_path)
    except (zipfile.BadZipFile, ValueError) as err:
        raise HandoffError(f"{what}: not a readable submission zip: {err}") from None
    if bad is not None:
        raise HandoffError(f"{what}: member {bad!r} fails its CRC check")
    if found != report.get("format"):
        raise HandoffError(f"{what}: holds a {found} model, but the report says {report.get('format')!r}")


def read_report(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HandoffError(f"{what} {path} is missing (did the kernel that writes it complete?)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HandoffError(f"{what} {path} is not JSON: {err}") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise HandoffError(f"{what} {path}: unknown schema {report.get('schema') if isinstance(report, dict) else report!r}")
    return report


def check_verified(export_dir: str | Path, expect_run_id: str | None = None) -> dict:
    """The export's `verification.json`, after checking that verification passed, the format is one
    the scorer takes, the run id is `expect_run_id` (when given) and `submission.zip` is the file
    that was verified. Raises HandoffError naming the first problem."""
    export_dir = Path(export_dir)
    report = read_report(export_dir / VERIFICATION_REPORT, "the export's verification report")
    if not report.get("passed"):
        raise HandoffError(f"the export's verification failed: {report.get('failures') or 'no reason given'}")
    if report.get("format") not in FORMATS:
        raise HandoffError(f"the verification report names format {report.get('format')!r}; the scorer takes {FORMATS}")
    if expect_run_id is not None and report.get("run_id") != expect_run_id:
        raise HandoffError(f"the verification report is from run {report.get('run_id')!r}, not {expect_run_id!r}")
    check_zip_against(export_dir / report.get("submission", SUBMISSION), report, "the export's submission.zip")
    return report


def hand_over(export_dir: str | Path, out_dir: str | Path, run_id: str | None = None) -> dict:
    """Check the export's zip (`check_verified`), copy it to `out_dir/submission.zip`, check the
    copy, and write `out_dir/submit_report.json`; returns that report."""
    verified = check_verified(export_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / SUBMISSION
    tmp = out / f".{SUBMISSION}.tmp"
    shutil.copyfile(Path(export_dir) / verified.get("submission", SUBMISSION), tmp)
    os.replace(tmp, dest)
    report = {"schema": SCHEMA, "submission": SUBMISSION, "sha256": file_sha256(dest), "size": dest.stat().st_size,
              "format": verified["format"], "passed": True, "run_id": run_id,
              "export_run_id": verified.get("run_id"), "export_sha256": verified["sha256"]}
    check_zip_against(dest, verified, "the copied submission.zip")  # the copy is the verified file
    _write_json(out / SUBMIT_REPORT, report)
    return report
