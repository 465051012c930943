"""The scorer runtimes: found or created (timed), pinned, and a clear error without Python 3.9."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from guie_nb.export import scorer_runtime
from guie_nb.export.scorer_runtime import ensure_runtime, find_python39


@pytest.mark.parametrize("fmt,module,version", [("saved_model", "tensorflow", "2.6.4"),
                                                ("torchscript", "torch", "1.11.0")])
def test_runtime_has_the_scorer_versions(fmt, module, version):
    start = time.time()
    runtime = ensure_runtime(fmt)  # created here when missing (pip downloads), else reused
    print(f"{fmt} runtime ready after {time.time() - start:.0f} s: {runtime.root}")
    proc = runtime.run(["-c", f"import sys, {module}; print(sys.version_info[:2], {module}.__version__)"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("(3, 9)")[-1].strip().startswith(version), proc.stdout


def test_runtime_does_not_see_this_process_packages(monkeypatch):
    """PYTHONPATH (src/ in development) must not leak today's packages into the old runtime."""
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-guie-path")
    proc = ensure_runtime("torchscript").run(["-c", "import sys; print(sys.path)"])
    assert "/nonexistent-guie-path" not in proc.stdout


def test_no_python39_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv(scorer_runtime.INSTALL_ENV, raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv(scorer_runtime.PYTHON_ENV, sys.executable)  # a 3.11: must be refused
    with pytest.raises(FileNotFoundError) as e:
        find_python39()
    text = str(e.value)
    assert "no Python 3.9 interpreter found" in text
    assert f"{sys.executable} -> 3.{sys.version_info[1]}" in text
    assert "uv: not on PATH" in text and "pyenv install 3.9" in text and "GUIE_PYTHON39" in text


def test_missing_runtime_fails_before_installing(monkeypatch, tmp_path):
    monkeypatch.setenv(scorer_runtime.RUNTIMES_ENV, str(tmp_path / "runtimes"))
    monkeypatch.setattr(scorer_runtime, "find_python39",
                        lambda **kw: (_ for _ in ()).throw(FileNotFoundError("no Python 3.9 interpreter found")))
    with pytest.raises(FileNotFoundError, match="Python 3.9"):
        ensure_runtime("saved_model")
    with pytest.raises(ValueError, match="unknown submission format 'onnx'"):
        ensure_runtime("onnx")
    assert not any((tmp_path / "runtimes").glob("*"))  # nothing half-made left


def test_python39_is_installed_through_uv_only_when_allowed(monkeypatch, tmp_path):
    """A fake `uv` on PATH: `python install 3.9` records the call and makes `python find 3.9`
    print a (fake) 3.9 interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_python = bin_dir / "fake-python3.9"
    fake_python.write_text("#!/bin/sh\necho 3 9\n")
    calls = tmp_path / "uv-calls"
    (bin_dir / "uv").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        f'if [ "$1 $2" = "python install" ]; then : > {tmp_path}/installed; exit 0; fi\n'
        f'if [ -f {tmp_path}/installed ]; then echo {fake_python}; exit 0; fi\n'
        "exit 2\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv(scorer_runtime.PYTHON_ENV, raising=False)
    monkeypatch.delenv(scorer_runtime.INSTALL_ENV, raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)

    with pytest.raises(FileNotFoundError, match="GUIE_INSTALL_PYTHON39=1"):
        find_python39()
    assert "python install" not in calls.read_text()  # nothing installed without consent

    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # inside a Kaggle kernel: allowed
    assert find_python39(log=lambda *a: None) == fake_python
    assert "python install 3.9" in calls.read_text()

    monkeypatch.setenv(scorer_runtime.INSTALL_ENV, "0")  # an explicit no wins
    (tmp_path / "installed").unlink()
    with pytest.raises(FileNotFoundError):
        find_python39()


def test_the_runtime_runs_on_the_cpu_without_this_process_python_settings(monkeypatch):
    """The pinned wheels' CUDA is not a GPU kernel's: every run in a scorer runtime hides the GPU
    (verification and the export benchmark alike), and PYTHONPATH does not leak in."""
    from guie_nb.export.scorer_runtime import Runtime

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    probe = "import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), 'PYTHONPATH' in os.environ)"
    here = Runtime("saved_model", Path(sys.executable).parent.parent)  # this interpreter stands in
    assert here.run(["-c", probe]).stdout.split() == ["''", "False"]
    assert here.run(["-c", probe], extra_env={"CUDA_VISIBLE_DEVICES": "1"}).stdout.split() == ["'1'", "False"]
