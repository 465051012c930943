"""The model notebook 04 exports, from whichever source its parameters name (`guie_nb.params.
resolve_export`): a run folder, a zero-shot model (pretrained backbone + PCA/whitening, no
training), a weight soup of several runs, or several runs' (or soups') backbones concatenated with
a PCA projection (`concat`, 4th place). The zero-shot model, the soup and the concatenation are
written as a run folder (`model_config.json` + embedding weights) before export, so they can be re-exported or
verified later like any trained run (`make verify ... MODEL_DIR=<out_dir>/zero_shot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guie_nb import run_dir


@dataclass
class ExportModel:
    """The Keras embedding model to export, its config, and what was done to make it.

    `initial`: the scores before the reduction was fitted (zero-shot: the backbone with its random
    projection, the "untrained" baseline) or None; `info`: reduction / soup summaries for the report.
    """

    cfg: object
    model: object
    initial: dict | None = None
    info: dict = field(default_factory=dict)


def _train_files(data_dir):
    from guie_nb.data.prepare import load_manifest, train_paths

    return train_paths(data_dir, load_manifest(data_dir))


def zero_shot_model(settings: dict, data_dir, val, seed: int = 0) -> ExportModel:
    """Build `settings["model"]`, load its pretrained backbone (`backbone_weights`), score it with the
    random projection (the untrained baseline), fit `settings["reduction"]` on `sample_images`
    training images into `projection`, score again, and write the run folder `settings["run_dir"]`."""
    import keras

    from guie_nb.evaluation import evaluate_keras
    from guie_nb.model.embedding import ModelConfig, build_embedding_model
    from guie_nb.model.reduction import fit_model_reduction
    from guie_nb.model.weights import load_pretrained_backbones

    cfg = ModelConfig.from_dict(settings["model"])
    keras.utils.set_random_seed(seed)  # the random projection scored as the baseline is reproducible
    model = build_embedding_model(cfg)
    load_pretrained_backbones(model, cfg)
    initial = evaluate_keras(model, val, cfg.input_size, cfg.resize_mode)
    reduction = fit_model_reduction(model, cfg, _train_files(data_dir), settings["reduction"],
                                    settings["sample_images"], settings["eps"])
    fitted = evaluate_keras(model, val, cfg.input_size, cfg.resize_mode)
    run_dir.save_embedding_model(settings["run_dir"], model, cfg)
    return ExportModel(cfg, model, initial, {"reduction": reduction.summary(), "keras_map5": fitted["map5"]})


def _soup_on_heldout(model_dirs, mode: str, val) -> tuple[object, object, dict]:
    """`guie_nb.model.soup.soup_runs` of `model_dirs` (`mode` uniform or greedy), the greedy
    criterion being the held-out mP@5 at the runs' input size: `(cfg, model, summary)`."""
    from guie_nb.evaluation import evaluate_keras
    from guie_nb.model.soup import soup_runs

    first = run_dir.load_model_config(model_dirs[0])  # soup_runs checks the others

    def score(model) -> float:
        return evaluate_keras(model, val, first.input_size, first.resize_mode)["map5"]

    return soup_runs(model_dirs, mode, score)


def soup_model(settings: dict, data_dir, val) -> ExportModel:
    """Average the runs `settings["model_dirs"]` (uniform or greedy on the held-out mP@5), optionally
    refit `projection` as PCA / whitening of the soup's features, write the run folder."""
    from guie_nb.model.reduction import fit_model_reduction

    cfg, model, summary = _soup_on_heldout(settings["model_dirs"], settings["mode"], val)
    info = {"soup": summary}
    if settings.get("reduction"):
        reduction = fit_model_reduction(model, cfg, _train_files(data_dir), settings["reduction"],
                                        settings["sample_images"], settings["eps"])
        info["reduction"] = reduction.summary()
    run_dir.save_embedding_model(settings["run_dir"], model, cfg)
    return ExportModel(cfg, model, None, info)


def _part(part: dict, val) -> tuple[object, object, dict]:
    """One part of a concatenation: `(cfg, model, summary)`, a soup of its run folders, or the run
    itself when it names one; the summary holds the part's own held-out mP@5."""
    from guie_nb.evaluation import evaluate_keras

    dirs = part["model_dirs"]
    if len(dirs) == 1:
        model, cfg = run_dir.load_embedding_model(dirs[0])
        summary = {"model_dirs": [str(dirs[0])]}
    else:
        cfg, model, summary = _soup_on_heldout(dirs, part["mode"], val)
    # a greedy soup scored itself last; anything else is scored once here
    map5 = summary["soup_scores"][-1] if summary.get("soup_scores") else \
        evaluate_keras(model, val, cfg.input_size, cfg.resize_mode)["map5"]
    summary = {**summary, "backbone": cfg.backbone, "image_size": cfg.input_size, "keras_map5": map5}
    return cfg, model, summary


def concat_model(settings: dict, data_dir, val) -> ExportModel:
    """Each of `settings["parts"]` souped (or loaded), their backbones concatenated into one model
    (`guie_nb.model.concat`), its projection fitted as `settings["reduction"]` (PCA / whitening) of
    the concatenated features on `sample_images` training images, written as a run folder."""
    from guie_nb.model.concat import concat_models
    from guie_nb.model.reduction import fit_model_reduction

    cfgs, models, parts = [], [], []
    for part in settings["parts"]:
        cfg, model, summary = _part(part, val)
        cfgs.append(cfg)
        models.append(model)
        parts.append(summary)
    cfg, model = concat_models(models, cfgs)
    del models  # the parts' weights now live in the combined model: free the copies
    reduction = fit_model_reduction(model, cfg, _train_files(data_dir), settings["reduction"],
                                    settings["sample_images"], settings["eps"])
    # not scored here: 04 scores the exported submission, the same model, on the same held-out set
    run_dir.save_embedding_model(settings["run_dir"], model, cfg)
    return ExportModel(cfg, model, None, {"concat": {"parts": parts}, "reduction": reduction.summary()})


def run_model(model_dir) -> ExportModel:
    model, cfg = run_dir.load_embedding_model(model_dir)
    return ExportModel(cfg, model)


def export_model(export: dict, data_dir, val) -> ExportModel:
    """The resolved `export` section -> the model to export (see the module doc)."""
    if export.get("zero_shot"):
        return zero_shot_model(export["zero_shot"], data_dir, val)
    if export.get("soup"):
        return soup_model(export["soup"], data_dir, val)
    if export.get("concat"):
        return concat_model(export["concat"], data_dir, val)
    return run_model(export["model_dir"])
