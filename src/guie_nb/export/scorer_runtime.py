"""The scorer's runtimes, recreated locally: Python 3.9 virtual environments with the pinned
TensorFlow 2.6.4 and PyTorch 1.11.0 the competition loads submissions with.

Each runtime is created once under `$GUIE_SCORER_RUNTIMES` (default
`~/.cache/guie-nb/scorer-runtimes`) and reused while its requirements file is unchanged.
Creation builds in a temporary folder and renames it into place, so an interrupted install
never leaves a half-made runtime behind.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from guie_nb.export.submission import SAVED_MODEL, TORCHSCRIPT

RUNTIMES_ENV = "GUIE_SCORER_RUNTIMES"
PYTHON_ENV = "GUIE_PYTHON39"  # an explicit Python 3.9 interpreter, tried first
PYTHON_VERSION = (3, 9)
# Opt in to installing a Python 3.9 through uv when none is found. On by default inside a Kaggle
# kernel (its image has no 3.9; the export kernel has internet for it), never silently elsewhere.
INSTALL_ENV = "GUIE_INSTALL_PYTHON39"
UV_VERSION = "0.13.9"
# submission format -> requirements file shipped in guie_nb/runtimes/
REQUIREMENTS = {SAVED_MODEL: "tensorflow-2.6.4.txt", TORCHSCRIPT: "torch-1.11.0.txt"}
_MARKER = "guie-runtime.json"


@dataclass(frozen=True)
class Runtime:
    """A ready scorer runtime: its interpreter and what it was made from."""

    fmt: str
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def run(self, args: list[str], timeout: float | None = None, extra_env: dict[str, str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        """Run `python args...` inside the runtime, with an environment free of this process's
        Python settings (PYTHONPATH would leak today's packages into the old runtime), on the CPU
        (the pinned wheels' CUDA is not a GPU kernel's, and that kernel's own TensorFlow holds the
        GPU; the hours and benchmarks assume the CPU), plus `extra_env`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
                   CUDA_VISIBLE_DEVICES="")
        env.update(extra_env or {})
        return subprocess.run([str(self.python), *args], env=env, timeout=timeout, text=True,
                              capture_output=True, **kwargs)


def runtimes_dir() -> Path:
    return Path(os.environ.get(RUNTIMES_ENV) or Path.home() / ".cache" / "guie-nb" / "scorer-runtimes")


def requirements_text(fmt: str) -> str:
    if fmt not in REQUIREMENTS:
        raise ValueError(f"unknown submission format {fmt!r}; choose one of {sorted(REQUIREMENTS)}")
    return (resources.files("guie_nb") / "runtimes" / REQUIREMENTS[fmt]).read_text()


def _python_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    return (int(parts[0]), int(parts[1])) if out.returncode == 0 and len(parts) == 2 else None


def install_allowed(env=None) -> bool:
    env = os.environ if env is None else env
    flag = env.get(INSTALL_ENV, "").strip().lower()
    if flag in ("0", "false", "no"):
        return False
    return flag in ("1", "true", "yes") or "KAGGLE_KERNEL_RUN_TYPE" in env


def install_python39(log=print) -> Path:
    """Install a Python 3.9 with uv (installing the pinned uv into this interpreter if it is
    missing) and return it. Needs internet."""
    uv = shutil.which("uv")
    if not uv:
        log(f"installing uv=={UV_VERSION} to fetch a Python 3.9")
        _check(subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"],
                              capture_output=True, text=True), f"pip install uv=={UV_VERSION}")
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    log("uv python install 3.9")
    _check(subprocess.run([uv, "python", "install", "3.9"], capture_output=True, text=True),
           "uv python install 3.9")
    found = subprocess.run([uv, "python", "find", "3.9"], capture_output=True, text=True)
    _check(found, "uv python find 3.9")
    exe = found.stdout.strip()
    if _python_version(exe) != PYTHON_VERSION:
        raise FileNotFoundError(f"uv installed Python 3.9, but {exe!r} does not run as 3.9")
    return Path(exe)


def find_python39(install: bool | None = None, log=print) -> Path:
    """A Python 3.9 interpreter: $GUIE_PYTHON39, then PATH, then pyenv, then uv; when none is
    found and `install` (default: `install_allowed()`), one installed through uv.

    Raises FileNotFoundError listing every place looked at and how to provide one.
    """
    tried: list[str] = []
    candidates: list[tuple[str, str]] = []
    if os.environ.get(PYTHON_ENV):
        candidates.append((f"${PYTHON_ENV}", os.environ[PYTHON_ENV]))
    for name in ("python3.9", "python3", "python"):
        exe = shutil.which(name)
        if exe:
            candidates.append((f"PATH:{name}", exe))
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for exe in sorted(glob.glob(f"{pyenv_root}/versions/3.9*/bin/python3.9"), reverse=True):
        candidates.append(("pyenv", exe))
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run([uv, "python", "find", "3.9"], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(("uv", found.stdout.strip()))
    for where, exe in candidates:
        version = _python_version(exe)
        if version == PYTHON_VERSION:
            return Path(exe)
        tried.append(f"{where} {exe} -> {'not runnable' if version is None else '%d.%d' % version}")
    if not uv:
        tried.append("uv: not on PATH")
    tried.append(f"pyenv: no {pyenv_root}/versions/3.9*/bin/python3.9")
    if install_allowed() if install is None else install:
        return install_python39(log)
    raise FileNotFoundError(
        "no Python 3.9 interpreter found (the scorer runtimes TF 2.6.4 / torch 1.11 need exactly 3.9). "
        "Looked at: " + "; ".join(tried) + f". Install one (`pyenv install 3.9`, `uv python install 3.9`) "
        f"or point ${PYTHON_ENV} at it, or set {INSTALL_ENV}=1 to install one through uv (needs internet)."
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runtime_path(fmt: str) -> Path:
    return runtimes_dir() / Path(REQUIREMENTS[fmt]).stem


def _ready(root: Path, reqs: str) -> bool:
    marker = root / _MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("requirements") == _digest(reqs)


def ensure_runtime(fmt: str, log=print) -> Runtime:
    """The runtime for `fmt` ('saved_model' | 'torchscript'), created when missing or stale."""
    reqs = requirements_text(fmt)
    root = runtime_path(fmt)
    if _ready(root, reqs):
        return Runtime(fmt, root)
    python = find_python39(log=log)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be creating it right now
        if _ready(root, reqs):
            return Runtime(fmt, root)
        return _create(fmt, root, reqs, python, log)


def _create(fmt: str, root: Path, reqs: str, python: Path, log) -> Runtime:
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.time()
    log(f"creating the {fmt} scorer runtime in {root} with {python} (one-time; large downloads)")
    try:
        _check(subprocess.run([str(python), "-m", "venv", str(tmp)], capture_output=True, text=True), "venv")
        (tmp / "requirements.txt").write_text(reqs)
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        _check(subprocess.run(pip + ["-r", str(tmp / "requirements.txt")], capture_output=True, text=True),
               f"pip install for the {fmt} runtime")
        seconds = time.time() - start
        (tmp / _MARKER).write_text(json.dumps({"requirements": _digest(reqs), "python": str(python),
                                               "seconds": round(seconds, 1)}))
        shutil.rmtree(root, ignore_errors=True)
        # the venv's interpreter is a symlink and `python -m` finds its packages through
        # pyvenv.cfg, so the renamed folder keeps working
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{fmt} scorer runtime ready in {seconds:.0f} s")
    return Runtime(fmt, root)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


if __name__ == "__main__":  # python -m guie_nb.export.scorer_runtime [saved_model] [torchscript]
    for name in sys.argv[1:] or sorted(REQUIREMENTS):
        print(ensure_runtime(name).python)
