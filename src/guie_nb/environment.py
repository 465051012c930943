"""The packages a notebook finds, checked against the ranges guie_nb supports.

Kaggle's images carry their own keras / jax / tensorflow / keras-hub, installed unpinned and moving
with each image release, not the versions in requirements.txt. Each notebook's first cell calls
`check_environment()`: it prints what it found and stops with one clear error listing every
package outside its range, before anything runs on a stack the code was never meant for.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

# package -> supported range. Lower bounds: the APIs guie_nb uses (Keras 3 distribution and
# stateless_call, jax.tree, keras-hub's CLIP presets, optax.tree_map_params and multi_transform,
# Orbax's CheckpointManager with args.Composite and step name formats); upper bounds: the newest
# major/minor line tested here (requirements.txt pins keras 3.15.1, jax 0.10.2, tensorflow 2.21.0,
# keras-hub 0.32.0, optax 0.2.8, orbax-checkpoint 0.12.8). Kaggle's TPU image brings optax and orbax.
SUPPORTED: dict[str, str] = {
    "keras": ">=3.8,<4",
    "jax": ">=0.4.35,<0.11",
    "tensorflow": ">=2.16,<2.22",
    "keras-hub": ">=0.20,<0.33",
    "optax": ">=0.2.3,<0.3",
    "orbax-checkpoint": ">=0.11,<0.13",
}
TENSORFLOW_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu")  # Kaggle's TPU image: tensorflow-cpu


class UnsupportedEnvironment(RuntimeError):
    """A package is missing or outside the supported range."""


class HelperMismatch(RuntimeError):
    """The imported guie_nb is not the helper package this notebook was staged with."""


def installed_version(package: str) -> str | None:
    names = TENSORFLOW_DISTS if package == "tensorflow" else (package,)
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_environment(required: tuple[str, ...] = ("keras", "tensorflow"), supported: dict[str, str] | None = None,
                      versions: dict[str, str | None] | None = None, log=print) -> dict[str, str | None]:
    """Print the versions found; raise UnsupportedEnvironment naming every problem.

    `required`: packages this notebook cannot run without; the others are checked when present.
    `versions` overrides what is installed (tests)."""
    supported = supported or SUPPORTED
    found = {p: (versions[p] if versions and p in versions else installed_version(p)) for p in supported}
    log("packages: " + ", ".join(f"{p} {v or '-'}" for p, v in found.items()))
    problems = []
    for package, spec in supported.items():
        version = found[package]
        if version is None:
            if package in required:
                problems.append(f"{package} is not installed (supported: {spec})")
        elif Version(version) not in SpecifierSet(spec):
            problems.append(f"{package} {version} is outside the supported range {spec}")
    if problems:
        raise UnsupportedEnvironment("; ".join(problems) + ". Pin the image (Kaggle: the kernel's environment "
                                     "setting) or install a supported version with pip before importing guie_nb.")
    return found


# -- the staged run -------------------------------------------------------------------------
# Staging bakes `STAGED = {"run_id": ..., "helpers_sha256": ..., "notebook": ...}` into each
# notebook's bootstrap cell (`guie_nb.kaggle.stage`); a local run leaves it empty.


def package_files(package_dir: Path) -> list[Path]:
    return [f for f in Path(package_dir).rglob("*") if f.is_file() and "__pycache__" not in f.parts
            and f.suffix not in (".pyc", ".pyo")]


def package_digest(package_dir: str | Path) -> str:
    """sha256 over the package's files (relative path, NUL, bytes; sorted by path), caches excluded."""
    package_dir = Path(package_dir)
    h = hashlib.sha256()
    for f in sorted(package_files(package_dir)):
        h.update(str(f.relative_to(package_dir)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def check_helpers(staged: dict, package_dir: str | Path | None = None) -> str | None:
    """Raise HelperMismatch unless the imported guie_nb is the helper package staged with this
    notebook: its dataset's `guie_nb_version.json` and its files' digest must both equal
    `staged["helpers_sha256"]`. Returns the digest; None (no check) for a local run."""
    from guie_nb.kaggle.paths import HELPERS_VERSION_FILE

    expected = (staged or {}).get("helpers_sha256")
    if not expected:
        return None
    if package_dir is None:
        import guie_nb

        package_dir = Path(guie_nb.__file__).parent
    package_dir = Path(package_dir)
    version_file = package_dir.parent / HELPERS_VERSION_FILE
    hint = ("Push the helper dataset again (`make push` does it first) and wait until Kaggle has processed "
            "the new version, then run this kernel again.")
    if not version_file.is_file():
        raise HelperMismatch(f"guie_nb was imported from {package_dir}, which has no {HELPERS_VERSION_FILE} beside it: "
                             f"not the attached helper dataset (is it attached?). {hint}")
    try:
        attached = json.loads(version_file.read_text()).get("sha256")
    except (json.JSONDecodeError, AttributeError):
        attached = None
    if attached != expected:
        raise HelperMismatch(f"the attached helper dataset is guie_nb {str(attached)[:12]}..., but this notebook was "
                             f"staged with {expected[:12]}...: an older (or newer) dataset version. {hint}")
    actual = package_digest(package_dir)
    if actual != expected:
        raise HelperMismatch(f"the files of the attached guie_nb ({package_dir}) hash to {actual[:12]}..., not the staged "
                             f"{expected[:12]}...: the dataset upload was incomplete or altered. {hint}")
    return actual


def start_run(staged: dict, log=print) -> dict | None:
    """The bootstrap cell's check of a staged kernel: the helper package is the staged one
    (`check_helpers`), then `guie_run.json` (the run id) is written at the top of the kernel's
    output, so the client can tell this run's output from an earlier version's. No-op locally."""
    from guie_nb.kaggle.paths import RUN_MARKER, KaggleRoots

    if not staged:
        return None
    digest = check_helpers(staged)
    marker = {"run_id": staged.get("run_id"), "notebook": staged.get("notebook"), "helpers_sha256": digest,
              "started_unix": round(time.time())}
    working = Path(KaggleRoots.from_env().working)
    working.mkdir(parents=True, exist_ok=True)
    tmp = working / f".{RUN_MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, working / RUN_MARKER)
    log(f"run {marker['run_id']} ({marker['notebook']}); helper package {str(digest)[:12]}... checked")
    return marker
