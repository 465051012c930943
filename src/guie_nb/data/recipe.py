"""The seed recipe's data (write-up 000): ImageNet-1k 50 images/class, Products-10K 50/class,
GLDv2 (2021) the 7,000 classes with the most images, 50/class, in one label space with an offset
per source (ImageNet 0-999, Products-10K next, GLDv2 last).

`RECIPE` holds the per-kind defaults a `sources` entry starts from; any key set in the entry wins.
"""

from __future__ import annotations

RECIPE: dict[str, dict] = {
    "imagenet": {"images_per_class": 50},
    "imagenet_tfrecord": {"images_per_class": 50},
    "products10k": {"images_per_class": 50},
    "gldv2": {"images_per_class": 50, "max_classes": 7000},
    "gld2020": {"images_per_class": 50, "max_classes": 7000},
    "gldv2_full": {"images_per_class": 50, "max_classes": 7000},
    # kinds outside the seed recipe: the same 50 per class (no published per-dataset figure to follow)
    "shopee": {"images_per_class": 50},
    "met": {"images_per_class": 50},
    "aliproducts": {"images_per_class": 50},
    "hm": {"images_per_class": 50},
    "deepfashion_inshop": {"images_per_class": 50},
    "gpr1200": {"images_per_class": 10},  # 10 images per class
    "folder": {"images_per_class": 50},
    "csv": {"images_per_class": 50},
}


def recipe_sources(imagenet: str, products10k: str, gldv2: str, val_classes: int = 100,
                   imagenet_kind: str = "imagenet") -> list[dict]:
    """The recipe's three sources in label order, each holding out `val_classes` whole classes."""
    return [
        {"kind": imagenet_kind, "root": imagenet, "name": "imagenet", "val_classes": val_classes},
        {"kind": "products10k", "root": products10k, "val_classes": val_classes},
        {"kind": "gldv2", "root": gldv2, "val_classes": val_classes},
    ]
