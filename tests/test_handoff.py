"""The export -> submit hand-over: the zip is passed on only when it is the file that was verified."""

from __future__ import annotations

import json
import zipfile

import pytest

from guie_nb.export.handoff import HandoffError, check_verified, hand_over, write_verification


def _export(folder, passed=True, fmt="saved_model", run_id="r4"):
    folder.mkdir(parents=True, exist_ok=True)
    zpath = folder / "submission.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("saved_model.pb", b"model")
        zf.writestr("variables/variables.index", b"index")
    write_verification(zpath, passed=passed, fmt=fmt, failures=[] if passed else ["cosine 0.2 < 0.9999"],
                       run_id=run_id)
    return folder


def test_hand_over_copies_the_verified_zip_and_reports_it(tmp_path):
    report = hand_over(_export(tmp_path / "export"), tmp_path / "out", run_id="r5")
    saved = json.loads((tmp_path / "out" / "submit_report.json").read_text())
    assert saved == report and report["run_id"] == "r5" and report["export_run_id"] == "r4"
    assert report["sha256"] == report["export_sha256"]
    assert (tmp_path / "out" / "submission.zip").read_bytes() == (tmp_path / "export" / "submission.zip").read_bytes()


@pytest.mark.parametrize("spoil, reason", [
    (lambda d: (d / "verification.json").unlink(), "verification report .* is missing"),
    (lambda d: _export(d, passed=False), r"verification failed: \['cosine 0.2 < 0.9999'\]"),
    (lambda d: _export(d, fmt="onnx"), "names format 'onnx'"),
    (lambda d: (d / "submission.zip").write_bytes(b"<html>oops</html>"), "bytes, but the report says"),
    (lambda d: (d / "submission.zip").unlink(), "submission.zip: .* is missing"),
])
def test_hand_over_refuses_by_name(tmp_path, spoil, reason):
    export = _export(tmp_path / "export")
    spoil(export)
    with pytest.raises(HandoffError, match=reason):
        hand_over(export, tmp_path / "out")
    assert not (tmp_path / "out" / "submission.zip").exists()


def test_same_size_other_bytes_and_wrong_run_are_refused(tmp_path):
    export = _export(tmp_path / "export")
    data = bytearray((export / "submission.zip").read_bytes())
    data[-30] ^= 0xFF  # same size, one byte flipped
    (export / "submission.zip").write_bytes(bytes(data))
    with pytest.raises(HandoffError, match="sha256 .* differs from the report"):
        check_verified(export)
    with pytest.raises(HandoffError, match="from run 'r4', not 'r9'"):
        check_verified(_export(tmp_path / "e2"), expect_run_id="r9")


def test_kernel_side_modules_import_no_kaggle_client():
    """model/, presets/, the environment check and the hand-over use the neutral Kaggle paths only."""
    import subprocess
    import sys

    code = ("import sys, guie_nb.presets, guie_nb.model.weights, guie_nb.environment, guie_nb.export.handoff, "
            "guie_nb.kaggle.paths, guie_nb.kaggle.inputs; "
            "print(sorted(m for m in sys.modules if m == 'kaggle' or m.startswith(('kaggle.', 'guie_nb.kaggle.client', "
            "'guie_nb.kaggle.chain', 'guie_nb.kaggle.cli', 'guie_nb.kaggle._call'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]", out
