"""From a Keras embedding model to a verified `submission.zip`, in either scorer format.

The zip is written in a scratch folder, verified in its scorer runtime, and only then moved to
its destination: a rejected export leaves no `submission.zip` behind (a stale one is removed
first), so whatever lies at the destination has passed verification.

    python -m guie_nb.export.build --model-dir build/demo/finetune --format torchscript --out sub.zip
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from guie_nb.export.submission import SAVED_MODEL, TORCHSCRIPT, zip_saved_model, zip_torchscript
from guie_nb.export.verify import PROBES, SubmissionRejected, VerifyReport, verify_submission

FORMATS = (SAVED_MODEL, TORCHSCRIPT)


def write_submission(embedding_model, cfg, fmt: str, zip_path: str | Path, flip_tta: bool = False) -> Path:
    """Export and zip, unverified (`export_submission` is the safe entry point)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="export-", dir=zip_path.parent) as work:
        if fmt == SAVED_MODEL:
            from guie_nb.export.saved_model import export_saved_model

            return zip_saved_model(export_saved_model(embedding_model, cfg, Path(work) / "sm", flip_tta), zip_path)
        from guie_nb.export.torchscript import export_torchscript

        return zip_torchscript(export_torchscript(embedding_model, cfg, Path(work) / "saved_model.pt", flip_tta),
                               zip_path)


def export_submission(embedding_model, cfg, fmt: str, zip_path: str | Path, flip_tta: bool = False,
                      probes=PROBES, warmup: int = 6, log=print) -> VerifyReport:
    """Write `zip_path` only if the export passes verification in its scorer runtime; raises
    `SubmissionRejected` (naming each failure) otherwise."""
    from guie_nb.export.checks import keras_reference

    zip_path = Path(zip_path)
    zip_path.unlink(missing_ok=True)  # never leave an older, unverified-for-this-model zip behind
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=zip_path.parent))
    try:
        candidate = write_submission(embedding_model, cfg, fmt, scratch / zip_path.name, flip_tta)
        report = verify_submission(candidate, keras_reference(embedding_model, cfg, flip_tta), probes, warmup,
                                   log=log)
        report.zip_path = str(zip_path)
        log(report.summary())
        report.raise_for_failures()
        os.replace(candidate, zip_path)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="model_config.json + embedding weights")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--no-verify", action="store_true", help="write the zip without verifying it")
    p.add_argument("--report", type=Path, help="write the verification report as JSON here")
    p.add_argument("--probes", help="comma-separated probe names (default: all)")
    p.add_argument("--warmup", type=int, default=6)
    args = p.parse_args(argv)

    from guie_nb.notebook import use_backend

    use_backend("tensorflow")  # the SavedModel needs it; the TorchScript export reads weights only
    from guie_nb.run_dir import load_embedding_model

    model, cfg = load_embedding_model(args.model_dir)
    if args.no_verify:
        print(write_submission(model, cfg, args.format, args.out, args.flip_tta))
        return 0
    probes = [p for p in PROBES if not args.probes or p[0] in args.probes.split(",")]
    try:
        report = export_submission(model, cfg, args.format, args.out, args.flip_tta, probes, args.warmup)
    except SubmissionRejected as e:
        print(e, file=sys.stderr)
        return 1
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
