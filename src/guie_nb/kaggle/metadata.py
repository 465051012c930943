"""Kernel metadata: the templates in kernel-metadata/, the owner filled in, and validation.

Validation runs before any network call and reports every problem at once. It checks what the
`kaggle` client checks (and what it only warns about or silently accepts): slug and title rules,
id/title match, source handle formats, accelerator names and flags, and no `docker_image` pin on
TPU kernels (a pinned CPU/GPU image runs a TpuV5E8 kernel without its TPU).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

OWNER_PLACEHOLDER = "{owner}"
KNOWN_KEYS = {
    "id", "id_no", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
    "enable_tpu", "enable_internet", "dataset_sources", "competition_sources", "kernel_sources",
    "model_sources", "machine_shape", "docker_image", "docker_image_pinning_type", "keywords",
}
TPU_SHAPES = {"TpuV5E8"}
GPU_SHAPES = {"NvidiaTeslaT4", "NvidiaTeslaP100", "NvidiaL4", "NvidiaL4X1", "NvidiaH100"}
RETIRED_SHAPES = {"TpuV38": "TpuV5E8", "Tpu1VmV38": "TpuV5E8"}
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class MetadataError(ValueError):
    """Invalid kernel metadata; the message lists every problem found."""


def slugify_title(title: str) -> str:
    """The slug Kaggle derives from a title (the client compares it with the id's slug)."""
    from slugify import slugify  # python-slugify, a dependency of the kaggle client

    return slugify(title)


def fill_owner(meta: dict, owner: str) -> dict:
    """Replace `{owner}` in every string of the template."""
    if not owner or not _OWNER.match(owner):
        raise MetadataError(f"invalid Kaggle owner (username) {owner!r}")

    def fill(v):
        if isinstance(v, str):
            return v.replace(OWNER_PLACEHOLDER, owner)
        if isinstance(v, list):
            return [fill(x) for x in v]
        return v

    return {k: fill(v) for k, v in meta.items()}


def load_template(path: str | Path) -> dict:
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MetadataError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise MetadataError(f"{path}: expected a JSON object")
    return meta


def _handle_errors(field: str, values, parts: int, check_last=None) -> list[str]:
    errors = []
    if not isinstance(values, list):
        return [f"{field} must be a list, got {type(values).__name__}"]
    for v in values:
        bits = v.split("/") if isinstance(v, str) else []
        if len(bits) != parts or not all(bits):
            errors.append(f"{field}: {v!r} is not a handle of {parts} part(s) separated by '/'")
        elif OWNER_PLACEHOLDER in v:
            errors.append(f"{field}: {v!r} still has the {OWNER_PLACEHOLDER} placeholder")
        elif check_last and (msg := check_last(bits)):
            errors.append(f"{field}: {v!r}: {msg}")
    return errors


def _slug_errors(what: str, slug: str, minimum: int) -> list[str]:
    errors = []
    if not _SLUG.match(slug):
        errors.append(f"{what} {slug!r} must be lowercase letters, digits and single hyphens")
    if not minimum <= len(slug) <= 50:
        errors.append(f"{what} {slug!r} must be {minimum} to 50 characters long")
    return errors


def validate(meta: dict, folder: str | Path | None = None) -> None:
    """Raise MetadataError listing every problem; with `folder`, also check the code file there."""
    e: list[str] = []
    unknown = sorted(set(meta) - KNOWN_KEYS)
    if unknown:
        e.append(f"unknown key(s) {unknown}")
    kid = meta.get("id")
    slug = None
    if not isinstance(kid, str) or kid.count("/") != 1:
        e.append(f"id must be 'owner/slug', got {kid!r}")
    else:
        owner, slug = kid.split("/")
        if OWNER_PLACEHOLDER in owner:
            e.append("id still has the {owner} placeholder: stage with an owner")
        elif not _OWNER.match(owner):
            e.append(f"id owner {owner!r} is not a Kaggle username")
        e += _slug_errors("kernel slug", slug, 5)
    title = meta.get("title")
    if not isinstance(title, str) or not 5 <= len(title) <= 50:
        e.append(f"title must be 5 to 50 characters, got {title!r}")
    elif slug and slugify_title(title) != slug:
        e.append(f"title {title!r} resolves to slug {slugify_title(title)!r}, not the id's {slug!r}")
    if meta.get("language") != "python":
        e.append(f"language must be 'python', got {meta.get('language')!r}")
    kind = meta.get("kernel_type")
    if kind not in ("notebook", "script"):
        e.append(f"kernel_type must be 'notebook' or 'script', got {kind!r}")
    code = meta.get("code_file")
    if not isinstance(code, str) or not code:
        e.append("code_file is missing")
    elif kind == "notebook" and not code.endswith(".ipynb"):
        e.append(f"a notebook kernel needs an .ipynb code_file, got {code!r}")
    for key in ("is_private", "enable_gpu", "enable_tpu", "enable_internet"):
        if key in meta and not isinstance(meta[key], bool):
            e.append(f"{key} must be true or false, got {meta[key]!r}")
    e += _handle_errors("dataset_sources", meta.get("dataset_sources", []), 2)
    e += _handle_errors("kernel_sources", meta.get("kernel_sources", []), 2)
    e += _handle_errors("competition_sources", meta.get("competition_sources", []), 1)
    e += _handle_errors("model_sources", meta.get("model_sources", []), 5,
                        lambda b: None if b[4].isdigit() else "the last part must be a version number")
    if slug and kid in meta.get("kernel_sources", []):
        e.append("kernel_sources lists the kernel itself")
    e += _accelerator_errors(meta)
    pin = meta.get("docker_image_pinning_type")
    if pin is not None and pin not in ("original", "latest"):
        e.append(f"docker_image_pinning_type must be 'original' or 'latest', got {pin!r}")
    if folder is not None and isinstance(code, str) and code:
        e += _code_file_errors(Path(folder) / code, kind)
    if e:
        name = kid if isinstance(kid, str) else "kernel metadata"
        raise MetadataError(f"{name}: " + "; ".join(e))


def _accelerator_errors(meta: dict) -> list[str]:
    e = []
    shape = meta.get("machine_shape")
    gpu, tpu = meta.get("enable_gpu", False), meta.get("enable_tpu", False)
    if shape in RETIRED_SHAPES:
        e.append(f"machine_shape {shape!r} is retired; use {RETIRED_SHAPES[shape]!r}")
    elif shape is not None and shape not in TPU_SHAPES | GPU_SHAPES:
        e.append(f"unknown machine_shape {shape!r}; known: {sorted(TPU_SHAPES | GPU_SHAPES)} "
                 f"(leave it out for CPU)")
    if shape in TPU_SHAPES:
        if not tpu or gpu:
            e.append(f"machine_shape {shape} needs enable_tpu true and enable_gpu false")
        if meta.get("docker_image"):
            e.append("a TPU kernel must not pin docker_image (a CPU/GPU image runs without the TPU)")
    elif shape in GPU_SHAPES and (not gpu or tpu):
        e.append(f"machine_shape {shape} needs enable_gpu true and enable_tpu false")
    elif shape is None and (gpu or tpu):
        e.append("enable_gpu/enable_tpu set without a machine_shape")
    return e


def _code_file_errors(path: Path, kind) -> list[str]:
    if not path.is_file():
        return [f"code file {path} not found"]
    if kind != "notebook":
        return []
    try:
        nb = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return [f"{path} is not notebook JSON: {err}"]
    if not nb.get("metadata", {}).get("kernelspec"):
        return [f"{path} has no kernelspec (Kaggle runs it with papermill, which needs one)"]
    return []
