"""`submission.zip`: exactly one model format at the zip root, and nothing else."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

SAVED_MODEL = "saved_model"
TORCHSCRIPT = "torchscript"
TORCHSCRIPT_NAME = "saved_model.pt"


def zip_saved_model(saved_model_dir: str | Path, zip_path: str | Path) -> Path:
    """Zip a SavedModel's files (`saved_model.pb`, `variables/`, ...) at the zip root, atomically."""
    src, zip_path = Path(saved_model_dir), Path(zip_path)
    if not (src / "saved_model.pb").is_file():
        raise FileNotFoundError(f"not a SavedModel directory (no saved_model.pb): {src}")
    return _write_zip(zip_path, sorted(p for p in src.rglob("*") if p.is_file()), src)


def zip_torchscript(model_file: str | Path, zip_path: str | Path) -> Path:
    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"TorchScript file not found: {model_file}")
    return _write_zip(Path(zip_path), [model_file], model_file.parent, rename={model_file: TORCHSCRIPT_NAME})


def _write_zip(zip_path: Path, files: list[Path], root: Path, rename: dict | None = None) -> Path:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(f".{zip_path.name}.tmp-{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in files:
            zf.write(f, (rename or {}).get(f) or f.relative_to(root).as_posix())
    os.replace(tmp, zip_path)
    return zip_path


def submission_format(zip_path: str | Path) -> str:
    """Which format the zip holds; raises ValueError naming the problem when it is not exactly one."""
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    has_tf = "saved_model.pb" in names
    has_pt = TORCHSCRIPT_NAME in names
    if has_tf and has_pt:
        raise ValueError(f"{zip_path}: holds both a SavedModel and {TORCHSCRIPT_NAME}; the scorer takes exactly one")
    if has_tf:
        extra = [n for n in names if n != "saved_model.pb" and not n.startswith(("variables/", "assets/"))
                 and n != "fingerprint.pb"]
        if extra:
            raise ValueError(f"{zip_path}: unexpected files beside the SavedModel: {extra[:5]}")
        return SAVED_MODEL
    if has_pt:
        if len(names) != 1:
            raise ValueError(f"{zip_path}: {TORCHSCRIPT_NAME} must be the only file, found {names[:5]}")
        return TORCHSCRIPT
    nested = [n for n in names if n.endswith(("saved_model.pb", ".pt"))]
    hint = f" (found {nested[0]!r}: model files must be at the zip root)" if nested else ""
    raise ValueError(f"{zip_path}: no saved_model.pb or {TORCHSCRIPT_NAME} at the zip root{hint}")


class SubmissionEmbedder:
    """A `submission.zip` loaded with today's framework, called like the scorer calls it
    (uint8 RGB `[H, W, 3]` in, flat float32 embedding out): for scoring validation sets.
    The scorer runtime itself is exercised by `guie_nb.export.verify`."""

    def __init__(self, zip_path: str | Path):
        import tempfile

        self.format = submission_format(zip_path)
        self._dir = tempfile.TemporaryDirectory(prefix="submission-")
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(self._dir.name)
        if self.format == SAVED_MODEL:
            from guie_nb.export.saved_model import SavedModelEmbedder

            self._embed = SavedModelEmbedder(self._dir.name)
        else:
            import torch

            module = torch.jit.load(str(Path(self._dir.name) / TORCHSCRIPT_NAME), map_location="cpu").eval()

            def embed(image):
                with torch.no_grad():
                    return module(torch.from_numpy(image.copy()).permute(2, 0, 1)[None])[0].flatten().numpy()

            self._embed = embed

    def __call__(self, image):
        return self._embed(image)

    def close(self) -> None:
        self._dir.cleanup()
