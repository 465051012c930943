"""Known-bad submissions: the verifier rejects each, with a message that names the problem."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from guie_nb.export.submission import zip_saved_model, zip_torchscript
from guie_nb.export.torchscript import save_torchscript
from guie_nb.export.verify import PROBES, verify_submission

FEW = [p for p in PROBES if p[0] in ("tiny_3x2", "cmyk_240x320")]


def _verify(zip_path):
    return verify_submission(zip_path, probes=FEW, warmup=0, log=lambda *_: None)


def _tf_saved_model(folder: Path, dim: int = 64, key: str = "embedding_norm", dtype: str = "uint8",
                    skip_saver: bool = True) -> Path:
    """A tiny raw-TF SavedModel in the scorer's calling convention, with one thing changed."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal([3, dim], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.as_dtype(dtype))])
        def serve(self, images):
            pooled = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0
            return {key: tf.math.l2_normalize(tf.matmul(pooled, self.w) + 0.1, axis=-1)}

    model = Model()
    options = tf.saved_model.SaveOptions(experimental_skip_saver=skip_saver)
    tf.saved_model.save(model, str(folder / "sm"), signatures={"serving_default": model.serve}, options=options)
    return zip_saved_model(folder / "sm", folder / "submission.zip")


class _Pool(torch.nn.Module):
    def __init__(self, dim: int, cast: bool):
        super().__init__()
        self.cast = cast
        self.w = torch.nn.Parameter(torch.randn(3, dim, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32) if self.cast else images
        x = torch.conv2d(x, torch.ones(3, 3, 1, 1))  # a float-only op: uint8 input fails here
        return torch.matmul(x.mean(dim=[2, 3]), self.w)


def _torch_zip(folder: Path, module: torch.nn.Module) -> Path:
    return zip_torchscript(save_torchscript(module, folder / "saved_model.pt"), folder / "submission.zip")


def test_good_raw_models_pass(tmp_path):
    """The planted models differ from these only in the one named defect."""
    (tmp_path / "tf").mkdir(), (tmp_path / "pt").mkdir()
    for zip_path in (_tf_saved_model(tmp_path / "tf"), _torch_zip(tmp_path / "pt", _Pool(64, cast=True))):
        report = _verify(zip_path)
        assert report.ok, report.summary()
        assert report.embedding_dim == 64


@pytest.mark.parametrize("kind,expected", [
    ("tf_65d", r"output has 65 values .* at most 64"),
    ("tf_wrong_key", r"no 'embedding_norm' key; the model returned \['embedding'\]"),
    ("tf_float_input", r"fails on a uint8 \[1, H, W, 3\] image"),
    ("tf_default_saver", r"does not load in TensorFlow 2.6.4: .*DisableCopyOnRead.*experimental_skip_saver"),
    ("pt_65d", r"output has 65 values .* at most 64"),
    ("pt_no_uint8", r"fails on a uint8 \[1, 3, H, W\] image: RuntimeError"),
    ("pt_gelu_torch2", r"does not load in PyTorch 1.11.0: .*version 10.*file format version 10 > 9"),
    ("two_formats", r"zip layout: .*both a SavedModel and saved_model.pt"),
    ("nested", r"zip layout: .*must be at the zip root"),
])
def test_bad_submission_rejected(tmp_path, kind, expected):
    if kind == "tf_65d":
        zip_path = _tf_saved_model(tmp_path, dim=65)
    elif kind == "tf_wrong_key":
        zip_path = _tf_saved_model(tmp_path, key="embedding")
    elif kind == "tf_float_input":
        zip_path = _tf_saved_model(tmp_path, dtype="float32")
    elif kind == "tf_default_saver":  # what today's TF writes by default
        zip_path = _tf_saved_model(tmp_path, skip_saver=False)
    elif kind == "pt_65d":
        zip_path = _torch_zip(tmp_path, _Pool(65, cast=True))
    elif kind == "pt_no_uint8":
        zip_path = _torch_zip(tmp_path, _Pool(64, cast=False))
    elif kind == "pt_gelu_torch2":  # a plain trace from today's torch, nn.GELU inside
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 1), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten()).eval()
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 8, 8)), str(tmp_path / "saved_model.pt"))
        zip_path = zip_torchscript(tmp_path / "saved_model.pt", tmp_path / "submission.zip")
    elif kind == "two_formats":
        zip_path = _tf_saved_model(tmp_path)
        with zipfile.ZipFile(zip_path, "a") as zf:
            zf.writestr("saved_model.pt", b"not really")
    else:  # the SavedModel one folder down, as `zip -r submission.zip saved_model/` makes it
        _tf_saved_model(tmp_path)
        zip_path = tmp_path / "nested.zip"
        with zipfile.ZipFile(zip_path, "w") as zf:
            for f in (tmp_path / "sm").rglob("*"):
                zf.write(f, f"model/{f.relative_to(tmp_path / 'sm')}")
    report = _verify(zip_path)
    assert not report.ok
    assert any(__import__("re").search(expected, f) for f in report.failures), report.summary()
    assert "REJECTED" in report.summary()


def test_report_names_every_failure_and_warns_on_time(tmp_path):
    """The judge itself: each defect of each image is listed, and a slow model is flagged."""
    from guie_nb.export.verify import VerifyReport, _judge_images

    images = {"a.png": np.zeros((4, 4, 3), np.uint8), "b.png": np.zeros((4, 4, 3), np.uint8)}
    rows = [{"name": "a.png", "mode": "RGB", "size": [4, 4], "seconds": 0.2, "dtype": "float64",
             "shape": [1, 3], "values": [1.0, float("nan"), 0.0]},
            {"name": "b.png", "mode": "L", "size": [4, 4], "error": "TypeError: boom"}]
    report = VerifyReport("x.zip", format="saved_model", runtime="TensorFlow 2.6.4")
    _judge_images(report, rows, images, None)
    text = report.summary()
    assert "output dtype is float64" in text and "non-finite" in text and "b.png (L 4x4)" in text
    assert report.scoring_hours_estimate == pytest.approx(0.2 * 205_000 / 3600)
    assert any("near or over the 9 h limit" in w for w in report.warnings)
