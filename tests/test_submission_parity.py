"""The exported SavedModel embeds raw uint8 images of any size exactly as the Keras model does
(loaded here with today's TensorFlow; tests/test_export.py runs it in the scorer's TF 2.6.4)."""

from __future__ import annotations

import numpy as np

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


def test_saved_model_reproduces_the_mechanisms_and_reads_the_raw_size(tmp_path):
    """Overlapping patches, 3 neck branches, size features and in-model flip TTA, exported together;
    and a model whose embedding depends on the raw size alone (its neck ignores the backbone), so the
    SavedModel's size features, taken from the input's shape, are compared with the Keras model's."""
    out = run_on_backend("tensorflow", f"""
        import json
        import numpy as np
        from pathlib import Path
        import keras
        from guie_nb.export.checks import keras_reference, probe_images
        from guie_nb.export.saved_model import SavedModelEmbedder, export_saved_model
        from guie_nb.model.embedding import ModelConfig, build_embedding_model
        tmp = Path({str(tmp_path)!r})
        keras.utils.set_random_seed(4)
        rows = {{}}
        every = ModelConfig(backbone="demo-tiny", image_size=62, patch_stride=6, neck_branches=3, hidden_dim=16,
                            size_features=True, flip_tta=True, resize_mode="shortest_side_crop")
        size_only = ModelConfig(backbone="demo-tiny", size_features=True, embedding_dim=8, dropout=0.0)
        for name, cfg in (("every", every), ("size_only", size_only)):
            model = build_embedding_model(cfg)
            if name == "size_only":
                dense = model.get_layer("projection")
                kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
                kernel[:-3] = 0.0
                dense.kernel.assign(kernel)
            exported = SavedModelEmbedder(export_saved_model(model, cfg, tmp / name, flip_tta=True))
            reference = keras_reference(model, cfg)
            rows[name] = []
            for image in probe_images([(37, 91), (91, 37), (1, 1), (640, 33)]):
                a = np.asarray(exported(image), dtype=np.float64)
                rows[name].append({{"size": list(image.shape[:2]), "values": a.tolist(),
                                    "max_abs_diff": float(np.max(np.abs(a - reference(image))))}})
        print(json.dumps(rows))
    """)
    for name, rows in out.items():
        assert max(r["max_abs_diff"] for r in rows) < 2e-5, (name, rows)
    assert len(out["every"][0]["values"]) == 64 and len(out["size_only"][0]["values"]) == 8
    portrait, landscape = (np.asarray(r["values"]) for r in out["size_only"][:2])
    assert np.abs(portrait - landscape).max() > 1e-2  # the raw shape reaches the features
