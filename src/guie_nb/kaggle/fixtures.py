"""Tiny stand-ins for what a Kaggle kernel mounts, in the real layouts (for `make rehearse`).

Raw datasets (Products-10K, GLDv2, ImageNet's ILSVRC), a KerasHub CLIP preset as a Kaggle Model
(its real `config.json`, and `model.weights.h5` with every tensor at its real shape but stored
unallocated: HDF5 writes no data for a dataset never written, so a ViT-H-14 preset takes ~1 MB on
disk and reads as zeros), an earlier kernel's outputs, and the helper package. Nothing here is
downloaded; every file is generated, seeded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from guie_nb import run_dir
from guie_nb.model.backbones import VitConfig, vit_config


# Published training-set sizes (images, classes), GUIE_FACTS section 6: a "published" fixture lists
# this many images (hard links to a few generated files), so a dry run plans and estimates at the
# real scale while the fixture takes a few MB.
PUBLISHED = {
    "imagenet-object-localization-challenge": (1_281_167, 1_000),
    "landmark-recognition-2021": (1_580_470, 81_313),
    "products-10k": (141_931, 9_691),
}
# long-tail exponent of the class sizes (n_k ~ k^-a), an assumption: only the totals are published.
# ImageNet is balanced; GLDv2 and Products-10K have long tails
TAIL = {"imagenet-object-localization-challenge": 0.0, "landmark-recognition-2021": 0.5, "products-10k": 0.3}


@dataclass(frozen=True)
class RawSpec:
    classes: int = 220  # enough for the presets' 200 validation classes
    per_class: int = 3
    side: int = 96  # image side in px
    unique_images: int = 48  # files beyond these are hard links to them (big listings stay cheap)
    total_images: int | None = None  # set: `classes` sizes follow a power law (`tail`) summing to this
    tail: float = 0.0

    @classmethod
    def published(cls, slug: str, side: int = 480) -> "RawSpec":
        images, classes = PUBLISHED[slug]
        return cls(classes=classes, side=side, total_images=images, tail=TAIL[slug])

    def class_sizes(self) -> list[int]:
        if self.total_images is None:
            return [self.per_class] * self.classes
        w = np.arange(1, self.classes + 1, dtype=np.float64) ** -self.tail
        sizes = np.maximum(2, np.floor(w / w.sum() * self.total_images)).astype(int)
        sizes[0] += self.total_images - sizes.sum()  # the biggest class takes the rounding
        return sizes.tolist()


def _jpegs(n: int, side: int, seed: int) -> list[bytes]:
    """Photo-like synthetic images: smooth colour fields (upsampled noise) with fine grain."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
        img = np.clip(np.asarray(coarse, np.int16) + rng.integers(-12, 13, (side, side, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _write_images(paths: list[Path], spec: RawSpec, seed: int) -> None:
    originals: list[Path] = []
    blobs = _jpegs(min(spec.unique_images, len(paths)), spec.side, seed)
    made: set[Path] = set()
    for i, path in enumerate(paths):
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        if i < len(blobs):
            path.write_bytes(blobs[i])
            originals.append(path)
        else:
            os.link(originals[i % len(originals)], path)


def products10k(root: Path, spec: RawSpec = RawSpec(), seed: int = 0) -> Path:
    """`train.csv` (`name,class,group`) + `train/<name>`."""
    rows = [(f"{c}_{k}.jpg", str(c), "0") for c, n in enumerate(spec.class_sizes()) for k in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("name", "class", "group"), *rows])
    _write_images([root / "train" / r[0] for r in rows], spec, seed)
    return root


def gldv2(root: Path, spec: RawSpec = RawSpec(), seed: int = 1) -> Path:
    """`train.csv` (`id,url,landmark_id`) + `train/<a>/<b>/<c>/<id>.jpg`."""
    sizes = spec.class_sizes()
    rows, i = [], 0
    for c, n in enumerate(sizes):
        for _ in range(n):
            rows.append((f"{i * 0x9E3779B97F4A7C15 % 2**64:016x}", f"{c}"))  # distinct (odd multiplier), spread
            i += 1
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "url", "landmark_id"), *[(i, "", lm) for i, lm in rows]])
    _write_images([root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg" for i, _ in rows], spec, seed)
    return root


def imagenet(root: Path, spec: RawSpec = RawSpec(), seed: int = 2) -> Path:
    """Kaggle's ILSVRC layout: `LOC_synset_mapping.txt` + `ILSVRC/Data/CLS-LOC/train/<synset>/<synset>_<n>.JPEG`."""
    synsets = [f"n{10000000 + c:08d}" for c in range(spec.classes)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} class {i}\n" for i, s in enumerate(synsets)))
    train = root / "ILSVRC" / "Data" / "CLS-LOC" / "train"
    _write_images([train / s / f"{s}_{k}.JPEG" for s, n in zip(synsets, spec.class_sizes()) for k in range(n)],
                  spec, seed)
    return root


RAW_FIXTURES = {"imagenet-object-localization-challenge": imagenet, "landmark-recognition-2021": gldv2,
                "products-10k": products10k}

# open_clip text towers of the CLIP models KerasHub publishes (model_configs/*.json)
TEXT_TOWERS = {"B": (512, 12, 8), "L": (768, 12, 12), "H": (1024, 24, 16), "g": (1024, 24, 16)}


_OPENAI_SIZES = {"base": "B", "large": "L"}


def backbone_for_preset(preset_name: str) -> str:
    """`clip_vit_h_14_laion2b_s32b_b79k` -> `ViT-H-14`; KerasHub's OpenAI presets (QuickGELU):
    `clip_vit_large_patch14_336` -> `ViT-L-14-336-quickgelu` (KerasHub's CLIP preset names)."""
    m = re.fullmatch(r"clip_vit_(base|large)_patch(\d+)(?:_(\d+))?", preset_name)
    if m:
        return f"ViT-{_OPENAI_SIZES[m.group(1)]}-{m.group(2)}" + (f"-{m.group(3)}" if m.group(3) else "") + "-quickgelu"
    m = re.match(r"clip_vit_([a-z])_(\d+)(?:_(\d+))?", preset_name)
    if not m:
        raise ValueError(f"cannot tell the backbone of Kaggle Model variation {preset_name!r}")
    size = m.group(1).upper() if m.group(1) != "g" else "g"
    name = f"ViT-{size}-{m.group(2)}" + (f"-{m.group(3)}" if m.group(3) else "")
    return name + ("-quickgelu" if "openai" in preset_name else "")


def _tiny_clip_preset(folder: Path, vision_layers: int, text_layers: int) -> None:
    """A KerasHub CLIP preset whose every dimension is a distinct marker value (see `DIMS`)."""
    import keras_hub

    vision = keras_hub.models.CLIPVisionEncoder(patch_size=7, hidden_dim=20, num_layers=vision_layers, num_heads=2,
                                                intermediate_dim=44, image_shape=(14, 14, 3))
    text = keras_hub.models.CLIPTextEncoder(vocabulary_size=50, embedding_dim=24, hidden_dim=24,
                                            num_layers=text_layers, num_heads=4, intermediate_dim=52,
                                            max_sequence_length=11)
    keras_hub.models.CLIPBackbone(vision, text, projection_dim=26).save_to_preset(str(folder))


def keras_hub_clip_model(folder: Path, cfg: VitConfig) -> Path:
    """A KerasHub CLIP preset folder with `cfg`'s real config and unallocated real-shape weights."""
    import h5py

    text_w, text_layers, text_heads = TEXT_TOWERS.get(_size_letter(cfg), (cfg.output_dim or cfg.width, 12, 8))
    proj = cfg.output_dim or cfg.width
    # marker dim in the tiny preset -> real dim (the markers appear nowhere else in its shapes)
    dims = {7: cfg.patch_size, 20: cfg.width, 2: cfg.heads, 10: cfg.width // cfg.heads, 44: cfg.mlp_width,
            5: cfg.grid_size**2 + 1, 24: text_w, 4: text_heads, 6: text_w // text_heads, 52: 4 * text_w,
            50: 49408, 11: 77, 26: proj}
    scratch = folder.parent / f".{folder.name}.tiny"
    shutil.rmtree(scratch, ignore_errors=True)
    _tiny_clip_preset(scratch, cfg.layers, text_layers)
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((scratch / "config.json").read_text())
    v = config["config"]["vision_encoder"]["config"]
    v.update(patch_size=cfg.patch_size, hidden_dim=cfg.width, num_layers=cfg.layers, num_heads=cfg.heads,
             intermediate_dim=cfg.mlp_width, image_shape=[cfg.image_size, cfg.image_size, 3],
             intermediate_activation="quick_gelu" if cfg.quick_gelu else "gelu")
    t = config["config"]["text_encoder"]["config"]
    t.update(vocabulary_size=49408, embedding_dim=text_w, hidden_dim=text_w, num_layers=text_layers,
             num_heads=text_heads, intermediate_dim=4 * text_w, max_sequence_length=77,
             intermediate_activation="quick_gelu" if cfg.quick_gelu else "gelu")
    config["config"]["projection_dim"] = proj
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    shutil.copy(scratch / "metadata.json", folder / "metadata.json")
    with h5py.File(scratch / "model.weights.h5", "r") as src, h5py.File(folder / "model.weights.h5", "w") as dst:
        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                dst.create_dataset(name, shape=tuple(dims.get(d, d) for d in obj.shape), dtype=obj.dtype)
            else:
                dst.require_group(name)
        src.visititems(copy)
    shutil.rmtree(scratch)
    return folder


def _size_letter(cfg: VitConfig) -> str:
    return {768: "B", 1024: "L", 1280: "H", 1408: "g"}.get(cfg.width, "?")


def kaggle_model(folder: Path, handle: str) -> Path:
    """The Kaggle Model `owner/model/framework/variation/version` as mounted (a KerasHub CLIP preset)."""
    variation = handle.strip("/").split("/")[3]
    return keras_hub_clip_model(folder, vit_config(backbone_for_preset(variation)))


def data_prep_output(folder: Path, seed: int = 0, part: tuple[int, int] | None = None) -> Path:
    """A real (tiny) data-prep output: shards, validation split, manifest; with `part` = (i, n),
    part i of a data-prep split over n kernels (the same raw data for every part)."""
    from guie_nb.data.demo import DemoSpec, write_demo_sources
    from guie_nb.data.prepare import prepare

    raw = write_demo_sources(folder.parent / ".data-prep-raw",  # idempotent: written once for all parts
                             DemoSpec(products_classes=8, landmark_classes=8, views_per_class=3, min_side=48, max_side=64))
    index, count = part or (0, 1)
    prepare([{"kind": k, "root": str(p), "val_classes": 2, "queries_per_class": 1} for k, p in raw.items()],
            folder / "data", max_side=64, images_per_shard=8, seed=seed, processes=1, progress=False,
            num_shards=count, shard_index=index)
    return folder


def _empty_h5(path: Path) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["fixture"] = "guie_nb rehearsal: stands in for the training notebook's weights"


def training_output(folder: Path, sub: str, model_config: dict) -> Path:
    """The files a training / fine-tune kernel leaves in `<folder>/<sub>/` (weights stand-ins)."""
    out = folder / sub
    out.mkdir(parents=True, exist_ok=True)
    (out / run_dir.MODEL_CONFIG).write_text(json.dumps(model_config, indent=2))
    for name in (run_dir.TRAINING_WEIGHTS, run_dir.EMBEDDING_WEIGHTS):
        _empty_h5(out / name)
    (out / run_dir.METRICS).write_text(json.dumps({"initial": {"map5": 0.0}, "final": {"map5": 0.0}}))
    return folder


def export_output(folder: Path, run_id: str | None = None, resolved: dict | None = None) -> Path:
    """What the export kernel leaves: a verified submission.zip (a stand-in SavedModel, a few bytes)
    and its `verification.json`, as the submit kernel mounts them; with `resolved` (the export
    kernel's resolved config), its `resolved_config.json` too, as the export writes it."""
    import zipfile

    from guie_nb.export.handoff import write_verification
    from guie_nb.params import write_resolved

    folder.mkdir(parents=True, exist_ok=True)
    if resolved:
        write_resolved(resolved, folder)
    zip_path = folder / "submission.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("saved_model.pb", b"fixture saved model")
        zf.writestr("variables/variables.index", b"fixture index")
    write_verification(zip_path, passed=True, fmt="saved_model", verified_in="fixture (rehearsal)",
                       verified_images=0, run_id=run_id)
    return folder
