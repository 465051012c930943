"""Verify a `submission.zip` in the scorer's own runtime, the way the scorer runs it.

The zip is unzipped, loaded and fed one image at a time inside a Python 3.9 environment with
TensorFlow 2.6.4 or PyTorch 1.11.0 (`scorer_runtime`), on probe images of many sizes and PIL
modes converted to RGB as the scorer does. Checks: exactly one format at the zip root; the model
loads; it accepts uint8 input; the output is at most 64 float32 values, finite (and, for the
SavedModel, under `embedding_norm` and L2-normalised); and, given the Keras model, the cosine to
its embedding is >= 0.9999 on every image. Each failure is named in the report.

    python -m guie_nb.export.verify submission.zip [--model-dir build/demo/finetune] [--flip-tta]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from guie_nb.export.scorer_runtime import ensure_runtime
from guie_nb.export.submission import SAVED_MODEL, TORCHSCRIPT, TORCHSCRIPT_NAME, submission_format

MAX_DIM = 64
MIN_COSINE = 0.9999
TEST_IMAGES = 205_000  # 5,000 queries + 200,000 index images, one model call each
TIME_LIMIT_H = 9.0
WARN_FRACTION = 0.8
# torch 1.11 reads TorchScript files up to this format version (its kMaxSupportedFileFormatVersion)
TORCH_111_MAX_FILE_VERSION = 9
RUNTIME_NAME = {SAVED_MODEL: "TensorFlow 2.6.4", TORCHSCRIPT: "PyTorch 1.11.0"}

# (name, (height, width), PIL mode, file suffix): the shapes and modes a test set throws at a model
PROBES = [
    ("tiny_1x1", (1, 1), "RGB", "png"),
    ("tiny_3x2", (3, 2), "RGB", "png"),
    ("photo_480x640", (480, 640), "RGB", "jpg"),
    ("square_224", (224, 224), "RGB", "png"),
    ("wide_60x1600", (60, 1600), "RGB", "png"),
    ("tall_1200x50", (1200, 50), "RGB", "png"),
    ("gray_300x200", (300, 200), "L", "png"),
    ("rgba_256x320", (256, 320), "RGBA", "png"),
    ("cmyk_240x320", (240, 320), "CMYK", "jpg"),
    ("palette_200x200", (200, 200), "P", "png"),
    ("huge_3000x4000", (3000, 4000), "RGB", "jpg"),
]


class SubmissionRejected(ValueError):
    """The submission would fail in the scorer; the message lists every failure."""


@dataclass
class VerifyReport:
    zip_path: str
    format: str | None = None
    runtime: str | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    per_image: list[dict] = field(default_factory=list)
    embedding_dim: int | None = None
    min_cosine: float | None = None
    max_abs_diff: float | None = None
    per_image_seconds: float | None = None
    scoring_hours_estimate: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        head = f"{self.zip_path}: {self.format or '?'} in {self.runtime or '?'}: "
        if self.ok:
            lines = [head + f"OK ({self.embedding_dim}-d, {len(self.per_image)} images"
                     + (f", min cosine vs Keras {self.min_cosine:.6f}" if self.min_cosine is not None else "")
                     + ")"]
        else:
            lines = [head + f"REJECTED, {len(self.failures)} failure(s):"] + [f"  - {f}" for f in self.failures]
        if self.scoring_hours_estimate is not None:
            lines.append(f"  scoring time on this CPU (1 thread): {self.per_image_seconds * 1000:.1f} ms/image x "
                         f"{TEST_IMAGES:,} = {self.scoring_hours_estimate:.2f} h (limit {TIME_LIMIT_H:.0f} h on the "
                         "scorer's own, unpublished hardware: plan with preflight's scoring_estimate)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        if self.failures:
            raise SubmissionRejected(self.summary())


def write_probe_images(folder: Path, probes=PROBES, seed: int = 0) -> dict[str, np.ndarray]:
    """Save the probe images; return each as the scorer sees it (PIL-decoded, converted to RGB)."""
    from PIL import Image

    from guie_nb.export.checks import probe_images

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seen = {}
    for (name, (h, w), mode, suffix), rgb in zip(probes, probe_images([p[1] for p in probes], seed)):
        img = Image.fromarray(rgb)
        if mode == "RGBA":
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        elif mode == "P":
            img = img.quantize(64)
        elif mode != "RGB":
            img = img.convert(mode)
        path = folder / f"{name}.{suffix}"
        img.save(path, quality=92) if suffix == "jpg" else img.save(path)
        with Image.open(path) as reread:
            seen[path.name] = np.asarray(reread.convert("RGB"))
    return seen


def _torchscript_notes(pt_bytes_zip: zipfile.ZipFile) -> list[str]:
    """What can be read from the TorchScript archive without loading it."""
    names = pt_bytes_zip.namelist()
    notes = []
    version = [n for n in names if n.endswith("/version") or n.endswith("/.data/version")]
    if version:
        v = int(pt_bytes_zip.read(version[0]).decode().strip() or 0)
        if v > TORCH_111_MAX_FILE_VERSION:
            notes.append(f"file format version {v} > {TORCH_111_MAX_FILE_VERSION}, the newest torch 1.11 reads "
                         "(written by a newer torch with ops such as nn.GELU(approximate=...))")
    if any(n.endswith(".debug_pkl") for n in names):
        notes.append("the file carries *.debug_pkl records: a load error then aborts torch 1.11 instead of raising")
    return notes


def static_notes(zip_path: Path, fmt: str) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        if fmt == TORCHSCRIPT:
            with zf.open(TORCHSCRIPT_NAME) as f, zipfile.ZipFile(f) as pt:
                return _torchscript_notes(pt)
        if b"DisableCopyOnRead" in zf.read("saved_model.pb"):
            return ["saved_model.pb uses the op DisableCopyOnRead (TF >= 2.14's saver function); "
                    "save with tf.saved_model.SaveOptions(experimental_skip_saver=True)"]
    return []


def verify_submission(zip_path: str | Path, reference: Callable[[np.ndarray], np.ndarray] | None = None,
                      probes=PROBES, warmup: int = 6, threads: int = 1, timeout: float = 3600,
                      log=print) -> VerifyReport:
    """Run the zip in its scorer runtime on the probe images and judge what comes out.

    `threads` CPU threads (0: the framework's default): one gives steady, conservative timings
    on a shared machine, where torch's default thread pool stalls when the cores are busy."""
    zip_path = Path(zip_path)
    report = VerifyReport(str(zip_path))
    try:
        report.format = fmt = submission_format(zip_path)
    except (ValueError, zipfile.BadZipFile, FileNotFoundError) as e:
        report.failures.append(f"zip layout: {e}")
        return report
    report.runtime = RUNTIME_NAME[fmt]
    notes = static_notes(zip_path, fmt)
    runtime = ensure_runtime(fmt, log=log)
    work = Path(tempfile.mkdtemp(prefix="verify-"))
    try:
        images = write_probe_images(work / "images", probes)
        script = resources.files("guie_nb") / "runtimes" / "score_submission.py"
        out = work / "result.json"
        try:
            proc = runtime.run([str(script), "--format", fmt, "--zip", str(zip_path.resolve()),
                                "--images", str(work / "images"), "--out", str(out), "--warmup", str(warmup),
                                "--threads", str(threads)], timeout=timeout)  # on the CPU (Runtime.run)
        except subprocess.TimeoutExpired:
            report.failures.append(f"the {report.runtime} run took over {timeout:.0f} s")
            return report
        result = json.loads(out.read_text()) if out.is_file() else {}
        if proc.returncode != 0 or not result:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
            stage = "loading the model" if "framework_version" not in result else "running the images"
            report.failures.append(f"{report.runtime} crashed (exit {proc.returncode}) while {stage}"
                                   + (f"; {'; '.join(notes)}" if notes else "") + f": {tail}")
            return report
        if result.get("load_error"):
            report.failures.append(f"does not load in {report.runtime}: {_one_line(result['load_error'])}"
                                   + (f" ({'; '.join(notes)})" if notes else ""))
            return report
        _judge_images(report, result["images"], images, reference)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _one_line(text: str, limit: int = 700) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 5] + " ..."


def _judge_images(report: VerifyReport, rows: list[dict], images: dict[str, np.ndarray], reference) -> None:
    dims, cosines, seconds = set(), [], []
    input_desc = "[1, H, W, 3]" if report.format == SAVED_MODEL else "[1, 3, H, W]"
    for row in rows:
        name = f"{row['name']} ({row['mode']} {row['size'][0]}x{row['size'][1]})"
        entry = {k: row.get(k) for k in ("name", "mode", "size", "seconds", "dtype", "shape", "error")}
        report.per_image.append(entry)
        if row.get("error"):
            report.failures.append(f"{name}: the model fails on a uint8 {input_desc} image: {_one_line(row['error'])}")
            continue
        values = np.asarray(row["values"], dtype=np.float64)
        seconds.append(row["seconds"])
        if row["dtype"] != "float32":
            report.failures.append(f"{name}: output dtype is {row['dtype']}, the scorer expects float32")
        n = int(np.prod(row["shape"]))
        dims.add(n)
        if n > MAX_DIM:
            report.failures.append(f"{name}: output has {n} values (shape {row['shape']}); "
                                   f"the scorer accepts at most {MAX_DIM}")
        if not np.all(np.isfinite(values)):
            report.failures.append(f"{name}: output has non-finite values")
            continue
        norm = float(np.linalg.norm(values))
        if report.format == SAVED_MODEL and abs(norm - 1.0) > 1e-3:
            report.failures.append(f"{name}: embedding_norm is not L2-normalised (norm {norm:.4f})")
        if reference is not None and n <= 4096:
            ref = np.asarray(reference(images[row["name"]]), dtype=np.float64).reshape(-1)
            if ref.shape != values.shape:
                report.failures.append(f"{name}: {values.size} values, the Keras model gives {ref.size}")
                continue
            cos = float(values @ ref / max(np.linalg.norm(values) * np.linalg.norm(ref), 1e-30))
            entry["cosine"], entry["max_abs_diff"] = cos, float(np.max(np.abs(values - ref)))
            cosines.append(cos)
            if not cos >= MIN_COSINE:
                report.failures.append(f"{name}: cosine to the Keras model's embedding is {cos:.6f} < {MIN_COSINE}")
    if len(dims) > 1:
        report.failures.append(f"output size differs between images: {sorted(dims)}")
    report.embedding_dim = dims.pop() if len(dims) == 1 else None
    report.min_cosine = min(cosines) if cosines else None
    diffs = [e["max_abs_diff"] for e in report.per_image if "max_abs_diff" in e]
    report.max_abs_diff = max(diffs) if diffs else None
    if len(rows) < len(images):
        report.failures.append(f"only {len(rows)} of {len(images)} probe images ran")
    if seconds:
        report.per_image_seconds = statistics.median(seconds)
        report.scoring_hours_estimate = report.per_image_seconds * TEST_IMAGES / 3600
        if report.scoring_hours_estimate > WARN_FRACTION * TIME_LIMIT_H:
            report.warnings.append(f"scoring time {report.scoring_hours_estimate:.1f} h is near or over the "
                                   f"{TIME_LIMIT_H:.0f} h limit on a CPU like this one (1 thread). The scorer's "
                                   "hardware is not published; the planning figure is the FLOP-based "
                                   "guie_nb.preflight.scoring_estimate (the rehearsal's scoring line), which "
                                   "assumes 5 TFLOP/s")


def _reference_from_dir(model_dir: Path, flip_tta: bool):
    from guie_nb.export.checks import keras_reference
    from guie_nb.run_dir import load_embedding_model

    model, cfg = load_embedding_model(model_dir)
    return keras_reference(model, cfg, flip_tta)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("zip", type=Path)
    p.add_argument("--model-dir", type=Path, help="trained model folder (model_config.json + weights): "
                   "compare with the Keras model's embeddings")
    p.add_argument("--flip-tta", action="store_true", help="the export includes flip TTA")
    p.add_argument("--report", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)
    reference = _reference_from_dir(args.model_dir, args.flip_tta) if args.model_dir else None
    report = verify_submission(args.zip, reference)
    print(report.summary())
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
