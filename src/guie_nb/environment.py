"""The packages a notebook finds, checked against the ranges guie_nb supports.

Kaggle's images carry their own keras / jax / tensorflow / keras-hub, installed unpinned and moving
with each image release, not the versions in requirements.txt. Each notebook's first cell calls
`check_environment()`: it prints what it found and stops with one clear error listing every
package outside its range, before anything runs on a stack the code was never meant for.
"""

from __future__ import annotations

from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

# package -> supported range. Lower bounds: the APIs guie_nb uses (Keras 3 distribution and
# stateless_call, jax.tree, keras-hub's CLIP presets); upper bounds: the newest major/minor line
# tested here (requirements.txt pins keras 3.15.1, jax 0.10.2, tensorflow 2.21.0, keras-hub 0.32.0).
SUPPORTED: dict[str, str] = {
    "keras": ">=3.8,<4",
    "jax": ">=0.4.35,<0.11",
    "tensorflow": ">=2.16,<2.22",
    "keras-hub": ">=0.20,<0.33",
}
TENSORFLOW_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu")  # Kaggle's TPU image: tensorflow-cpu


class UnsupportedEnvironment(RuntimeError):
    """A package is missing or outside the supported range."""


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
