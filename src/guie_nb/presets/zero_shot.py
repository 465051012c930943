"""Zero-shot at demo scale: no training. A backbone with its projection fitted as PCA to 64-d on a
sample of the training images, exported: data-prep (01) -> export (04) -> submit (05), all on CPU
kernels (no accelerator in any kernel's metadata).

Source: the 4th-place GUIE team's zero-shot notebook, CLIP + PCA to 64-d, scored 0.603 private
(`IvanAer/G-Universal-CLIP`; ../shared/GUIE_FACTS.md section 6); the published zero-shot references
are ViT-L LAION-400M 0.499 and ViT-L/14 with aspect-preserving resize 0.537. `zero_shot_h14` is the
full-size version (OpenCLIP ViT-H-14 LAION-2B on the real data). Here, on the embedded demo data,
the demo backbone `demo-tiny` has no pretrained weights: the fit is PCA-whitening of a
random-init backbone's features, compared in `report.json` with the same backbone and its random
projection (`map5_untrained`).
"""

from __future__ import annotations

from guie_nb.presets import demo

MODEL = {"backbone": "demo-tiny", "backbone_weights": "", "embedding_dim": 64, "dropout": 0.0}


def export_params(root: str, data: str, model: dict, reduction: str, sample_images: int) -> dict:
    """Notebook 04's parameters for a zero-shot export (no `model_dir`, no `train_dir`)."""
    return {"data_dir": data, "model_dir": None, "train_dir": None, "out_dir": root,
            "zero_shot": {"model": model, "reduction": reduction, "sample_images": sample_images}}


def notebook_params(root: str) -> dict[str, dict]:
    params = demo.notebook_params(root)
    return {"01_data_prep": params["01_data_prep"],
            "04_export": export_params(root, params["01_data_prep"]["out_dir"], MODEL, "whiten", 1000),
            "05_submit": params["05_submit"]}
