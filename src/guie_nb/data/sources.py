"""The `sources` parameter: one entry per dataset, its reader, and its sampling options."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Callable

from guie_nb.data.readers.aliproducts import read_aliproducts
from guie_nb.data.readers.deepfashion import read_deepfashion_inshop
from guie_nb.data.readers.folder_csv import read_csv, read_folder
from guie_nb.data.readers.gpr1200 import read_gpr1200
from guie_nb.data.readers.hm import read_hm
from guie_nb.data.readers.imagenet import read_imagenet, read_imagenet_tfrecord
from guie_nb.data.readers.landmarks import read_gld2020, read_gldv2, read_gldv2_full
from guie_nb.data.readers.met import read_met
from guie_nb.data.readers.products10k import read_products10k
from guie_nb.data.readers.shopee import read_shopee
from guie_nb.data.recipe import RECIPE
from guie_nb.data.source_images import Listing, SourceError

# kind -> reader. Each reader's module documents its layout (and the Kaggle handle, where there is
# one). Anything else: `folder` (one folder per class) or `csv` (`path,label`).
READERS: dict[str, Callable[..., Listing]] = {
    "products10k": read_products10k,
    "gldv2": read_gldv2,
    "gld2020": read_gld2020,
    "gldv2_full": read_gldv2_full,
    "imagenet": read_imagenet,
    "imagenet_tfrecord": read_imagenet_tfrecord,
    "shopee": read_shopee,
    "met": read_met,
    "aliproducts": read_aliproducts,
    "hm": read_hm,
    "deepfashion_inshop": read_deepfashion_inshop,
    "gpr1200": read_gpr1200,
    "folder": read_folder,
    "csv": read_csv,
}


@dataclass
class SourceSpec:
    """One entry of the notebook's `sources` parameter."""

    kind: str
    root: str
    name: str = ""  # defaults to `kind`; must be unique
    images_per_class: int = 50
    max_classes: int | None = None  # keep the classes with the most images
    min_images_per_class: int = 2
    val_classes: int = 0  # whole classes held out for validation
    queries_per_class: int = 1
    # validation only: every kept class (max_classes caps them) is a validation class; no label, no
    # training image. `prepare(val_sources=...)` sets it; any kind may be marked.
    val_only: bool = False
    options: dict = field(default_factory=dict)  # passed to the reader (csv_name, image_dir, ...)

    def __post_init__(self):
        if self.kind not in READERS:
            raise SourceError(f"unknown source kind {self.kind!r}; known: {sorted(READERS)}")
        self.root = str(self.root)
        self.name = self.name or self.kind
        if self.images_per_class < 1 or self.min_images_per_class < 1:
            raise SourceError(f"{self.name}: images_per_class and min_images_per_class must be >= 1")
        if self.queries_per_class < 1 or self.val_classes < 0:
            raise SourceError(f"{self.name}: queries_per_class must be >= 1 and val_classes >= 0")
        if self.max_classes is not None and self.max_classes < 1:
            raise SourceError(f"{self.name}: max_classes must be >= 1 or None")
        if self.val_only and self.val_classes:
            raise SourceError(f"{self.name}: val_classes has no meaning for a validation-only source (all its "
                              f"classes are validation classes; cap them with max_classes)")

    @classmethod
    def from_dict(cls, d: dict) -> "SourceSpec":
        """An entry of `sources`; keys it leaves out take the recipe's default for its kind."""
        if not isinstance(d, dict):
            raise SourceError(f"source entry {d!r}: expected a dict with 'kind' and 'root'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SourceError(f"source entry {d!r}: unknown key(s) {unknown}; known: {sorted(known)}")
        if "kind" not in d or "root" not in d:
            raise SourceError(f"source entry {d!r}: needs 'kind' and 'root'")
        return cls(**{**RECIPE.get(d["kind"], {}), **d})

    def read(self, map_fn=map) -> Listing:
        reader = READERS[self.kind]
        allowed = set(inspect.signature(reader).parameters) - {"root", "source", "map_fn"}
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise SourceError(f"{self.name}: unknown option(s) {unknown} for kind {self.kind!r}; "
                              f"known: {sorted(allowed)}")
        options = dict(self.options)
        if self.kind == "imagenet_tfrecord":
            options["map_fn"] = map_fn
        return reader(self.root, source=self.name, **options)
