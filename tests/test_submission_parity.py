"""The exported SavedModel embeds raw uint8 images of any size exactly as the Keras model does."""

from __future__ import annotations

from _backend_helpers import run_on_backend


def test_saved_model_matches_keras_on_several_sizes(tmp_path):
    out = run_on_backend("tensorflow", f"""
        import json, zipfile
        from pathlib import Path
        from guie_nb.export.checks import compare_with_keras
        from guie_nb.export.saved_model import SavedModelEmbedder, export_saved_model
        from guie_nb.export.submission import submission_format, zip_saved_model
        from guie_nb.model.embedding import ModelConfig, build_embedding_model
        import keras
        keras.utils.set_random_seed(3)
        cfg = ModelConfig(backbone="demo-tiny", dropout=0.0, resize_mode="shortest_side_crop")
        model = build_embedding_model(cfg)
        tmp = Path({str(tmp_path)!r})
        zip_path = zip_saved_model(export_saved_model(model, cfg, tmp / "sm"), tmp / "submission.zip")
        # load it back the scorer's way: unzip, tf.saved_model.load, serving_default
        zipfile.ZipFile(zip_path).extractall(tmp / "unzipped")
        embedder = SavedModelEmbedder(tmp / "unzipped")
        sizes = [(64, 64), (1, 1), (97, 301), (300, 120), (513, 257)]
        report = compare_with_keras(embedder, model, cfg, sizes)
        report["format"] = submission_format(zip_path)
        print(json.dumps(report))
    """)
    assert out["format"] == "saved_model"
    assert out["embedding_dim"] == 64
    assert [r["size"] for r in out["per_size"]] == [[64, 64], [1, 1], [97, 301], [300, 120], [513, 257]]
    assert out["max_abs_diff"] < 1e-5, out
    assert out["min_cosine"] > 0.99999, out
