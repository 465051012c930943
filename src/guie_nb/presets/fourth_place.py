"""4th place (0.688 private): soups of fine-tuned OpenCLIP ViT-L-14-336 and ViT-H-14 models, the two
concatenated, then PCA to 64-d; sub-center ArcFace with adaptive (per-class) margins, layer-wise
learning rates from 1.25e-6 (lowest blocks) to 3e-4 (head). Sources: ../shared/GUIE_FACTS.md
sections 2 and 6 (`IvanAer/G-Universal-CLIP`; write-up arXiv 2210.11141).

What this preset runs: two branches (`presets._kaggle.Branch`), each a model trained from its own
pretrained weights, then fine-tuned at a lower learning rate (the seed write-up's last step):

- ViT-H-14 LAION-2B at 224 px: `02_train_tpu:vit-h14` -> `03_finetune:vit-h14-lowlr`;
- ViT-L-14-336 OpenAI at 336 px (QuickGELU, as open_clip's `openai` tag):
  `02_train_tpu:vit-l14-336` -> `03_finetune:vit-l14-336-lowlr`.

The export (04, `concat`, `guie_nb.model.concat`) makes a greedy soup of each branch's two runs on
the held-out mP@5 (Wortsman et al. 2022, `guie_nb.model.soup`), joins the two souped backbones in
ONE model (ViT-L-14-336 the main tower at 336 px; ViT-H-14 sees the same pixels resized in-graph
to 224 px, antialiased bicubic, identical in Keras, SavedModel and TorchScript:
`guie_nb.model.tower_input`), and fits its projection as PCA of the concatenated 768 + 1024 =
1792-d features to 64-d on `sample_images` training images. Each branch's own neck and margin head
are dropped: the PCA replaces them, as in the source.

Chosen here, not given by the source: sub-centres k = 3, margins 0.2 (largest classes) to 0.5
(smallest), AdamW, the data (Products-10K + GLDv2 as the other presets), epochs and batch sizes,
the fine-tune's learning rate, the PCA sample (4,000 images: over twice the 1792-d feature width).
Layer-wise LR: head 3e-4, backbone top x0.1, decay per block 0.9 for ViT-H (32 blocks:
3e-4 x 0.1 x 0.9^32 = 1.0e-6) and 0.87 for ViT-L (24 blocks: 3e-4 x 0.1 x 0.87^24 = 1.1e-6), the
source's 1.25e-6 at the lowest block. The ViT-H tower in the export sees the image resized twice
(raw -> 336 -> 224) where its training saw one resize (raw -> 224): both antialiased, same region.
"""

from __future__ import annotations

from guie_nb.presets._kaggle import (EXPORT_ON_T4, H14_LAION2B, L14_336_OPENAI, PRODUCTS10K_DATASET, Branch, Stage,
                                     branched_chain_params, source)

HEAD = {"kind": "arcface", "scale": 30.0, "margin": 0.2, "subcenters": 3,
        "margin_schedule": "dynamic", "margin_min": 0.2, "margin_max": 0.5}
MODEL_H = {"backbone": "ViT-H-14", "backbone_weights": H14_LAION2B, "embedding_dim": 64, "dropout": 0.2,
           "head": HEAD}
MODEL_L = {"backbone": "ViT-L-14-336-quickgelu", "backbone_weights": L14_336_OPENAI, "embedding_dim": 64,
           "dropout": 0.2, "head": HEAD}
LAYERWISE = {"learning_rate": 3e-4, "backbone_lr_multiplier": 0.1, "layer_decay": 0.9}
LAYERWISE_L = {**LAYERWISE, "layer_decay": 0.87}
# AdamW on the whole ViT: remat keeps a chip under 16 GiB (seed_recipe)
TRAIN = {"epochs": 8, "batch_size": 256, "weight_decay": 0.05, "warmup_epochs": 1.0, "remat": True}
LOWER_LR = {"epochs": 3, "batch_size": 256, "learning_rate": 1e-4, "warmup_epochs": 0.0, "remat": True}

BRANCHES = [
    Branch(MODEL_L, [Stage("vit-l14-336", {**TRAIN, **LAYERWISE_L}),
                     Stage("vit-l14-336-lowlr", {**LAYERWISE_L, **LOWER_LR})]),
    Branch(MODEL_H, [Stage("vit-h14", {**TRAIN, **LAYERWISE}),
                     Stage("vit-h14-lowlr", {**LAYERWISE, **LOWER_LR})]),
]
PCA_SAMPLE = 4000

# The export runs on a T4 GPU kernel: two greedy soups (3 held-out evaluations each), the PCA fit
# and the held-out scoring of the two-tower submission (0.72 TFLOP/image) over 11,523 held-out images
# take 99.8 h at the assumed CPU rate (12 h limit), 4.2 h on the T4 (`make rehearse PROFILE=fourth_place`).
KERNEL_MACHINES = EXPORT_ON_T4


def notebook_params(root: str) -> dict[str, dict]:
    # the ViT-L-14-336 soup first: the combined model's input size is the largest tower's (336 px)
    parts = [{"model_dirs": b.run_dirs(root), "mode": "greedy"} for b in BRANCHES]
    return branched_chain_params(
        root,
        sources=[source("products10k", PRODUCTS10K_DATASET), source("gldv2")],
        max_side=384,
        branches=BRANCHES,
        export={"concat": {"parts": parts, "reduction": "pca", "sample_images": PCA_SAMPLE}},
    )
