"""Dry run (preflight): what a notebook would do, checked before the heavy work starts.

Each notebook, run with `dry_run = True`, resolves its configs (`guie_nb.params`), then calls the
preflight of its stage, which checks every input (source roots and their listing files, backbone
weights against the configured backbone, an earlier kernel's outputs), estimates the cost (output
GB, hours, memory per chip, scoring hours) against Kaggle's limits, writes `preflight.json` next
to `resolved_config.json`, prints a table, and the notebook stops there.

Report schema (the rehearsal, `guie_nb.kaggle.rehearse`, reads it):
`{"notebook", "inputs": [{"name", "path", "found"}], "estimates": {"output_gb", "hours",
"memory_gib_per_device_xla", "memory_gib_per_device_plan", ...}, "limits": [{"name", "limit",
"value", "ok"}], "problems": [str]}`.

Assumptions, stated where they are used: a Kaggle CPU kernel has 4 vCPUs, 2 cores; a TPU v5e chip peaks at
197 bf16 TFLOP/s and a ViT train step reaches `ASSUMED_MFU` of it; the export's model work runs at
`ASSUMED_EXPORT_FLOPS` on the kernel's machine (`EXPORT_THROUGHPUT_SOURCE`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from guie_nb import run_dir
from guie_nb.data import resampling
from guie_nb.params import RESOLVED_CONFIG, write_resolved

PREFLIGHT = "preflight.json"
GB, GIB = 1e9, 1024**3
OUTPUT_LIMIT_GB = 20.0  # Kaggle keeps 20 GB of a notebook's output
SESSION_HOURS = {"cpu": 12.0, "tpu": 9.0, "gpu": 9.0}
SCORING_LIMIT_H = 9.0
MAX_EMBEDDING_DIM = 64
# A Kaggle CPU kernel has 4 vCPUs (what os.cpu_count() reports, so data-prep starts 4 workers):
# 2 hyperthreaded cores (assumed: Kaggle runs on Google Cloud, where a vCPU is one hyperthread). Hours are planned on the 2 cores; hyperthreading's gain is not counted.
KAGGLE_CPU_VCPUS, KAGGLE_CPU_CORES = 4, 2
TPU_V5E_PEAK_FLOPS = 197e12  # bf16 per chip (Google Cloud TPU v5e spec sheet)
ASSUMED_MFU = 0.35  # of peak, for a ViT-H step with FSDP; measure with benchmarks/train_step.py
SCORER_IMAGES = 205_000  # 5,000 queries + 200,000 index images, one model call each
# The scorer's hardware is not published. The 1st place's 290 px overlapping-patch ViT-H-14 (about
# 0.78 TFLOP per image, `scoring_estimate`) scored 205,000 images within 9 h, so the scorer sustained
# at least ~5 TFLOP/s: that lower bound is the assumption.
ASSUMED_SCORER_FLOPS = 5e12
# What 04's Keras / TensorFlow model work sustains (fp32 inference) on the kernel's machine.
# CPU: a ViT-H-14 224 px forward (0.33 TFLOP, `guie_nb.model.flops`) took 3.3 s on 2 CPU cores here
# (../shared/GUIE_FACTS.md section 5), 0.1 TFLOP/s; a Kaggle CPU kernel's 4 vCPUs are 2 hyperthreaded
# cores, so 0.1 TFLOP/s. GPU: a Tesla T4 peaks at 8.1 fp32 TFLOP/s (NVIDIA T4 datasheet); 04 runs
# in float32 on one of the shape's two T4s (no distribution strategy) and its held-out evaluation
# of the exported model feeds one image at a time, so a conservative 30% of one T4's peak is assumed.
ASSUMED_EXPORT_FLOPS = {"cpu": 0.1e12, "gpu": 0.3 * 8.1e12}
EXPORT_THROUGHPUT_SOURCE = {
    "cpu": f"Kaggle CPU kernel ({KAGGLE_CPU_VCPUS} vCPUs = {KAGGLE_CPU_CORES} cores): 0.1 TFLOP/s, "
           "a ViT-H-14 forward (0.33 TFLOP) measured at 3.3 s "
           "on a 2-core CPU machine (2026-11)",
    "gpu": "Kaggle GPU kernel (NvidiaTeslaT4, one of its T4s used): 30% of the T4's 8.1 fp32 TFLOP/s peak, "
           "meant as conservative for float32 inference with one-image-at-a-time scoring; assumed, not measured "
           "(no GPU was lent to this project)"}
SCORER_ASSUMPTION = ("scorer hardware not published; assumed to sustain 5 TFLOP/s, the lower bound implied by the "
                     "1st place's 290 px stride-12 ViT-H-14 (0.78 TFLOP/image) scoring 205,000 images within 9 h")


def _input(name: str, path, found: bool | None = None) -> dict:
    path = None if path is None else str(path)
    return {"name": name, "path": path, "found": bool(found if found is not None else path and Path(path).exists())}


def _limit(name: str, limit: float, value: float | None) -> dict:
    return {"name": name, "limit": limit, "value": value, "ok": value is None or value <= limit}


def _finish(notebook: str, out_dir, inputs, estimates, limits, problems, resolved) -> dict:
    problems = list(problems)
    problems += [f"input missing: {i['name']} ({i['path']})" for i in inputs if not i["found"]]
    problems += [f"over the limit: {lim['name']} {lim['value']:.3g} > {lim['limit']:g}" for lim in limits
                 if not lim["ok"]]
    report = {"notebook": notebook, "ok": not problems, "inputs": inputs, "estimates": estimates, "limits": limits,
              "problems": problems}
    out = Path(out_dir)
    write_resolved(resolved, out)
    (out / PREFLIGHT).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_report(report)
    return report


def print_report(report: dict) -> None:
    print(f"dry run of {report['notebook']}: {'OK' if report['ok'] else 'PROBLEMS'}")
    for i in report["inputs"]:
        print(f"  input  {'ok     ' if i['found'] else 'MISSING'} {i['name']}: {i['path']}")
    for k, v in report["estimates"].items():
        print(f"  estimate {k}: {v if not isinstance(v, float) else f'{v:.4g}'}")
    for lim in report["limits"]:
        value = "n/a" if lim["value"] is None else f"{lim['value']:.3g}"
        print(f"  limit  {'ok  ' if lim['ok'] else 'OVER'} {lim['name']}: {value} (limit {lim['limit']:g})")
    for p in report["problems"]:
        print(f"  PROBLEM {p}")


# ---- 01 data-prep ----------------------------------------------------------------------------

def preflight_data_prep(resolved: dict) -> dict:
    """Check every source root, then plan exactly as `prepare` does (`prepare.plan_data_prep`: read
    the listings, drop files not on disk, select, plan this kernel's part) and estimate its output
    (bytes and seconds per image from the plan's seeded sample, processed as the workers will)."""
    from guie_nb.data import prepare as prep
    from guie_nb.data.shard_writer import ImageSettings
    from guie_nb.data.source_images import SourceError

    data = resolved["data"]
    inputs, problems, specs = [], [], []
    try:
        specs = prep.source_specs(data["sources"], data.get("val_sources") or None)
    except SourceError as err:
        problems.append(str(err))
    demo = str(data["demo_data_dir"]) if data["demo_data_dir"] else None
    generated = {s.name for s in specs if demo and str(s.root).startswith(demo)}  # written by the notebook itself
    for spec in specs:
        if spec.name not in generated:
            inputs.append(_input(f"source {spec.name} ({spec.kind})", spec.root))
    estimates = {"output_gb": None, "hours": None, "images_planned": None, "train_images_planned": None,
                 "files_missing": None, "bytes_per_image": None,
                 "seconds_per_image": None, "memory_gib_per_device_xla": None, "memory_gib_per_device_plan": None}
    if specs and not generated and all(i["found"] for i in inputs):
        try:
            plan = prep.plan_data_prep(specs, ImageSettings(data["max_side"], prep.DEFAULT_JPEG_QUALITY),
                                       Path(data["out_dir"]), images_per_shard=data["images_per_shard"],
                                       seed=data["seed"], num_shards=data["num_shards"],
                                       shard_index=data["shard_index"])
        except SourceError as err:
            problems.append(str(err))
        else:
            seconds = plan.estimate_seconds / max(plan.estimate_samples, 1)
            # one worker per vCPU; they share 2 cores (`seconds` is this machine's time on one core)
            parallel = min(data["processes"] or KAGGLE_CPU_VCPUS, KAGGLE_CPU_CORES)
            # classes by training-image count, per source, of the whole run (every part plans it
            # all): what a class-resampling training stage's epoch is estimated from (rehearse)
            sizes = {n: resampling.size_histogram(len(v) for v in sel.train.values())
                     for n, sel in plan.selections.items()}
            estimates.update(output_gb=plan.estimated_bytes / GB, images_planned=plan.images, train_class_sizes=sizes,
                             train_images_planned=plan.train_images, files_missing=plan.existence["files_missing"],
                             bytes_per_image=plan.estimated_bytes / max(plan.images, 1),
                             seconds_per_image=seconds, hours=seconds * plan.images / parallel / 3600)
    limits = [_limit("output_gb", min(OUTPUT_LIMIT_GB, data["max_output_gb"]), estimates["output_gb"]),
              _limit("session_hours", SESSION_HOURS["cpu"], estimates["hours"])]
    return _finish("01_data_prep", data["out_dir"], inputs, estimates, limits, problems, resolved)


# ---- 02 / 03 training ------------------------------------------------------------------------

def scoring_estimate(model, flip_tta: bool = False) -> dict:
    """How long the scorer runs the exported model: its inference FLOPs per image
    (`guie_nb.model.flops.flops_per_image(cfg, backward=False)`: every concatenated backbone at its
    own input size, the patch stride's tokens, the neck; x2 with flip TTA: the image and its mirror) x `SCORER_IMAGES`
    / `ASSUMED_SCORER_FLOPS`, against the 9 h limit.

    `model`: a model config as a dict (as a preset states it) or a `ModelConfig`. Returns
    `{"image_size", "patch_stride", "tokens", "extra_towers" (each concatenated backbone's name, input
    size and tokens), "flip_tta", "flops_per_image", "images", "scorer_flops", "hours", "limit_hours", "fits",
    "assumption"}`. Raises ValueError for a dict that is no valid
    `ModelConfig`.
    """
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.model.flops import flops_per_image, num_tokens, tower_tokens

    cfg = ModelConfig.from_dict(model) if isinstance(model, dict) else model
    flip_tta = flip_tta or cfg.flip_tta
    flops = (2 if flip_tta else 1) * flops_per_image(cfg, backward=False).forward
    hours = flops * SCORER_IMAGES / ASSUMED_SCORER_FLOPS / 3600
    return {"image_size": cfg.vit.image_size, "patch_stride": cfg.vit.stride, "tokens": num_tokens(cfg),
            "extra_towers": [{"backbone": e["backbone"], "image_size": v.image_size, "tokens": tower_tokens(v)}
                             for e, v in zip(cfg.extra_backbones, cfg.extra_vits)],
            "flip_tta": flip_tta, "flops_per_image": flops, "images": SCORER_IMAGES,
            "scorer_flops": ASSUMED_SCORER_FLOPS, "hours": hours, "limit_hours": SCORING_LIMIT_H,
            "fits": hours <= SCORING_LIMIT_H, "assumption": SCORER_ASSUMPTION}


def format_scoring(est: dict) -> str:
    """One line: resolution, tokens (each concatenated tower's too), FLOPs, hours against the
    limit, and the verdict."""
    extras = "".join(f" + {t['backbone']} at {t['image_size']} px: {t['tokens']} tokens"
                     for t in est.get("extra_towers", []))
    return (f"scoring at {est['image_size']} px, patch stride {est['patch_stride']}"
            f"{', flip TTA' if est['flip_tta'] else ''}: {est['tokens']} tokens{extras}, "
            f"{est['flops_per_image'] / 1e12:.3g} TFLOP/image x {est['images']:,} images / "
            f"{est['scorer_flops'] / 1e12:g} TFLOP/s = {est['hours']:.2f} h "
            f"({'fits' if est['fits'] else 'OVER'} the {est['limit_hours']:g} h limit)")


def train_flops_per_image(model_cfg, train_cfg, num_classes: int | None = None) -> float:
    """What the device executes per training image (`guie_nb.model.flops`: forward, the backward
    of what trains and what lies above it, and the forward that remat recomputes)."""
    from guie_nb.model.flops import train_flops_per_image as analytic

    return analytic(model_cfg, train_cfg, num_classes).hardware


def _manifest_inputs(data_dir, inputs: list, problems: list) -> dict | None:
    """The data-prep output (one folder, or the folders of its parts) and its training shards."""
    from guie_nb.data.prepare import load_manifest, train_paths

    dirs = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
    for d in dirs:
        inputs.append(_input("data-prep manifest", Path(d) / "manifest.json"))
    if not all(i["found"] for i in inputs[-len(dirs):]):
        return None
    try:
        manifest = load_manifest(data_dir)
        files = train_paths(data_dir, manifest)
    except (OSError, ValueError) as err:
        problems.append(f"data-prep output {data_dir}: {err}")
        return None
    missing = [str(f) for f in files if not f.is_file()]
    inputs.append(_input(f"training shards ({len(files)})", dirs[0], not missing and bool(files)))
    if missing:
        problems.append(f"training shards missing: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return manifest


def preflight_training(resolved: dict, xla_memory: bool = False, device: str = "v5e-8") -> dict:
    """Inputs (manifest and shards; 02: backbone weights against the backbone; 03: the training
    notebook's output) and estimates (memory per chip from the planner and, with `xla_memory`, from
    XLA's ahead-of-time compile for the TPU; hours from the FLOP count at `ASSUMED_MFU`)."""
    from guie_nb.model import memory_plan
    from guie_nb.model.backbones import vit_config
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.model.weights_check import open_clip_tag_problems, weights_problems
    from guie_nb.training.config import TrainConfig

    nb = resolved["notebook"]
    model_cfg, train_cfg = ModelConfig.from_dict(resolved["model"]), TrainConfig.from_dict(resolved["train"])
    inputs, problems = [], []
    manifest = _manifest_inputs(resolved["data"]["data_dir"], inputs, problems)
    if nb == "03_finetune":
        init = Path(resolved["init"]["init_dir"])
        for name in run_dir.MODEL_FILES:
            inputs.append(_input(f"training output {name}", init / name))
    else:
        w = resolved["weights"]
        if w["source"] != "none":
            inputs.append(_input(f"backbone weights ({w['source']})", w["path"], w["found"]))
            # the backbone's native config: an image_size override is honoured by resampling positions
            native = vit_config(model_cfg.backbone)
            if w["found"]:
                problems += weights_problems(w, native)
            else:  # open_clip's tables ship with open_clip: a tag is checked before its download
                problems += open_clip_tag_problems(w, native)
    num_classes = manifest["num_classes"] if manifest else None
    estimates = {"output_gb": None, "hours": None, "memory_gib_per_device_xla": None,
                 "memory_gib_per_device_plan": None, "train_images": manifest and manifest["train_images"],
                 "num_classes": num_classes, "device": device}
    if num_classes:
        mem = memory_plan.plan_for(model_cfg, train_cfg, num_classes, device=device)
        estimates["memory_gib_per_device_plan"] = mem.bytes_per_device / GIB
        estimates["memory_plan"] = mem.summary()
        capacity = mem.capacity_bytes / GIB
        if xla_memory:
            from guie_nb.training.xla_memory import compiled_memory

            xla = compiled_memory(model_cfg, train_cfg, num_classes)
            estimates["memory_gib_per_device_xla"] = None if xla is None else xla.peak_gib
        n_dev = memory_plan.DEVICES[device][0]
        images, ranges = manifest["train_images"], None
        if train_cfg.train_sources:  # an epoch is one pass over the named sources' images
            from guie_nb.data.prepare import source_labels

            try:
                ranges, images = source_labels(manifest, train_cfg.train_sources)
            except ValueError as err:
                problems.append(str(err))
        if train_cfg.min_draws_per_class:  # class resampling: an epoch is the resampled stream
            images = resampling.epoch_images(resampling.manifest_class_counts(manifest),
                                             train_cfg.min_draws_per_class, ranges)
        estimates.update(train_images=images, data_train_images=manifest["train_images"])
        # cached_embeddings: the backbone sees each training image once (all of them: the cache does
        # not depend on train_sources); the neck + head epochs on the features (~1e6 FLOPs per image
        # against a ViT's ~1e11) are left out
        cached = getattr(train_cfg, "cached_embeddings", False)
        per_image = train_flops_per_image(model_cfg, train_cfg, num_classes)
        flops = per_image * manifest["train_images"] if cached else per_image * images * train_cfg.epochs
        estimates["hours"] = flops / (n_dev * TPU_V5E_PEAK_FLOPS * ASSUMED_MFU) / 3600
        estimates["assumed_mfu"] = ASSUMED_MFU
        # float32 (guie_nb.training.checkpoint): a checkpoint holds every variable plus the optimizer's
        # slots for what is trained. The peak: while a checkpoint is written the oldest kept one is
        # still there (keep + 1 of them); at the end, `keep_checkpoints` of them and the two weight files
        slots = memory_plan.OPTIMIZER_SLOTS[train_cfg.optimizer]
        checkpoint = mem.params_total + slots * mem.params_trainable
        keep = train_cfg.keep_checkpoints
        if cached:  # no checkpoints; the feature cache: float16 features of every training image
            features = 2 * model_cfg.vit.feature_dim * manifest["train_images"]
            estimates["output_gb"] = (4 * 2 * mem.params_total + features) / GB
        else:
            estimates["output_gb"] = 4 * max((keep + 1) * checkpoint, keep * checkpoint + 2 * mem.params_total) / GB
    else:
        capacity = memory_plan.DEVICES[device][1] / GIB
    worst = max([v for v in (estimates["memory_gib_per_device_plan"], estimates["memory_gib_per_device_xla"])
                 if v is not None], default=None)
    limits = [_limit("memory_gib_per_device", capacity, worst),
              _limit("session_hours", SESSION_HOURS["tpu"], estimates["hours"]),
              _limit("output_gb", OUTPUT_LIMIT_GB, estimates["output_gb"]),
              _limit("embedding_dim", MAX_EMBEDDING_DIM, model_cfg.embedding_dim)]
    return _finish(nb, resolved["outputs"]["out_dir"], inputs, estimates, limits, problems, resolved)


# ---- 04 export -------------------------------------------------------------------------------

def exported_weights_gb(cfg) -> float:
    """GB of the exported model's float32 weights: every backbone (concatenated `extra_backbones`
    each whole; `guie_nb.model.memory_plan.vit_params`), the estimate of 04's submission.zip (the
    neck's ~1e5 values are left out). `cfg`: a `ModelConfig`."""
    from guie_nb.model.memory_plan import vit_params

    return 4 * sum(vit_params(v) for v in [cfg.vit, *cfg.extra_vits]) / GB


def _forward_flops(model) -> float:
    """Inference FLOPs per image of a model (a dict or `ModelConfig`), x2 when it has flip TTA."""
    from guie_nb.model.embedding import ModelConfig
    from guie_nb.model.flops import flops_per_image

    cfg = ModelConfig.from_dict(model) if isinstance(model, dict) else model
    return (2 if cfg.flip_tta else 1) * flops_per_image(cfg, backward=False).forward


def soup_evaluations(n_runs: int, mode: str) -> int:
    """Held-out evaluations a soup of `n_runs` runs makes (`guie_nb.model.soup.greedy_soup`: each
    run alone, then each of the `n - 1` candidate soups; a uniform soup or a single run: none)."""
    return 2 * n_runs - 1 if mode == "greedy" and n_runs > 1 else 0


def _work(what: str, flops: float, *, heldout: int = 0, images: int = 0, where: str = "kernel",
          training_sample: bool = False) -> dict:
    return {"what": what, "flops_per_image": flops, "heldout_passes": heldout, "images": images, "where": where,
            "training_sample": training_sample}


def export_work(resolved: dict) -> list[dict] | None:
    """The forward passes 04 runs, per step of `guie_nb.export.model_source` and the notebook:
    `[{"what", "flops_per_image", "heldout_passes", "images", "where"}]`: a step runs
    `heldout_passes` x the held-out images (queries + index) + `images` forward passes, each of
    `flops_per_image` (`guie_nb.model.flops.flops_per_image(cfg, backward=False)`, x2 with flip
    TTA), on the kernel's machine (`where` "kernel") or on its CPU ("cpu": the scorer runtime's
    pinned framework, one thread; a TorchScript submission, loaded on the CPU for the held-out scoring).

    Steps: zero-shot: the held-out evaluation before and after the fit, the fit's sample; soup: its
    greedy evaluations (`soup_evaluations`), the refit's sample; concat: per part its greedy
    evaluations (a greedy soup's last score is the part's) or one evaluation, then the PCA sample
    and the held-out evaluation of the combined model; every source: the probe images (and the
    warm-up calls) in the scorer runtime with their Keras references, and the held-out scoring of
    the exported submission. None when a model's config is not known (a part's run folder missing).
    """
    from guie_nb.export.verify import PROBES

    ex, model = resolved["export"], resolved.get("model")
    if model is None:
        return None
    work = []
    if ex.get("zero_shot"):
        zs, flops = ex["zero_shot"], _forward_flops(model)
        work += [_work("held-out evaluation before and after the fit (Keras)", flops, heldout=2),
                 _work(f"{zs['reduction']} fit on training images", flops, images=zs["sample_images"],
                       training_sample=True)]
    elif ex.get("soup"):
        so, flops = ex["soup"], _forward_flops(model)
        n = soup_evaluations(len(so["model_dirs"]), so["mode"])
        work.append(_work(f"{so['mode']} soup of {len(so['model_dirs'])} runs: {n} held-out evaluations", flops,
                          heldout=n))
        if so.get("reduction"):
            work.append(_work(f"{so['reduction']} refit on training images", flops, images=so["sample_images"],
                              training_sample=True))
    elif ex.get("concat"):
        co = ex["concat"]
        for i, part in enumerate(co["parts"]):
            path = Path(part["model_dirs"][0]) / run_dir.MODEL_CONFIG
            if not path.is_file():
                return None
            part_model = json.loads(path.read_text())
            n = len(part["model_dirs"])
            evaluations = soup_evaluations(n, part["mode"]) or 1  # else scored once on its own
            work.append(_work(f"part {i} ({part_model['backbone']}): {evaluations} held-out evaluation(s)",
                              _forward_flops(part_model), heldout=evaluations))
        flops = _forward_flops(model)
        work.append(_work(f"{co['reduction']} fit of the concatenation on training images", flops,
                          images=co["sample_images"], training_sample=True))
    from guie_nb.model.embedding import ModelConfig

    exported = (2 if ex["flip_tta"] and not ModelConfig.from_dict(model).flip_tta else 1) * _forward_flops(model)
    probes = len(PROBES)
    work += [_work("probe images' Keras references", exported, images=probes),
             _work("probe images (and 6 warm-up calls) in the scorer runtime", exported, images=probes + 6,
                   where="cpu"),
             _work("held-out scoring of the submission, one image at a time", exported, heldout=1,
                   where="kernel" if ex["format"] == "saved_model" else "cpu")]
    return work


def export_hours(work: list[dict], machine: str, heldout_images: int, train_images: int | None = None) -> float:
    """Hours of `export_work` on `machine` ("cpu" or "gpu", `ASSUMED_EXPORT_FLOPS`) for
    `heldout_images` held-out images; a fit's sample is at most the `train_images` there are
    (`guie_nb.model.reduction.sample_features` takes the first ones). The scorer runtime's steps run
    on one of the CPU's 2 cores (`verify_submission(threads=1)`): half the CPU rate. Raises
    KeyError for an unknown machine."""
    rates = {"kernel": ASSUMED_EXPORT_FLOPS[machine], "cpu": ASSUMED_EXPORT_FLOPS["cpu"] / 2}

    def images(w: dict) -> int:
        sample = min(w["images"], train_images) if w.get("training_sample") and train_images is not None \
            else w["images"]
        return w["heldout_passes"] * heldout_images + sample

    return sum(w["flops_per_image"] * images(w) / rates[w["where"]] for w in work) / 3600


def export_machine() -> str:
    """"gpu" when TensorFlow (04's backend) sees a GPU, else "cpu"."""
    try:
        import tensorflow as tf
    except ImportError:
        return "cpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def preflight_export(resolved: dict, machine: str | None = None) -> dict:
    """Inputs (the model to export, the held-out data, the training metrics) and estimates (zip
    size, scoring hours from the FLOP count on the assumed scorer hardware, this kernel's hours:
    `export_work` x the held-out images / `ASSUMED_EXPORT_FLOPS` of `machine`, "cpu" or "gpu",
    default `export_machine()`, judged against that machine's session)."""
    from guie_nb.model.embedding import ModelConfig

    ex = resolved["export"]
    model_dir = Path(ex["run_dir"])
    if ex.get("zero_shot"):  # no run folder yet: the pretrained backbone is the input
        w = resolved.get("weights") or {}
        inputs = [] if w.get("source", "none") == "none" else [_input("backbone weights", w.get("path"), w.get("found"))]
    else:  # a run folder, or each of the soup's, or each of every concatenated part's
        dirs = ex["soup"]["model_dirs"] if ex.get("soup") else \
            [d for part in ex["concat"]["parts"] for d in part["model_dirs"]] if ex.get("concat") else [model_dir]
        inputs = [_input(f"model {n}", Path(d) / n) for d in dirs
                  for n in (run_dir.MODEL_CONFIG, run_dir.EMBEDDING_WEIGHTS)]
    limits, problems = [], []
    manifest = _manifest_inputs(resolved["data"]["data_dir"], inputs, problems)  # the held-out queries and index
    if ex.get("train_dir"):
        inputs.append(_input("training metrics", Path(ex["train_dir"]) / run_dir.METRICS))
    estimates = {"output_gb": None, "hours": None, "scoring_hours": None, "memory_gib_per_device_xla": None,
                 "memory_gib_per_device_plan": None}
    if "model" in resolved:
        cfg = ModelConfig.from_dict(resolved["model"])
        scoring = scoring_estimate(resolved["model"], ex["flip_tta"])
        estimates.update(scoring_hours=scoring["hours"], scoring=format_scoring(scoring))
        # a zero-shot model, a soup or a concatenation is also saved as a run folder beside the zip
        # (`guie_nb.export.model_source`): the same float32 weights twice
        writes_run = any(ex.get(k) for k in ("zero_shot", "soup", "concat"))
        estimates["output_gb"] = exported_weights_gb(cfg) * (2 if writes_run else 1)
        limits += [_limit("scoring_hours", SCORING_LIMIT_H, estimates["scoring_hours"]),
                   _limit("embedding_dim", MAX_EMBEDDING_DIM, cfg.embedding_dim)]
        work = export_work(resolved)
        val = (manifest or {}).get("val") or {}
        heldout = val.get("num_queries", 0) + val.get("num_index", 0) if manifest else None
        machine = machine or export_machine()
        if work is not None and heldout is not None:
            train = manifest["train_images"]
            estimates.update(hours=export_hours(work, machine, heldout, train), machine=machine, heldout_images=heldout,
                             train_images=train,
                             export_work=work,
                             hours_basis=f"{heldout} held-out images; {EXPORT_THROUGHPUT_SOURCE[machine]}")
        limits.append(_limit("session_hours", SESSION_HOURS[machine], estimates["hours"]))
    else:
        problems.append(f"no model config in {model_dir}: nothing to export")
    limits.append(_limit("output_gb", OUTPUT_LIMIT_GB, estimates["output_gb"]))
    return _finish("04_export", ex["out_dir"], inputs, estimates, limits, problems, resolved)


# ---- 05 submit -------------------------------------------------------------------------------

def preflight_submit(resolved: dict) -> dict:
    """Inputs (the export's verification report and its submission.zip), the zip checked against
    the report when both are there (`guie_nb.export.handoff.check_verified`), output size: the
    zip's own (this kernel hands it over; `output_basis` says so) and, when the export's resolved
    config names its model, `model_output_gb`, 04's estimate from the model (`exported_weights_gb`)."""
    from guie_nb.export.handoff import HandoffError, check_verified
    from guie_nb.kaggle.paths import SUBMISSION, VERIFICATION_REPORT

    sub = resolved["submit"]
    export_dir = Path(sub["export_dir"])
    inputs = [_input("the export's verification report", export_dir / VERIFICATION_REPORT),
              _input("the export's submission.zip", export_dir / SUBMISSION)]
    estimates = {"output_gb": None, "hours": None, "scoring_hours": None, "memory_gib_per_device_xla": None,
                 "memory_gib_per_device_plan": None}
    problems, limits = [], []
    exported = export_dir / RESOLVED_CONFIG  # the export's resolved config names the model it exported
    if exported.is_file():
        ex = json.loads(exported.read_text())
        if ex.get("model"):
            from guie_nb.model.embedding import ModelConfig

            scoring = scoring_estimate(ex["model"], bool(ex.get("export", {}).get("flip_tta")))
            estimates.update(scoring_hours=scoring["hours"], scoring=format_scoring(scoring),
                             model_output_gb=exported_weights_gb(ModelConfig.from_dict(ex["model"])))
            limits.append(_limit("scoring_hours", SCORING_LIMIT_H, scoring["hours"]))
    if all(i["found"] for i in inputs):
        try:
            check_verified(export_dir)
            estimates["output_gb"] = (export_dir / SUBMISSION).stat().st_size / GB
            estimates["output_basis"] = f"the size of {export_dir / SUBMISSION}, which this kernel hands over"
        except HandoffError as err:
            problems.append(str(err))
    limits.append(_limit("output_gb", OUTPUT_LIMIT_GB, estimates["output_gb"]))
    return _finish("05_submit", sub["out_dir"], inputs, estimates, limits, problems, resolved)


def preflight(resolved: dict, **kwargs) -> dict:
    """The dry run of `resolved["notebook"]`; returns (and writes) the report."""
    nb = resolved["notebook"]
    if nb == "01_data_prep":
        return preflight_data_prep(resolved)
    if nb in ("02_train_tpu", "03_finetune"):
        return preflight_training(resolved, xla_memory=kwargs.get("xla_memory",
                                                                   os.environ.get("GUIE_XLA_MEMORY") == "1"))
    if nb == "05_submit":
        return preflight_submit(resolved)
    return preflight_export(resolved)
