"""Both export formats, built from the same weights and verified in their real scorer runtimes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _export_helpers import FAST_PROBES, run_export_cli, save_demo_model
from guie_nb.export.checks import keras_reference, probe_images
from guie_nb.export.submission import submission_format
from guie_nb.export.torchscript import build_torch_module
from guie_nb.export.verify import PROBES, SubmissionRejected


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_demo_model(tmp_path_factory.mktemp("demo-model"))


@pytest.mark.parametrize("resize_mode,hidden_dim,flip_tta", [("squash", None, False),
                                                             ("shortest_side_crop", 32, True)])
def test_torch_module_reproduces_keras(resize_mode, hidden_dim, flip_tta):
    """The hand-written torch ViT + TF-exact resize gives the Keras model's embeddings."""
    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    cfg = ModelConfig(backbone="demo-tiny", resize_mode=resize_mode, hidden_dim=hidden_dim, embedding_dim=48)
    model = build_embedding_model(cfg)
    module = build_torch_module(model, cfg, flip_tta)
    reference = keras_reference(model, cfg, flip_tta)
    for image in probe_images([(1, 1), (3, 2), (97, 301), (640, 33), (224, 224)]):
        with torch.no_grad():
            out = module(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()
        assert out.shape == (1, 48) and out.dtype == np.float32
        np.testing.assert_allclose(out[0], reference(image), atol=2e-5)


@pytest.mark.parametrize("fmt,flip_tta", [("saved_model", False), ("torchscript", False),
                                          ("torchscript", True), ("saved_model", True)])
def test_demo_submission_verified_in_scorer_runtime(model_dir, tmp_path, fmt, flip_tta):
    out = tmp_path / "submission.zip"
    extra = ["--flip-tta"] if flip_tta else []
    if flip_tta:  # TTA doubles the forward; the format itself is covered on every probe without it
        extra += ["--probes", FAST_PROBES, "--warmup", "1"]
    proc, report = run_export_cli(model_dir, fmt, out, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert submission_format(out) == fmt
    assert report["ok"] and report["failures"] == []
    assert report["runtime"] == {"saved_model": "TensorFlow 2.6.4", "torchscript": "PyTorch 1.11.0"}[fmt]
    assert report["embedding_dim"] == 64 and report["min_cosine"] >= 0.9999
    ran = {row["name"].split(".")[0] for row in report["per_image"]}
    expected = set(FAST_PROBES.split(",")) if flip_tta else {p[0] for p in PROBES}
    assert ran == expected
    assert all(row["dtype"] == "float32" and row["cosine"] >= 0.9999 for row in report["per_image"])
    assert report["scoring_hours_estimate"] > 0


def test_rejected_export_leaves_no_zip(model_dir, tmp_path, monkeypatch):
    """A model that does not reproduce the reference is refused and no submission.zip is left,
    not even a stale one from an earlier run."""
    import keras

    from guie_nb.export import build, checks
    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    cfg = ModelConfig.load(model_dir / "model_config.json")
    keras.utils.set_random_seed(1)
    model = build_embedding_model(cfg)
    other = build_embedding_model(cfg)  # different random weights: the "Keras model" disagrees
    monkeypatch.setattr(checks, "keras_reference", lambda m, c, t=False: keras_reference(other, c, t))
    out = tmp_path / "submission.zip"
    out.write_bytes(b"stale")
    probes = [p for p in PROBES if p[0] in ("square_224", "cmyk_240x320")]
    with pytest.raises(SubmissionRejected, match=r"cosine to the Keras model's embedding is .* < 0.9999"):
        build.export_submission(model, cfg, "torchscript", out, probes=probes, warmup=0, log=lambda *_: None)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no scratch left either


@pytest.mark.parametrize("fmt", ["saved_model", "torchscript"])
def test_model_mechanisms_verified_in_scorer_runtime(tmp_path, fmt):
    """Overlapping patches, neck branches, size features and in-model flip TTA together load and
    reproduce the Keras model in TensorFlow 2.6.4 / PyTorch 1.11 on raw images of odd shapes."""
    model_dir = save_demo_model(tmp_path / "model", image_size=62, patch_stride=6, neck_branches=3,
                                size_features=True, flip_tta=True)
    out = tmp_path / "submission.zip"
    proc, report = run_export_cli(model_dir, fmt, out, "--probes", FAST_PROBES, "--warmup", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["ok"] and report["embedding_dim"] == 64 and report["min_cosine"] >= 0.9999
    assert {row["name"].split(".")[0] for row in report["per_image"]} == set(FAST_PROBES.split(","))


@pytest.mark.parametrize("h,w", [(1, 1), (3, 500), (223, 225), (1537, 911), (240, 1199), (4000, 37)])
def test_banded_resize_is_tensorflows_resize(h, w):
    """The TorchScript resize multiplies only each row block's band of input rows: the same values
    as the dense weight matmul and as `tf.image.resize` (bicubic, antialias), for shrinking and
    growing sides, with and without the centre crop (computed directly as a window)."""
    import tensorflow as tf

    from guie_nb.export.torchscript import _resize, _resize_weights
    from guie_nb.model.preprocessing import center_crop_offset, torchvision_resize_size

    x = torch.from_numpy(np.random.default_rng(h * w).uniform(0, 255, (1, 3, h, w)).astype(np.float32))
    size = 224
    for crop in (False, True):
        new_h, new_w = torchvision_resize_size(h, w, size) if crop else (size, size)
        top, left = center_crop_offset(new_h, size), center_crop_offset(new_w, size)
        banded = _resize(x, new_h, new_w, top, left, size, size)
        dense = torch.matmul(torch.matmul(_resize_weights(h, new_h), x), _resize_weights(w, new_w).t())
        dense = dense[:, :, top:top + size, left:left + size]
        tf_out = tf.image.resize(tf.constant(x.numpy().transpose(0, 2, 3, 1)), (new_h, new_w), method="bicubic",
                                 antialias=True).numpy().transpose(0, 3, 1, 2)[:, :, top:top + size, left:left + size]
        assert banded.shape == (1, 3, size, size)
        np.testing.assert_allclose(banded.numpy(), dense.numpy(), atol=2e-3)  # 0..255 scale, float32 sums
        np.testing.assert_allclose(banded.numpy(), tf_out, atol=5e-3)
