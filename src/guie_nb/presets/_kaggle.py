"""Shared parts of the full-size presets: where the raw data comes from on Kaggle, and the
per-notebook parameter layout every preset follows (root/data, root/train, root/finetune, root,
root/submit).

Raw data is named by what Kaggle attaches, not by a path: `kaggle://competitions/<slug>` or
`kaggle://datasets/<owner>/<slug>` (`guie_nb.kaggle.inputs`). Staging attaches each one to the kernel
that reads it and rewrites it to its mount (`/kaggle/input/<slug>`); a local run rewrites it under
`$GUIE_KAGGLE_INPUT`. So the attachment and the path cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guie_nb.kaggle.inputs import competition_uri, dataset_uri

# Products-10K is not on Kaggle as a competition: upload it (train.csv + train/, its licence allows
# research use) as a private dataset of your own with this slug, or pass another handle to
# `raw_roots(products10k_dataset=...)`. "{owner}" is filled with your Kaggle username at staging.
PRODUCTS10K_DATASET = "{owner}/products-10k"


def raw_roots(products10k_dataset: str = PRODUCTS10K_DATASET) -> dict[str, str]:
    """kind -> the Kaggle input holding that dataset in the layout its reader expects (the
    datasets that are Kaggle competitions; others are uploaded as your datasets, see the readers)."""
    return {
        "imagenet": competition_uri("imagenet-object-localization-challenge"),  # ILSVRC layout
        "products10k": dataset_uri(products10k_dataset),
        "gldv2": competition_uri("landmark-recognition-2021"),
        "gld2020": competition_uri("landmark-recognition-2020"),
        "shopee": competition_uri("shopee-product-matching"),
        "hm": competition_uri("h-and-m-personalized-fashion-recommendations"),
    }


# OpenCLIP ViT-H-14 LAION-2B as KerasHub's Kaggle Model (staging attaches it as a model source)
H14_LAION2B = "kaggle:keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3"

# A preset's `KERNEL_MACHINES` for a ViT-H-14 export: scoring ~9,000 held-out images (first_place's
# data-prep plan) at 0.33 TFLOP/image takes ~8.5 h at the assumed CPU rate, too close to a CPU
# kernel's 12 h, so 04 runs on a T4 (`make rehearse PROFILE=<preset>` prints its hours there).
EXPORT_ON_T4 = {"04_export": "NvidiaTeslaT4"}
# OpenAI CLIP ViT-L/14 at 336 px (open_clip `ViT-L-14-336` tag `openai`: QuickGELU) as KerasHub's Kaggle Model
L14_336_OPENAI = "kaggle:keras/clip/keras/clip_vit_large_patch14_336/3"
VAL = {"val_classes": 200, "queries_per_class": 1}
# keep_checkpoints 1: a ViT-H-14 checkpoint with AdamW's slots is 7.6 GB; two kept ones, a third being
# written and the final weights pass Kaggle's 20 GB of output (the rehearsal's output_gb estimate).
# Saves are atomic: the previous checkpoint is removed only once the next one is complete.
LONG_RUN = {"precision": "mixed_bfloat16", "steps_per_execution": 8, "checkpoint_every": 400, "keep_checkpoints": 1}


def source(kind: str, products10k_dataset: str = PRODUCTS10K_DATASET, **options) -> dict:
    """A `sources` entry for raw data attached to the data-prep kernel, with the validation split;
    what it leaves out takes the recipe's defaults (`guie_nb.data.recipe.RECIPE`)."""
    return {"kind": kind, "root": raw_roots(products10k_dataset)[kind], **VAL, **options}


def chain_params(root: str, *, sources: list[dict], max_side: int, model: dict, train: dict,
                 finetune: dict, finetune_extra: dict | None = None, data_prep_kernels: int = 1) -> dict[str, dict]:
    """The notebooks' parameters for a full-size run; `train`/`finetune` get LONG_RUN defaults.
    `data_prep_kernels` > 1 splits data-prep over that many kernels (each under 20 GB of output)."""
    data = f"{root}/data"
    return {
        "01_data_prep": {"sources": sources, "out_dir": data, "demo_data_dir": None, "max_side": max_side,
                         "images_per_shard": 2000, "seed": 0, "num_shards": data_prep_kernels},
        "02_train_tpu": {"data_dir": data, "out_dir": f"{root}/train", "keras_backend": "jax", "model": model,
                         "train": {**LONG_RUN, **train}},
        "03_finetune": {"data_dir": data, "init_dir": f"{root}/train", "out_dir": f"{root}/finetune",
                        "keras_backend": "jax", **(finetune_extra or {}), "train": {**LONG_RUN, **finetune}},
        "04_export": {"data_dir": data, "model_dir": f"{root}/finetune", "train_dir": f"{root}/train",
                      "out_dir": root},
        "05_submit": {"export_dir": root, "out_dir": f"{root}/submit"},
    }


# ---- presets with several training stages ---------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One training stage of a preset, run as its own kernel: the first stage runs the training
    notebook (02) from the preset's model, each later one the fine-tune notebook (03) from the
    stage before it. Per stage: the input resolution (`image_size`, pixels; None keeps the previous
    stage's), the patch conv's stride (`patch_stride`, pixels; below the patch size the patches
    overlap), the margin of the margin head, other model changes that keep the weights' shapes
    (`model`, e.g. `{"dropout": 0.1}`), and the training values (`train`: learning rate, frozen
    parts `freeze_backbone` / `freeze_head`, data subset `train_sources`, ...; `LONG_RUN` added)."""

    name: str  # the kernel's stage name: lowercase letters, digits, hyphens (guie_nb.stages)
    train: dict
    image_size: int | None = None
    patch_stride: int | None = None
    margin: float | None = None
    model: dict = field(default_factory=dict)

    def model_changes(self) -> dict:
        """The ModelConfig changes this stage makes to the model it starts from."""
        changes = {k: v for k, v in (("image_size", self.image_size), ("patch_stride", self.patch_stride))
                   if v is not None}
        changes.update(self.model)
        if self.margin is not None:
            changes["head"] = {**changes.get("head", {}), "margin": self.margin}
        return changes


def apply_changes(model: dict, changes: dict) -> dict:
    """`model` with `changes` applied; `head` is merged key by key."""
    out = {**model, **{k: v for k, v in changes.items() if k != "head"}}
    if "head" in changes:
        out["head"] = {**model.get("head", {}), **changes["head"]}
    return out


def final_model(model: dict, stages: list[Stage]) -> dict:
    """The model the last stage trains (what the export exports), every stage's changes applied."""
    for stage in stages:
        model = apply_changes(model, stage.model_changes())
    return model


def staged_chain_params(root: str, *, sources: list[dict], max_side: int, model: dict, stages: list[Stage],
                        export: dict | None = None, data_prep_kernels: int = 1) -> dict[str, dict]:
    """The kernels of a full-size preset with several training stages: data-prep, one kernel per
    stage (`training_stages`, LONG_RUN defaults), the export of the last stage, the submit kernel."""
    data = f"{root}/data"
    return {"01_data_prep": {"sources": sources, "out_dir": data, "demo_data_dir": None, "max_side": max_side,
                             "images_per_shard": 2000, "seed": 0, "num_shards": data_prep_kernels},
            **training_stages(root, data, model, stages, LONG_RUN, export)}


def _branch_kernels(root: str, data, model: dict, stages: list[Stage], train_defaults: dict
                    ) -> tuple[dict[str, dict], dict[str, dict]]:
    """`(start, later)`: the `02_train_tpu:<first>` kernel from `model`, and a `03_finetune:<name>`
    kernel per later stage, each from the stage before (its `init_dir`); out_dir `root/<stage name>`."""
    if not stages:
        raise ValueError("a staged preset needs at least one stage")
    first, *rest = stages
    start = {f"02_train_tpu:{first.name}": {
        "data_dir": data, "out_dir": f"{root}/{first.name}", "keras_backend": "jax",
        "model": apply_changes(model, first.model_changes()),
        "train": {**train_defaults, **first.train}}}
    later, previous = {}, first
    for stage in rest:
        changes = stage.model_changes()
        later[f"03_finetune:{stage.name}"] = {
            "data_dir": data, "init_dir": f"{root}/{previous.name}", "out_dir": f"{root}/{stage.name}",
            "keras_backend": "jax", **({"model_changes": changes} if changes else {}),
            "train": {**train_defaults, **stage.train}}
        previous = stage
    return start, later


def training_stages(root: str, data, model: dict, stages: list[Stage], train_defaults: dict,
                    export: dict | None = None) -> dict[str, dict]:
    """One kernel per stage: `02_train_tpu:<first>` from `model`, then `03_finetune:<name>` each
    from the stage before (its `init_dir`), out_dir `root/<stage name>`; then `04_export` of the
    last stage (`export`: more of its parameters) and `05_submit`."""
    start, later = _branch_kernels(root, data, model, stages, train_defaults)
    params = {**start, **later}
    params["04_export"] = {"data_dir": data, "model_dir": f"{root}/{stages[-1].name}",
                           "train_dir": f"{root}/{stages[0].name}", "out_dir": root, **(export or {})}
    params["05_submit"] = {"export_dir": root, "out_dir": f"{root}/submit"}
    return params


# ---- presets that train several models (branches) --------------------------------------------------

@dataclass(frozen=True)
class Branch:
    """One model a preset trains from its own pretrained weights (`model`), through its `stages`
    (the first runs 02, each later one 03 from the stage before). Stage names are unique across
    the preset's branches: each names a kernel and its output folder `root/<stage name>`."""

    model: dict
    stages: list[Stage]

    def run_dirs(self, root: str) -> list[str]:
        """Every stage's output folder, in stage order (what a soup of the branch averages)."""
        return [f"{root}/{stage.name}" for stage in self.stages]


def branched_chain_params(root: str, *, sources: list[dict], max_side: int, branches: list[Branch], export: dict,
                          data_prep_kernels: int = 1) -> dict[str, dict]:
    """The kernels of a preset that trains several models: data-prep; each branch's 02 kernel
    (branch order), then each branch's 03 kernels (branch order, stage order; `guie_nb.stages`
    keeps the notebooks' order); the export with `export` (its model source: e.g. `concat` of the
    branches' runs; `train_dir` is the first branch's first stage, for the untrained score); submit."""
    if len(branches) < 2:
        raise ValueError("a branched preset trains at least 2 models; one branch is `staged_chain_params`")
    data = f"{root}/data"
    params = {"01_data_prep": {"sources": sources, "out_dir": data, "demo_data_dir": None, "max_side": max_side,
                               "images_per_shard": 2000, "seed": 0, "num_shards": data_prep_kernels}}
    kernels = [_branch_kernels(root, data, b.model, b.stages, LONG_RUN) for b in branches]
    for start, _ in kernels:
        params.update(start)
    for _, later in kernels:
        params.update(later)
    params["04_export"] = {"data_dir": data, "model_dir": None, "train_dir": f"{root}/{branches[0].stages[0].name}",
                           "out_dir": root, **export}
    params["05_submit"] = {"export_dir": root, "out_dir": f"{root}/submit"}
    return params
