"""Kernel metadata: the templates in kernel-metadata/, the owner filled in, and validation.

Validation runs before any network call and reports every problem at once. It accepts what the
`kaggle` 2.2.x client's `kernels push` accepts (`KaggleApi.kernels_push`), and adds checks for
what the client only warns about or silently sends on: slug and title rules, id/title match,
source handle formats, accelerator flags against the machine shape, retired shapes, and no
`docker_image` pin on TPU kernels (a pinned CPU/GPU image runs a TpuV5E8 kernel without its TPU).
Boolean flags may be JSON booleans or the strings the client parses (its own `kernels init`
template writes `"false"`); read them with `flag`. Machine shapes this module does not know are
passed on by the client unchecked, so they are returned as warnings, not refused.
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
# the boolean keys and the value `kernels_push` uses when a key is absent (KaggleApi.get_bool calls)
FLAG_DEFAULTS = {"is_private": True, "enable_gpu": False, "enable_tpu": False, "enable_internet": True}
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class MetadataError(ValueError):
    """Invalid kernel metadata; the message lists every problem found."""


def flag(meta: dict, key: str) -> bool:
    """A boolean of kernel metadata as the kaggle client reads it for `kernels push`.

    `key` is one of `FLAG_DEFAULTS`. A JSON boolean is itself; a string is compared
    case-insensitively with "true"/"false" (`KaggleApi.get_bool`, kaggle 2.2.1); a missing key
    takes the client's default (`FLAG_DEFAULTS`). Anything else ("yes", 1, null) raises
    MetadataError, as the client raises ValueError for it.
    """
    if key not in FLAG_DEFAULTS:
        raise KeyError(f"{key!r} is not a boolean kernel-metadata key; those are {sorted(FLAG_DEFAULTS)}")
    value = meta.get(key, FLAG_DEFAULTS[key])
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise MetadataError(f"{key} must be true or false (a JSON boolean, or the string \"true\" or "
                        f"\"false\" as the kaggle client reads it), got {value!r}")


def accelerator(meta: dict) -> str:
    """What the kernel runs on, for messages: its machine_shape, else GPU/TPU (Kaggle's pick) or CPU."""
    if meta.get("machine_shape"):
        return str(meta["machine_shape"])
    if _flag_or_none(meta, "enable_tpu"):
        return "TPU (Kaggle's default shape)"
    return "GPU (Kaggle's default shape)" if _flag_or_none(meta, "enable_gpu") else "CPU"


def _flag_or_none(meta: dict, key: str) -> bool | None:
    try:
        return flag(meta, key)
    except MetadataError:
        return None


def on_machine(meta: dict, shape: str) -> dict:
    """`meta` staged on the machine `shape` (one of `GPU_SHAPES` or `TPU_SHAPES`): `machine_shape`
    set and the accelerator flags to match it (a GPU shape: `enable_gpu` true, `enable_tpu` false).
    Raises MetadataError for a retired shape or one this module does not know (a preset's machine
    is checked here, not sent on for Kaggle to decide)."""
    if shape in RETIRED_SHAPES:
        raise MetadataError(f"machine_shape {shape!r} is retired; use {RETIRED_SHAPES[shape]!r}")
    if shape not in GPU_SHAPES | TPU_SHAPES:
        raise MetadataError(f"machine_shape {shape!r} is not one of {sorted(GPU_SHAPES | TPU_SHAPES)}")
    gpu = shape in GPU_SHAPES
    return {**meta, "machine_shape": shape, "enable_gpu": gpu, "enable_tpu": not gpu}


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


def validate(meta: dict, folder: str | Path | None = None) -> list[str]:
    """Check kernel metadata; with `folder`, also the code file there.

    Returns the warnings (things the client sends on unchecked and Kaggle may or may not take,
    e.g. a machine_shape not in TPU_SHAPES/GPU_SHAPES), for the caller to print. Raises
    MetadataError listing every error at once.
    """
    e: list[str] = []
    warnings: list[str] = []
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
    for key in FLAG_DEFAULTS:
        try:
            flag(meta, key)
        except MetadataError as err:
            e.append(str(err))
    e += _handle_errors("dataset_sources", meta.get("dataset_sources", []), 2)
    e += _handle_errors("kernel_sources", meta.get("kernel_sources", []), 2)
    e += _handle_errors("competition_sources", meta.get("competition_sources", []), 1)
    e += _handle_errors("model_sources", meta.get("model_sources", []), 5,
                        lambda b: None if b[4].isdigit() else "the last part must be a version number")
    if slug and kid in meta.get("kernel_sources", []):
        e.append("kernel_sources lists the kernel itself")
    e += _accelerator_errors(meta, warnings)
    pin = meta.get("docker_image_pinning_type")
    if pin is not None and pin not in ("original", "latest"):
        e.append(f"docker_image_pinning_type must be 'original' or 'latest', got {pin!r}")
    if folder is not None and isinstance(code, str) and code:
        e += _code_file_errors(Path(folder) / code, kind)
    name = kid if isinstance(kid, str) else "kernel metadata"
    if e:
        raise MetadataError(f"{name}: " + "; ".join(e))
    return [f"{name}: {w}" for w in warnings]


def _shape_kind(shape: str) -> str | None:
    """"tpu" or "gpu" for a known shape or one named like Kaggle's (Tpu..., Nvidia...), else None."""
    if shape in TPU_SHAPES or shape.startswith("Tpu"):
        return "tpu"
    if shape in GPU_SHAPES or shape.startswith("Nvidia"):
        return "gpu"
    return None


def _accelerator_errors(meta: dict, warnings: list[str]) -> list[str]:
    """Errors for contradictory accelerator settings; unknown shape names go to `warnings`."""
    gpu, tpu = _flag_or_none(meta, "enable_gpu"), _flag_or_none(meta, "enable_tpu")
    if gpu is None or tpu is None:
        return []  # the flag itself is already reported
    shape = meta.get("machine_shape")
    if shape is not None and not isinstance(shape, str):
        return [f"machine_shape must be a string, got {shape!r}"]
    e = []
    kind = _shape_kind(shape) if shape else None
    if shape in RETIRED_SHAPES:
        e.append(f"machine_shape {shape!r} is retired; use {RETIRED_SHAPES[shape]!r}")
    elif shape and shape not in TPU_SHAPES | GPU_SHAPES:
        warnings.append(f"machine_shape {shape!r} is not one this validator knows "
                        f"({sorted(TPU_SHAPES | GPU_SHAPES)}); the kaggle client sends it on unchecked, "
                        f"so Kaggle decides" + ("" if kind else " (and its name is neither Tpu... nor Nvidia...)"))
    if kind == "tpu" and (not tpu or gpu):
        e.append(f"machine_shape {shape} needs enable_tpu true and enable_gpu false")
    elif kind == "gpu" and (not gpu or tpu):
        e.append(f"machine_shape {shape} needs enable_gpu true and enable_tpu false")
    elif gpu and tpu:
        e.append("enable_gpu and enable_tpu are both true: a kernel gets one accelerator")
    if not shape and tpu and not gpu:
        warnings.append(f"enable_tpu without a machine_shape: Kaggle picks the TPU; name it "
                        f"(e.g. {sorted(TPU_SHAPES)[0]!r}) to be sure of it")
    if (kind == "tpu" or (not shape and tpu)) and meta.get("docker_image"):
        e.append("a TPU kernel must not pin docker_image (a CPU/GPU image runs without the TPU)")
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
