"""PCA / whitening in the model's `projection` layer: the fit against numpy's SVD, and the Keras
model and its TorchScript export against the numpy reduction of the backbone's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guie_nb.model.reduction import feature_model, fit_reduction, set_projection


def _features(n=400, d=24, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.1, d)  # distinct variances: a unique ordering of the components
    return rng.normal(size=(n, d)) * scales @ np.linalg.qr(rng.normal(size=(d, d)))[0] + rng.normal(size=d) * 5


@pytest.mark.parametrize("kind", ["pca", "whiten"])
def test_fit_matches_svd_of_the_centred_features(kind):
    x = _features()
    red = fit_reduction(x, 8, kind, eps=1e-6)
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    lam = s[:8] ** 2 / (len(x) - 1)
    np.testing.assert_allclose(red.eigenvalues, lam, rtol=1e-9)
    expected = centred @ vt[:8].T
    if kind == "whiten":
        expected = expected / np.sqrt(lam + 1e-6)
    got = red(x)
    # components are defined up to sign: compare each column with its sign aligned
    signs = np.sign(np.sum(got * expected, axis=0))
    np.testing.assert_allclose(got, expected * signs, atol=1e-4)
    assert abs(red.explained - lam.sum() / (s ** 2 / (len(x) - 1)).sum()) < 1e-9
    if kind == "whiten":  # unit variance, uncorrelated
        np.testing.assert_allclose(np.cov(got.T), np.eye(8), atol=1e-4)
    else:
        np.testing.assert_allclose(got.mean(axis=0), 0.0, atol=1e-4)


def test_bad_inputs_are_named():
    x = _features(n=10, d=6)
    with pytest.raises(ValueError, match="at least 9 images"):
        fit_reduction(_features(n=8, d=12), 8, "pca")
    with pytest.raises(ValueError, match="cannot reduce 6-d features to 7"):
        fit_reduction(x, 7, "pca")
    with pytest.raises(ValueError, match="unknown reduction 'lda'"):
        fit_reduction(x, 2, "lda")
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        fit_reduction(x, 2, "pca")


@pytest.mark.parametrize("kind", ["pca", "whiten"])
def test_model_and_torchscript_give_the_l2_normalised_numpy_reduction(kind, tmp_path):
    """The exported model's output = numpy PCA/whitening of the backbone features, then L2-normalised."""
    import keras

    from guie_nb.export.checks import keras_reference, probe_images
    from guie_nb.export.torchscript import build_torch_module, save_torchscript
    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    keras.utils.set_random_seed(0)
    cfg = ModelConfig(backbone="demo-tiny", embedding_dim=32, dropout=0.0)
    model = build_embedding_model(cfg)
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0, 255, size=(48, 64, 64, 3)).astype("float32")
    feats = np.asarray(feature_model(model).predict_on_batch(pixels), np.float64)
    red = fit_reduction(feats, 32, kind)
    set_projection(model, red)

    def expected(f):
        y = (f - feats.mean(axis=0)) @ red.kernel.astype(np.float64)  # numpy, from the fitted components
        return y / np.linalg.norm(y, axis=-1, keepdims=True)

    np.testing.assert_allclose(np.asarray(model.predict_on_batch(pixels)), expected(feats), atol=2e-5)

    # the export path: the TorchScript file (scripted, saved, loaded back) vs numpy on the same images
    path = save_torchscript(build_torch_module(model, cfg), tmp_path / "saved_model.pt")
    module = torch.jit.load(str(path))
    reference = keras_reference(model, cfg)
    for image in probe_images([(64, 64), (97, 301), (240, 180)]):
        with torch.no_grad():
            out = module(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()[0]
        f = np.asarray(feature_model(model).predict_on_batch(_resized(image, cfg)), np.float64)
        np.testing.assert_allclose(out, expected(f)[0], atol=5e-5)
        np.testing.assert_allclose(out, reference(image), atol=5e-5)


def _resized(image: np.ndarray, cfg) -> np.ndarray:
    from guie_nb.model.preprocessing import resize_images  # the exported model's own resize

    return np.asarray(resize_images(image[None], cfg.input_size, cfg.resize_mode))


def test_reduction_must_fit_the_projection():
    import keras

    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    keras.utils.set_random_seed(0)
    model = build_embedding_model(ModelConfig(backbone="demo-tiny", embedding_dim=16))
    with pytest.raises(ValueError, match=r"does not fit the projection \(96, 16\)"):
        set_projection(model, fit_reduction(_features(n=50, d=96), 8, "pca"))
