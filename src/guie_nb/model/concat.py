"""Several trained runs' backbones in one embedding model: the towers concatenated, one projection.

4th place (GUIE, 0.688 private; `IvanAer/G-Universal-CLIP`, ../shared/GUIE_FACTS.md sections 2 and
6): a soup of ViT-L-14-336 fine-tunes and a soup of ViT-H-14 fine-tunes, their features
concatenated, then PCA to 64-d. Here each *part* is a run (or a soup of runs, `guie_nb.model.soup`)
of one backbone; the combined model is `ModelConfig.extra_backbones`: part 0's backbone is the main
tower (`visual`), part i's the tower `visual_<i>` at part i's own input size, its pixels resized
in-graph from part 0's (`guie_nb.model.tower_input`). Only the backbones are taken: each part's neck
and margin head were trained for its own feature; the combined model's `projection` is fitted on
the concatenation afterwards (`guie_nb.model.reduction`: PCA / whitening), so it exports as any
other model (SavedModel, TorchScript).

Rules (ValueError naming the part otherwise): at least 2 parts; part 0 has the largest input size
(the model's pixels are at that size, smaller towers see them resized down); one `resize_mode` for
all (each tower sees the image region its training saw); no part with `extra_backbones`,
`size_features`, or (after part 0) `patch_stride`: a tower's entry carries none of them.
"""

from __future__ import annotations

MIN_PARTS = 2


def concat_config(parts: list[dict], embedding_dim: int = 64) -> dict:
    """The combined model's config (a dict, as `ModelConfig.from_dict` takes it) from the parts'
    model configs (dicts), in tower order; `embedding_dim`: the projection's width (<= 64 and <= the
    concatenated feature width). `backbone_weights` are empty: the towers' weights come from the runs."""
    from guie_nb.model.embedding import ModelConfig

    if len(parts) < MIN_PARTS:
        raise ValueError(f"a concatenation needs at least {MIN_PARTS} parts, got {len(parts)}")
    cfgs = [ModelConfig.from_dict(p) if isinstance(p, dict) else p for p in parts]
    main = cfgs[0]
    problems = []
    for i, c in enumerate(cfgs):
        if c.extra_backbones:
            problems.append(f"part {i} ({c.backbone}) already concatenates backbones")
        if c.size_features:
            problems.append(f"part {i} ({c.backbone}) uses size_features, which a tower does not carry")
        if c.resize_mode != main.resize_mode:
            problems.append(f"part {i} ({c.backbone}) resizes with {c.resize_mode!r}, part 0 with "
                            f"{main.resize_mode!r}: the towers would see different image regions")
        if i and c.patch_stride:
            problems.append(f"part {i} ({c.backbone}) has patch_stride {c.patch_stride}; only part 0 may")
        if i and c.input_size > main.input_size:
            problems.append(f"part {i} ({c.backbone}) runs at {c.input_size} px, above part 0's {main.input_size} px: "
                            "put the largest input size first (the model's pixels are at part 0's size)")
    if problems:
        raise ValueError("cannot concatenate these runs: " + "; ".join(problems))
    width = sum(c.vit.feature_dim for c in cfgs)
    if not 1 <= embedding_dim <= width:
        raise ValueError(f"embedding_dim {embedding_dim} must be in 1..{width} (the concatenated feature width)")
    out = main.to_dict()
    out.update(backbone_weights="", embedding_dim=embedding_dim, hidden_dim=None, neck_batchnorm=False,
               neck_branches=1, dropout=0.0, flip_tta=False,
               extra_backbones=[{"backbone": c.backbone, "backbone_weights": "", "image_size": c.input_size}
                                for c in cfgs[1:]])
    return ModelConfig.from_dict(out).to_dict()  # checked as a whole


def concat_models(models: list, cfgs: list):
    """`(cfg, model)`: a combined embedding model (`concat_config`) holding each part's trained
    backbone: part 0's `visual` as `visual`, part i's `visual` as `visual_<i>`. Its `projection` is
    random until a reduction is fitted into it. `models`: the parts' Keras embedding models."""
    from guie_nb.model.embedding import ModelConfig, build_embedding_model

    cfg = ModelConfig.from_dict(concat_config([c.to_dict() for c in cfgs]))
    combined = build_embedding_model(cfg)
    for i, part in enumerate(models):
        tower = combined.get_layer("visual" if i == 0 else f"visual_{i}")
        weights = part.get_layer("visual").get_weights()
        shapes = [tuple(w.shape) for w in tower.get_weights()]
        if shapes != [tuple(w.shape) for w in weights]:
            raise ValueError(f"part {i}: its backbone's weights do not fit tower {tower.name} of the combined model")
        tower.set_weights(weights)
    return cfg, combined
