"""Notebook parameters -> the configs a notebook actually runs with: one code path for papermill
runs, the local runner, baked Kaggle notebooks and staging.

Each notebook passes its parameters cell's values to `resolve_<stage>()` and gets back a plain
dict of what it will use (data, model, head, train, export, paths made absolute), which it
writes to `<out_dir>/resolved_config.json` and prints. Staging calls `check()` to build the same
configs before anything is pushed, so a typo in a nested key (`train["epochz"]`) fails there.

`TARGETS` says where each parameter lands in the resolved config; the tests walk every preset's
values through it, so a value that is dropped or overridden on the way is caught.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from guie_nb import run_dir

RESOLVED_CONFIG = "resolved_config.json"

# notebook -> parameter -> dotted key in the resolved config ("model": the whole dict)
TARGETS: dict[str, dict[str, str]] = {
    "01_data_prep": {"sources": "data.sources", "val_sources": "data.val_sources", "out_dir": "data.out_dir",
                     "demo_data_dir": "data.demo_data_dir",
                     "max_side": "data.max_side", "images_per_shard": "data.images_per_shard", "seed": "data.seed",
                     "processes": "data.processes", "max_output_gb": "data.max_output_gb",
                     "num_shards": "data.num_shards", "shard_index": "data.shard_index", "dry_run": "run.dry_run"},
    "02_train_tpu": {"data_dir": "data.data_dir", "out_dir": "outputs.out_dir", "keras_backend": "run.keras_backend",
                     "cpu_devices": "run.cpu_devices", "model": "model", "train": "train", "dry_run": "run.dry_run"},
    "03_finetune": {"data_dir": "data.data_dir", "init_dir": "init.init_dir", "out_dir": "outputs.out_dir",
                    "keras_backend": "run.keras_backend", "cpu_devices": "run.cpu_devices",
                    "image_size": "model.image_size", "patch_stride": "model.patch_stride", "model_changes": "model",
                    "train": "train",
                    "dry_run": "run.dry_run"},
    "04_export": {"data_dir": "data.data_dir", "model_dir": "export.model_dir", "train_dir": "export.train_dir",
                  "out_dir": "export.out_dir", "export_format": "export.format", "flip_tta": "export.flip_tta",
                  "zero_shot": "export.zero_shot", "soup": "export.soup", "concat": "export.concat",
                  "dry_run": "run.dry_run"},
    "05_submit": {"export_dir": "submit.export_dir", "out_dir": "submit.out_dir", "dry_run": "run.dry_run"},
}
PATH_PARAMS = {"out_dir", "data_dir", "init_dir", "model_dir", "train_dir", "demo_data_dir", "root", "export_dir"}


# papermill injects `-p NAME VALUE` as a cell of this header, right after the parameters cell
# (papermill.translators.PythonTranslator.codify); its names are checked against TARGETS
PAPERMILL_HEADER = "# Parameters\n"


def injected_names(history: list[str]) -> list[str]:
    """Names assigned by papermill's injected-parameters cells among the executed cell sources
    `history` (IPython's `In`), in order; papermill's own `PAPERMILL_*` path names left out."""
    names = []
    for source in history:
        if isinstance(source, str) and source.startswith(PAPERMILL_HEADER):
            tree = ast.parse(source)
            names += [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                      if isinstance(t, ast.Name) and not t.id.startswith("PAPERMILL_")]
    return names


def refuse_unknown_parameters(notebook: str, history: list[str] | None = None) -> None:
    """ValueError when papermill injected a parameter that `notebook` does not have.

    papermill run by hand (`papermill -p epoch 3 ...`) only logs a warning for a name missing from
    the parameters cell and runs on with the default, so a typo would silently train with the wrong
    value. Called in each notebook right after its parameters: `history` is the kernel's executed
    cells (IPython's `In`, read when None); outside IPython, or with nothing injected, it does
    nothing. Presets, `make demo` and staging refuse unknown names before a notebook runs
    (`resolve`, `guie_nb.notebook_build.check_parameters`).
    """
    if notebook not in TARGETS:
        raise ValueError(f"unknown notebook {notebook!r}; notebooks: {sorted(TARGETS)}")
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        history = list(shell.user_ns.get("In", [])) if shell is not None else []
    unknown = sorted(set(injected_names(history)) - set(TARGETS[notebook]))
    if unknown:
        raise ValueError(f"{notebook}: papermill injected parameter(s) {unknown} that the notebook does not have; "
                         f"its parameters are {sorted(TARGETS[notebook])}")


def _flag(value, name: str) -> bool:
    """A True/False parameter, refused as ValueError when it is anything else: `papermill -p dry_run
    false` injects the *string* "false" (papermill converts only True, False and None), which
    `bool()` and `if` would read as True."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be True or False, got {value!r}"
                     + (" (papermill -p converts only the words True and False)" if isinstance(value, str) else ""))


def absolute(path):
    """A path made absolute; a list of paths (a data-prep output split in parts) element-wise."""
    if isinstance(path, (list, tuple)):
        return [absolute(p) for p in path]
    return None if path in (None, "") else os.path.abspath(os.fspath(path))


def _sources(sources, val_only: bool = False) -> list[dict]:
    from guie_nb.data.source_images import SourceError
    from guie_nb.data.sources import SourceSpec

    if not isinstance(sources, (list, tuple)) or (not sources and not val_only):
        raise SourceError(f"{'val_sources' if val_only else 'sources'} must be a "
                          f"{'' if val_only else 'non-empty '}list of {{'kind': ..., 'root': ...}} entries")
    if val_only:
        sources = [{**s, "val_only": True} if isinstance(s, dict) else s for s in sources]
    return [{**asdict(spec), "root": absolute(spec.root)} for spec in map(SourceSpec.from_dict, sources)]


def resolve_data_prep(*, sources, out_dir, val_sources=(), demo_data_dir=None, max_side=512, images_per_shard=1000,
                      seed=0, processes=None, max_output_gb=20.0, num_shards=1, shard_index=0,
                      dry_run=False) -> dict:
    """01's parameters -> `{"data": {...}, "run": {...}}`; sources with the recipe's defaults filled in,
    `val_sources` (validation only, e.g. GPR1200) likewise, each marked `val_only`."""
    if max_side < 16 or images_per_shard < 1:
        raise ValueError(f"need max_side >= 16 and images_per_shard >= 1, got {max_side}, {images_per_shard}")
    if not (isinstance(num_shards, int) and num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ValueError(f"need num_shards >= 1 and 0 <= shard_index < num_shards, got {num_shards}, {shard_index}")
    return {"notebook": "01_data_prep",
            "data": {"sources": _sources(sources), "val_sources": _sources(val_sources or [], val_only=True),
                     "out_dir": absolute(out_dir), "demo_data_dir": absolute(demo_data_dir),
                     "max_side": max_side, "images_per_shard": images_per_shard, "seed": seed,
                     "processes": processes, "max_output_gb": max_output_gb, "num_shards": num_shards,
                     "shard_index": shard_index},
            "run": {"dry_run": _flag(dry_run, "dry_run")}}


def _model_section(model_cfg) -> dict:
    from guie_nb.model.weights import locate_weights

    d = model_cfg.to_dict()
    return {"model": d, "head": d["head"], "backbone": asdict(model_cfg.vit),
            "weights": locate_weights(model_cfg.backbone_weights, model_cfg.backbone)}


def _outputs(out_dir, train_cfg) -> dict:
    """Where a training run writes; with cached_embeddings also its feature cache
    (`guie_nb.training.feature_cache`; a fine-tune reuses its init_dir's when it fits)."""
    out = {"out_dir": absolute(out_dir)}
    if train_cfg.cached_embeddings:
        out["feature_cache"] = os.path.join(out["out_dir"], "feature_cache")
    return out


def resolve_training(*, data_dir, out_dir, model: dict, train: dict, keras_backend="jax", cpu_devices=0,
                     dry_run=False) -> dict:
    """02's parameters -> data, model (backbone, weights location), head, train, outputs."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig

    model_cfg, train_cfg = ModelConfig.from_dict(model), TrainConfig.from_dict(train)
    return {"notebook": "02_train_tpu", "data": {"data_dir": absolute(data_dir)}, **_model_section(model_cfg),
            "train": train_cfg.to_dict(), "outputs": _outputs(out_dir, train_cfg),
            "run": {"keras_backend": keras_backend, "cpu_devices": cpu_devices, "dry_run": _flag(dry_run, "dry_run")}}


# what a later stage cannot change: the weights it starts from have these shapes
FIXED_BY_INIT = ("backbone", "backbone_weights", "embedding_dim", "hidden_dim", "neck_branches", "size_features")


def apply_model_changes(model_config: dict, changes: dict | None) -> dict:
    """A stage's `model_changes` applied to the model it starts from (`head` merged key by key).
    Raises ValueError for a change of what fixes the weights' shapes (FIXED_BY_INIT, the head's
    kind of sub-centres)."""
    changes = changes or {}
    if not isinstance(changes, dict):
        raise ValueError(f"model_changes must be a dict of ModelConfig values, got {changes!r}")
    fixed = [k for k in FIXED_BY_INIT if k in changes and changes[k] != model_config.get(k)]
    head = changes.get("head") or {}
    if "subcenters" in head and head["subcenters"] != (model_config.get("head") or {}).get("subcenters", 1):
        fixed.append("head.subcenters")
    if fixed:
        raise ValueError(f"model_changes {fixed}: these fix the shapes of the weights the stage starts from "
                         "(init_dir's model); only resolution, patch stride, dropout and the head's margin and "
                         "scale change between stages")
    out = {**model_config, **{k: v for k, v in changes.items() if k != "head"}}
    if head:
        out["head"] = {**(model_config.get("head") or {}), **head}
    return out


def resolve_finetune(*, data_dir, init_dir, out_dir, train: dict, image_size=None, patch_stride=None,
                     model_changes=None, keras_backend="jax", cpu_devices=0, dry_run=False,
                     model_config: dict | None = None) -> dict:
    """03's parameters -> the same sections as 02, the model read from `init_dir/model_config.json`
    (or `model_config`, e.g. at staging before the stage before has run), with `model_changes`
    (a stage's new resolution, patch stride, margin, ...; `apply_model_changes`), then `image_size`
    and `patch_stride` (overlapping patches, `ModelConfig.patch_stride`) applied."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.training.config import TrainConfig

    train_cfg = TrainConfig.from_dict(train)
    if model_config is None:
        path = Path(init_dir) / run_dir.MODEL_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: init_dir must hold the training notebook's output")
        model_config = json.loads(path.read_text())
    model_cfg = ModelConfig.from_dict(apply_model_changes(model_config, model_changes))
    changes = {k: v for k, v in (("image_size", image_size), ("patch_stride", patch_stride)) if v}
    if changes:  # one replace: the patch geometry is checked with both applied
        model_cfg = replace(model_cfg, **changes)
    return {"notebook": "03_finetune", "data": {"data_dir": absolute(data_dir)}, "init": {"init_dir": absolute(init_dir)},
            **_model_section(model_cfg), "train": train_cfg.to_dict(), "outputs": _outputs(out_dir, train_cfg),
            "run": {"keras_backend": keras_backend, "cpu_devices": cpu_devices, "dry_run": _flag(dry_run, "dry_run")}}


ZERO_SHOT_KEYS = ("model", "reduction", "sample_images", "eps")
SOUP_KEYS = ("model_dirs", "mode", "reduction", "sample_images", "eps")
CONCAT_KEYS = ("parts", "embedding_dim", "reduction", "sample_images", "eps")
CONCAT_PART_KEYS = ("model_dirs", "mode")


def _reduction_settings(section: dict, name: str, required: bool) -> dict:
    from guie_nb.model.reduction import REDUCTIONS

    kind = section.get("reduction", "pca" if required else None)
    if (kind is None and required) or (kind is not None and kind not in REDUCTIONS):
        raise ValueError(f"{name}.reduction must be one of {REDUCTIONS}{'' if required else ' or None'}, got {kind!r}")
    sample = section.get("sample_images", 2000)
    if not isinstance(sample, int) or sample < 2:
        raise ValueError(f"{name}.sample_images must be an int >= 2, got {sample!r}")
    eps = section.get("eps", 1e-6)
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{name}.eps must be a number >= 0, got {eps!r}")
    return {"reduction": kind, "sample_images": sample, "eps": float(eps)}


def _zero_shot(zero_shot: dict, out_dir) -> tuple[dict, dict]:
    """(export.zero_shot, the model config) of a zero-shot export: pretrained backbone, the
    projection fitted as PCA / whitening on training images (guie_nb.model.reduction)."""
    from guie_nb.model.embedding import ModelConfig

    if not isinstance(zero_shot, dict):
        raise ValueError(f"zero_shot must be a dict with keys {list(ZERO_SHOT_KEYS)}, got {zero_shot!r}")
    unknown = sorted(set(zero_shot) - set(ZERO_SHOT_KEYS))
    if unknown or "model" not in zero_shot:
        raise ValueError(f"zero_shot: unknown key(s) {unknown} or no 'model'; keys: {list(ZERO_SHOT_KEYS)}")
    cfg = ModelConfig.from_dict(zero_shot["model"])
    if cfg.hidden_dim:
        raise ValueError(f"zero_shot: hidden_dim {cfg.hidden_dim} would put an untrained layer between the backbone "
                         "and the fitted projection; leave it None")
    if cfg.embedding_dim > cfg.vit.feature_dim:
        raise ValueError(f"zero_shot: embedding_dim {cfg.embedding_dim} exceeds the {cfg.backbone} feature width "
                         f"{cfg.vit.feature_dim}: PCA cannot add dimensions")
    settings = {"model": cfg.to_dict(), **_reduction_settings(zero_shot, "zero_shot", required=True),
                "run_dir": absolute(Path(out_dir) / "zero_shot")}
    return settings, cfg.to_dict()


def _check_keys(value, name: str, keys) -> None:
    """ValueError unless `value` is a dict whose keys are among `keys` (the message names them)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict with keys {list(keys)}, got {value!r}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; keys: {list(keys)}")


def _soup(soup: dict, out_dir) -> dict:
    from guie_nb.model.soup import SOUP_MODES

    _check_keys(soup, "soup", SOUP_KEYS)
    dirs = soup.get("model_dirs")
    if not isinstance(dirs, (list, tuple)) or len(dirs) < 2:
        raise ValueError(f"soup.model_dirs must list at least 2 run folders, got {dirs!r}")
    mode = soup.get("mode", "uniform")
    if mode not in SOUP_MODES:
        raise ValueError(f"soup.mode must be one of {SOUP_MODES}, got {mode!r}")
    return {"model_dirs": absolute(list(dirs)), "mode": mode, **_reduction_settings(soup, "soup", required=False),
            "run_dir": absolute(Path(out_dir) / "soup")}


def _concat(concat: dict, out_dir) -> dict:
    """export.concat: each part a run folder or a soup of several (`model_dirs`, `mode`), the
    reduction fitted on the concatenated features (required: the combined projection is untrained)."""
    from guie_nb.model.soup import SOUP_MODES

    _check_keys(concat, "concat", CONCAT_KEYS)
    parts = concat.get("parts")
    if not isinstance(parts, (list, tuple)) or len(parts) < 2:
        raise ValueError("concat.parts must list at least 2 parts ({'model_dirs': [...], 'mode': ...}), "
                         f"got {parts!r}")
    out_parts = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or set(part) - set(CONCAT_PART_KEYS) or not part.get("model_dirs"):
            raise ValueError(f"concat.parts[{i}] must be {{'model_dirs': [run folders], 'mode': {SOUP_MODES}}}, "
                             f"got {part!r}")
        dirs, mode = part["model_dirs"], part.get("mode", "uniform")
        if not isinstance(dirs, (list, tuple)) or mode not in SOUP_MODES:
            raise ValueError(f"concat.parts[{i}]: model_dirs must be a list and mode one of {SOUP_MODES}, got {part!r}")
        out_parts.append({"model_dirs": absolute(list(dirs)), "mode": mode})
    dim = concat.get("embedding_dim", 64)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ValueError(f"concat.embedding_dim must be an int, got {dim!r}")
    return {"parts": out_parts, "embedding_dim": dim, **_reduction_settings(concat, "concat", required=True),
            "run_dir": absolute(Path(out_dir) / "concat")}


def _concat_model(settings: dict, run_models: dict | None) -> dict | None:
    """The combined model of a concatenation, from each part's first run folder's config (or, at
    staging before anything ran, `run_models`: absolute out_dir -> the model its kernel trains);
    None when a part's config is not known yet."""
    from guie_nb.model.concat import concat_config

    parts = []
    for part in settings["parts"]:
        path = Path(part["model_dirs"][0]) / run_dir.MODEL_CONFIG
        model = json.loads(path.read_text()) if path.is_file() else (run_models or {}).get(part["model_dirs"][0])
        if model is None:
            return None
        parts.append(model)
    return concat_config(parts, settings["embedding_dim"])


def resolve_export(*, data_dir, out_dir, model_dir=None, train_dir=None, export_format="saved_model",
                   flip_tta=False, zero_shot: dict | None = None, soup: dict | None = None,
                   concat: dict | None = None, dry_run=False, model_config: dict | None = None,
                   run_models: dict | None = None) -> dict:
    """04's parameters -> export settings and the model it exports. Exactly one model source:

    - `model_dir`: a run folder (`model_config.json` + embedding weights), e.g. the fine-tune's;
    - `zero_shot`: `{"model": {...ModelConfig}, "reduction": "pca" | "whiten", "sample_images": int,
      "eps": float}`: no training, the pretrained backbone with its projection fitted on training
      images, written to `<out_dir>/zero_shot` and exported from there;
    - `soup`: `{"model_dirs": [...], "mode": "uniform" | "greedy", "reduction": None | "pca" |
      "whiten", "sample_images": int}`: the runs' weights averaged (guie_nb.model.soup), optionally
      with the projection refitted as PCA, written to `<out_dir>/soup`;
    - `concat`: `{"parts": [{"model_dirs": [...], "mode": "uniform" | "greedy"}, ...], "reduction":
      "pca" | "whiten", "sample_images": int, "embedding_dim": 64}`: each part souped (or one run),
      their backbones concatenated in one model, part 0's the main tower at the largest input size
      (guie_nb.model.concat), its projection fitted on the concatenated features, written to
      `<out_dir>/concat`. Its model config comes from the parts' run folders, else `run_models`
      (absolute out_dir -> model dict, given by `check` at staging).

    `train_dir` (its `metrics.json`) gives the untrained score for the report; without it (zero-shot)
    the export scores the model before its projection is fitted. ValueError for several sources or none.
    """
    from guie_nb.export.submission import SAVED_MODEL, TORCHSCRIPT

    FORMATS = (SAVED_MODEL, TORCHSCRIPT)
    from guie_nb.model.embedding import ModelConfig

    if export_format not in FORMATS:
        raise ValueError(f"unknown export_format {export_format!r}; choose one of {FORMATS}")
    given = [name for name, v in (("model_dir", model_dir), ("zero_shot", zero_shot), ("soup", soup),
                                  ("concat", concat)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one of model_dir, zero_shot, soup, concat (the model to export); "
                         f"got {given or 'none'}")
    # run_dir: the run folder exported (model_dir, or where the zero-shot model / the soup is written)
    export = {"model_dir": absolute(model_dir), "train_dir": absolute(train_dir), "out_dir": absolute(out_dir),
              "format": export_format, "flip_tta": _flag(flip_tta, "flip_tta"), "zero_shot": None, "soup": None,
              "concat": None, "run_dir": absolute(model_dir)}
    if zero_shot:
        export["zero_shot"], model_config = _zero_shot(zero_shot, out_dir)
        export["run_dir"] = export["zero_shot"]["run_dir"]
    elif concat:
        export["concat"] = _concat(concat, out_dir)
        export["run_dir"] = export["concat"]["run_dir"]
        model_config = _concat_model(export["concat"], run_models)
    elif soup:
        export["soup"] = _soup(soup, out_dir)
        export["run_dir"] = export["soup"]["run_dir"]
        path = Path(export["soup"]["model_dirs"][0]) / run_dir.MODEL_CONFIG
        if model_config is None and path.is_file():
            model_config = json.loads(path.read_text())
    else:
        path = Path(model_dir) / run_dir.MODEL_CONFIG
        if model_config is None and path.is_file():
            model_config = json.loads(path.read_text())
    out = {"notebook": "04_export", "data": {"data_dir": absolute(data_dir)}, "export": export,
           "run": {"dry_run": _flag(dry_run, "dry_run")}}
    if model_config is not None:
        out.update(_model_section(ModelConfig.from_dict(model_config)))
    return out


def resolve_submit(*, export_dir, out_dir, dry_run=False) -> dict:
    """05's parameters -> where the verified zip is read (the export's output) and handed over."""
    if absolute(export_dir) == absolute(out_dir):
        raise ValueError(f"the submit notebook's out_dir must differ from export_dir ({export_dir}): "
                         "it copies the export's submission.zip")
    return {"notebook": "05_submit", "submit": {"export_dir": absolute(export_dir), "out_dir": absolute(out_dir)},
            "run": {"dry_run": _flag(dry_run, "dry_run")}}


RESOLVERS = {"01_data_prep": resolve_data_prep, "02_train_tpu": resolve_training, "03_finetune": resolve_finetune,
             "04_export": resolve_export, "05_submit": resolve_submit}


def resolve(notebook: str, params: dict, **extra) -> dict:
    """The resolved config of `notebook` for these parameter values."""
    if notebook not in RESOLVERS:
        raise ValueError(f"unknown notebook {notebook!r}; notebooks: {sorted(RESOLVERS)}")
    takes = [name for name in inspect.signature(RESOLVERS[notebook]).parameters
             if name not in ("model_config", "run_models")]
    unknown = sorted(set(params) - set(takes))
    if unknown:  # the resolvers' keywords are the notebook's parameters (tests/test_params.py)
        raise ValueError(f"unknown parameter(s) {unknown}; the notebook takes {takes}")
    return RESOLVERS[notebook](**params, **extra)


def check(params: dict[str, dict]) -> dict[str, dict]:
    """Resolve every kernel's parameters (kernel key -> values, in chain order; `guie_nb.stages`) as
    staging sees them, before any kernel has run: each fine-tune stage gets the model of the training
    kernel whose output is its `init_dir` (else the training kernel before it), the export the model
    of the run it exports (`model_dir`, the soup's first run; a concatenation every part's).
    Raises on any unknown or bad key."""
    from guie_nb.stages import notebook_of

    resolved, model, by_dir = {}, None, {}
    for key, values in params.items():
        nb = notebook_of(key)
        try:
            extra = {}
            if nb == "03_finetune":
                extra = {"model_config": by_dir.get(absolute(values.get("init_dir")), model)}
            elif nb == "04_export":
                soup = values.get("soup") or {}
                source = soup.get("model_dirs", [None])[0] if isinstance(soup, dict) else None
                exported = by_dir.get(absolute(source or values.get("model_dir")), model)
                extra = {"model_config": exported, "run_models": by_dir}
            resolved[key] = resolve(nb, values, **{k: v for k, v in extra.items() if v is not None})
        except (TypeError, ValueError) as err:  # SourceError is a ValueError
            raise ValueError(f"{key}: {err}") from err
        if nb in ("02_train_tpu", "03_finetune"):
            model = resolved[key]["model"]
            by_dir[resolved[key]["outputs"]["out_dir"]] = model
    return resolved


def lookup(resolved: dict, dotted: str):
    node = resolved
    for key in dotted.split("."):
        node = node[key]
    return node


def write_resolved(resolved: dict, out_dir: str | Path) -> Path:
    """`out_dir/resolved_config.json`, written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RESOLVED_CONFIG}.tmp"
    tmp.write_text(json.dumps(resolved, indent=2, default=str) + "\n")
    os.replace(tmp, out / RESOLVED_CONFIG)
    return out / RESOLVED_CONFIG
