"""Run a submission.zip the way the competition's scorer does, inside the scorer's runtime.

Runs under Python 3.9 with TensorFlow 2.6.4 or PyTorch 1.11.0 only (no guie_nb there), so it
is plain, self-contained Python 3.9. It unzips the submission, loads the model, feeds every image
in --images (decoded with PIL and converted to RGB, at native size) one at a time, and writes
what came out (values, dtype, shape, seconds, errors) to --out as JSON. Judging the output is
the caller's job (guie_nb.export.verify), except for what only this runtime can see.

    python score_submission.py --format saved_model --zip submission.zip --images DIR --out result.json
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import zipfile

import numpy as np
from PIL import Image


def _error(exc):
    text = "%s: %s" % (type(exc).__name__, exc)
    return text if len(text) < 2000 else text[:1000] + " ... " + text[-800:]


def _images(folder):
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    for name in names:
        with Image.open(os.path.join(folder, name)) as img:
            mode = img.mode
            rgb = img.convert("RGB")  # what the scorer does with every test image
        yield name, mode, rgb


class TensorFlowModel:
    """tf.saved_model.load -> signatures['serving_default'] -> output['embedding_norm']."""

    def __init__(self, folder, threads=0):
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.tf = tf
        self.version = tf.__version__
        loaded = tf.saved_model.load(folder)
        if "serving_default" not in loaded.signatures:
            raise KeyError("the SavedModel has no 'serving_default' signature; signatures: %s"
                           % sorted(loaded.signatures.keys()))
        self.loaded, self.fn = loaded, loaded.signatures["serving_default"]

    def __call__(self, rgb):
        x = self.tf.convert_to_tensor(np.asarray(rgb, dtype=np.uint8)[None])  # uint8 [1, H, W, 3]
        out = self.fn(x)
        if not isinstance(out, dict) or "embedding_norm" not in out:
            keys = sorted(out.keys()) if isinstance(out, dict) else type(out).__name__
            raise KeyError("output has no 'embedding_norm' key; the model returned %s" % (keys,))
        return out["embedding_norm"].numpy()


class TorchModel:
    """torch.jit.load -> eval() -> model(PILToTensor(img).unsqueeze(0))[0].flatten() under no_grad."""

    def __init__(self, folder, threads=0):
        import torch
        from torchvision import transforms

        if threads:
            torch.set_num_threads(threads)
        self.torch, self.to_tensor = torch, transforms.PILToTensor()
        self.version = torch.__version__
        path = os.path.join(folder, "saved_model.pt")
        self.model = torch.jit.load(path, map_location="cpu")
        self.model.eval()

    def __call__(self, rgb):
        x = self.to_tensor(rgb).unsqueeze(0)  # uint8 [1, 3, H, W]
        with self.torch.no_grad():
            out = self.model(x)[0]
            return out.flatten().cpu().numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--format", required=True, choices=["saved_model", "torchscript"])
    p.add_argument("--zip", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0: the framework's default, as the scorer runs it); 1 gives "
                        "steady timings on a shared machine, where torch's thread pool stalls")
    p.add_argument("--warmup", type=int, default=6,
                   help="calls on distinct sizes before timing: torch's profiling executor "
                        "re-optimises the first few input shapes it sees, which is not scoring time")
    args = p.parse_args(argv)

    result = {"format": args.format, "python": sys.version.split()[0], "images": []}

    def write():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, args.out)

    with tempfile.TemporaryDirectory(prefix="submission-") as folder:
        start = time.perf_counter()
        try:
            with zipfile.ZipFile(args.zip) as zf:
                zf.extractall(folder)
            model = (TensorFlowModel if args.format == "saved_model" else TorchModel)(folder, args.threads)
        except Exception as exc:  # the loader's own message is the report
            result["load_error"] = _error(exc)
            result["traceback"] = traceback.format_exc()[-3000:]
            write()
            return 0
        result["framework_version"] = model.version
        result["load_seconds"] = time.perf_counter() - start
        write()  # a crash while running images still leaves the load result behind
        rng = np.random.RandomState(0)
        try:
            t0 = time.perf_counter()
            for i in range(args.warmup):
                model(Image.fromarray(rng.randint(0, 256, (96 + 37 * i, 160 - 11 * i, 3)).astype(np.uint8)))
            result["warmup_seconds"] = time.perf_counter() - t0
        except Exception as exc:  # reported per image below, with the image that shows it
            result["warmup_error"] = _error(exc)
        for name, mode, rgb in _images(args.images):
            row = {"name": name, "mode": mode, "size": [rgb.height, rgb.width]}
            try:
                t0 = time.perf_counter()
                out = model(rgb)
                row["seconds"] = time.perf_counter() - t0
                arr = np.asarray(out)
                row.update(dtype=str(arr.dtype), shape=list(arr.shape),
                           values=[float(v) for v in arr.reshape(-1)[:4096]])
            except Exception as exc:
                row["error"] = _error(exc)
            result["images"].append(row)
            write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
