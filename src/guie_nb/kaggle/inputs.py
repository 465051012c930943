"""Kaggle inputs named by what is attached: `kaggle://competitions/<slug>[/sub/path]`,
`kaggle://datasets/<owner>/<slug>[/sub/path]`, and backbone weights `kaggle:<owner>/<model>/<framework>/<variation>/<version>`.

A preset names its raw data this way; `place_inputs` turns each name into the folder where Kaggle
mounts it (`<input>/<slug>`; a Kaggle Model at `<input>/<model>/<framework>/<variation>/<version>`)
and lists what the kernel must attach (`competition_sources`, `dataset_sources`, `model_sources`).
No Kaggle client is imported here: model/, presets/ and the notebooks use this module offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

URI_PREFIX = "kaggle://"
WEIGHTS_PREFIX = "kaggle:"  # backbone_weights spec of an attached Kaggle Model (guie_nb.model.weights)
OWNER_PLACEHOLDER = "{owner}"


def competition_uri(slug: str, sub: str = "") -> str:
    return f"{URI_PREFIX}competitions/{slug}" + (f"/{sub.strip('/')}" if sub else "")


def dataset_uri(handle: str, sub: str = "") -> str:
    return f"{URI_PREFIX}datasets/{handle}" + (f"/{sub.strip('/')}" if sub else "")


@dataclass
class Attachments:
    """What one kernel must attach, by kernel-metadata field."""

    competition_sources: set[str] = field(default_factory=set)
    dataset_sources: set[str] = field(default_factory=set)
    model_sources: set[str] = field(default_factory=set)

    def as_metadata(self) -> dict[str, list[str]]:
        return {k: sorted(v) for k, v in vars(self).items() if v}


def model_mount(handle: str, input_root: str) -> str:
    """Where Kaggle mounts the attached model `owner/model/framework/variation/version`."""
    parts = handle.strip("/").split("/")
    if len(parts) != 5:
        raise ValueError(f"Kaggle Model handle {handle!r} must be owner/model/framework/variation/version")
    return str(Path(input_root, *parts[1:]))


def _place_uri(uri: str, input_root: str, owner: str | None, att: Attachments) -> str:
    rest = uri[len(URI_PREFIX):]
    if owner:
        rest = rest.replace(OWNER_PLACEHOLDER, owner)
    kind, _, tail = rest.partition("/")
    bits = [b for b in tail.split("/") if b]
    if kind == "competitions" and bits:
        att.competition_sources.add(bits[0])
        slug, sub = bits[0], bits[1:]
    elif kind == "datasets" and len(bits) >= 2:
        att.dataset_sources.add(f"{bits[0]}/{bits[1]}")
        slug, sub = bits[1], bits[2:]
    else:
        raise ValueError(f"{uri!r} is not kaggle://competitions/<slug>[/path] or "
                         "kaggle://datasets/<owner>/<slug>[/path]")
    return str(Path(input_root, slug, *sub))


def place_inputs(value, input_root: str, owner: str | None = None, att: Attachments | None = None):
    """`value` (nested dicts/lists of parameters) with every `kaggle://` name replaced by its mount
    under `input_root`; returns `(placed, attachments)`. `kaggle:` weight specs stay as they are
    (the weights loader finds the mount at run time) but are listed as model sources."""
    att = att if att is not None else Attachments()

    def walk(v):
        if isinstance(v, str):
            if v.startswith(URI_PREFIX):
                return _place_uri(v, input_root, owner, att)
            if v.startswith(WEIGHTS_PREFIX):
                att.model_sources.add(v[len(WEIGHTS_PREFIX):].strip("/"))
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(walk(x) for x in v)
        return v

    return walk(value), att
