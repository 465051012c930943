"""The embedding model and its margin head: shapes, normalisation, and backend agreement."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from _backend_helpers import run_on_backend
from guie_nb.model.embedding import HeadConfig, ModelConfig, build_embedding_model, build_training_model


def demo_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_embedding_is_64d_unit_length_on_jax():
    assert keras.backend.backend() == "jax"
    cfg = ModelConfig(backbone="demo-tiny", dropout=0.0)
    model = build_embedding_model(cfg)
    emb = np.asarray(model.predict_on_batch(demo_images(3, cfg.input_size)))
    assert emb.shape == (3, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(emb[0], emb[1])  # different images, different embeddings


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_head_lowers_only_the_target_logit(kind):
    cfg = ModelConfig(backbone="demo-tiny", dropout=0.0, head=HeadConfig(kind, scale=10.0, margin=0.3))
    emb_model = build_embedding_model(cfg)
    train_model = build_training_model(emb_model, num_classes=7, head=cfg.head)
    images, labels = demo_images(4, cfg.input_size), np.array([0, 3, 6, 3], dtype="int32")
    logits = np.asarray(train_model.predict_on_batch([images, labels]))
    assert logits.shape == (4, 7)
    emb = np.asarray(emb_model.predict_on_batch(images))
    centers = np.asarray(train_model.get_layer("margin_head").centers)
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (centers / np.linalg.norm(centers, axis=0))
    mask = np.eye(7, dtype=bool)[labels]
    np.testing.assert_allclose(logits[~mask], 10.0 * cos[~mask], atol=1e-4)
    assert np.all(logits[mask] < 10.0 * cos[mask] - 1e-3)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="embedding_dim must be in 1..64"):
        ModelConfig(embedding_dim=65)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"backbone": "demo-tiny", "embeding_dim": 64})
    with pytest.raises(Exception, match="ViT-Q-99"):
        ModelConfig(backbone="ViT-Q-99")
    with pytest.raises(ValueError, match="unknown head kind .softmaxx."):
        build_training_model(build_embedding_model(ModelConfig()), 5, HeadConfig("softmaxx"))


def test_tensorflow_backend_gives_the_jax_embeddings(tmp_path):
    cfg = ModelConfig(backbone="demo-tiny", dropout=0.0)
    model = build_embedding_model(cfg)
    model.save_weights(tmp_path / "w.weights.h5")
    images = demo_images(2, cfg.input_size, seed=1)
    np.save(tmp_path / "x.npy", images)
    jax_emb = np.asarray(model.predict_on_batch(images))
    out = run_on_backend("tensorflow", f"""
        import json, keras, numpy as np
        from guie_nb.model.embedding import ModelConfig, build_embedding_model
        assert keras.backend.backend() == "tensorflow"
        m = build_embedding_model(ModelConfig(backbone="demo-tiny", dropout=0.0))
        m.load_weights({str(tmp_path / "w.weights.h5")!r})
        print(json.dumps(np.asarray(m.predict_on_batch(np.load({str(tmp_path / "x.npy")!r}))).tolist()))
    """)
    np.testing.assert_allclose(np.array(out), jax_emb, atol=1e-5)
