"""The exported SavedModel embeds raw uint8 images of any size exactly as the Keras model does
(loaded here with today's TensorFlow; tests/test_export.py runs it in the scorer's TF 2.6.4)."""

from __future__ import annotations

from _backend_helpers import run_on_backend

SIZES = [(64, 64), (1, 1), (97, 301), (300, 120), (513, 257)]


def test_saved_model_matches_keras_on_several_sizes(tmp_path):
    out = run_on_backend("tensorflow", f"""
        import json
        import numpy as np
        from pathlib import Path
        from guie_nb.export.checks import keras_reference, probe_images
        from guie_nb.export.saved_model import export_saved_model
        from guie_nb.export.submission import SubmissionEmbedder, submission_format, zip_saved_model
        from guie_nb.model.embedding import ModelConfig, build_embedding_model
        import keras
        keras.utils.set_random_seed(3)
        cfg = ModelConfig(backbone="demo-tiny", dropout=0.0, resize_mode="shortest_side_crop")
        model = build_embedding_model(cfg)
        tmp = Path({str(tmp_path)!r})
        zip_path = zip_saved_model(export_saved_model(model, cfg, tmp / "sm"), tmp / "submission.zip")
        exported, reference = SubmissionEmbedder(zip_path), keras_reference(model, cfg)
        rows = []
        for image in probe_images({SIZES!r}):
            a = np.asarray(exported(image), dtype=np.float64).reshape(-1)
            b = reference(image)
            rows.append({{"size": list(image.shape[:2]), "dim": int(a.shape[0]),
                          "max_abs_diff": float(np.max(np.abs(a - b))),
                          "cosine": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))}})
        print(json.dumps({{"format": submission_format(zip_path), "rows": rows}}))
    """)
    assert out["format"] == "saved_model"
    rows = out["rows"]
    assert [tuple(r["size"]) for r in rows] == SIZES
    assert all(r["dim"] == 64 for r in rows)
    assert max(r["max_abs_diff"] for r in rows) < 1e-5, rows
    assert min(r["cosine"] for r in rows) > 0.99999, rows
