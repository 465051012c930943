"""ImageNet-1k in its two hosted layouts.

- Kaggle's ILSVRC layout: `ILSVRC/Data/CLS-LOC/train/<synset>/*.JPEG` next to
  `LOC_synset_mapping.txt` (`<synset> <names>` per line, in label order). Labels are synsets.
- TF Model Garden TFRecords (the host baseline's input): files `train-*` / `validation-*` of
  Examples with `image/encoded` and `image/class/label` (1..1000, 0 is background), and
  `image/filename` when present. Images stay in the TFRecords: each SourceImage points at its
  record by byte offset, so nothing is unpacked to disk.
"""

from __future__ import annotations

from pathlib import Path

from guie_nb.data.tfrecord_format import RecordError, decode_example, iter_records
from guie_nb.data.source_images import Listing, SourceError, SourceImage, require_dir

ILSVRC_TRAIN = Path("ILSVRC/Data/CLS-LOC")


def read_synset_mapping(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SourceError(f"imagenet: synset mapping not found: {path}")
    mapping = {}
    for line in path.read_text().splitlines():
        if line.strip():
            synset, _, names = line.strip().partition(" ")
            mapping[synset] = names
    if not mapping:
        raise SourceError(f"imagenet: {path} lists no synsets")
    return mapping


def read_imagenet(root: str | Path, source: str = "imagenet", split: str = "train",
                  mapping_name: str = "LOC_synset_mapping.txt") -> Listing:
    root = require_dir(Path(root), "imagenet root")
    mapping = read_synset_mapping(root / mapping_name)
    data = require_dir(root / ILSVRC_TRAIN / split, "imagenet images (ILSVRC/Data/CLS-LOC/<split>)")
    listing = Listing([])
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if folder.name not in mapping:
            listing.skipped += [{"path": str(f), "reason": "synset not in LOC_synset_mapping.txt"} for f in files]
            continue
        listing.images += [SourceImage(f, folder.name, f.stem, source) for f in files]
    if not listing.images:
        raise SourceError(f"imagenet: no synset folders with images under {data}")
    return listing


def read_imagenet_tfrecord_file(path: Path, source: str) -> Listing:
    """Every record of one shard; a corrupt record or a truncated tail is skipped with its reason."""
    listing = Listing([])
    try:
        for i, (offset, data) in enumerate(iter_records(path)):
            try:
                ex = decode_example(data)
                label = ex["image/class/label"][0]
                if not ex.get("image/encoded"):
                    raise KeyError("image/encoded")
            except (KeyError, IndexError, ValueError) as e:
                listing.skipped.append({"path": f"{path}@{offset}", "reason": f"malformed Example ({e})"})
                continue
            filename = (ex.get("image/filename") or [b""])[0].decode(errors="replace")
            image_id = Path(filename).stem if filename else f"{path.name}:{i}"
            listing.images.append(SourceImage(path, str(label), image_id, source, offset))
    except RecordError as e:
        listing.skipped.append({"path": str(path), "reason": f"unreadable rest of TFRecord file ({e})"})
    return listing


def imagenet_tfrecord_files(root: str | Path, pattern: str = "train-*") -> list[Path]:
    root = require_dir(Path(root), "imagenet_tfrecord root")
    files = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SourceError(f"imagenet_tfrecord: no files matching {pattern!r} in {root}")
    return files


def read_imagenet_tfrecord(root: str | Path, source: str = "imagenet_tfrecord", pattern: str = "train-*",
                           map_fn=map) -> Listing:
    """`map_fn` lets data-prep read the shards in parallel (a process pool's `imap`)."""
    files = imagenet_tfrecord_files(root, pattern)
    listing = Listing([])
    for part in map_fn(_read_one, [(f, source) for f in files]):
        listing.images += part.images
        listing.skipped += part.skipped
    return listing


def _read_one(args: tuple[Path, str]) -> Listing:
    return read_imagenet_tfrecord_file(*args)
