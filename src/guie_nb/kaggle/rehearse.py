"""`make rehearse PROFILE=<preset>`: the chain staged exactly as `make push` stages it, each kernel
run in dry-run mode on a simulated Kaggle, before a TPU hour is spent.

For each kernel in chain order: a fresh `/kaggle/input` holding what its metadata attaches and
nothing else (competition data, datasets, Kaggle Models and earlier kernels' outputs, as tiny
fixtures in the real layouts, `guie_nb.kaggle.fixtures`), a fresh `/kaggle/working`, the network
blocked when the metadata has internet off; the staged notebook runs under papermill with
`dry_run=True` and leaves `resolved_config.json` and `preflight.json`. The report
(`build/rehearsal/<preset>/report.json`, schema below) collects them; the run fails, naming every
problem, when any kernel does.

    {"preset": str, "ok": bool, "kernels": [{"notebook", "slug", "machine_shape", "internet",
      "attached": [str], "inputs": [{"name", "path", "found"}], "resolved": {...},
      "estimates": {"output_gb", "hours", "memory_gib_per_device_xla", "memory_gib_per_device_plan"},
      "limits": [{"name", "limit", "value", "ok"}], "problems": [str]}]}

The raw-data fixtures list each dataset at its published size (`fixtures.PUBLISHED`: hard links to
a few generated images, class sizes on an assumed long tail), so data-prep's plan, output GB and
hours are at the real scale; a training kernel reads a tiny real data-prep output, and its hours
are scaled to the number of training images the data-prep kernels planned.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from guie_nb.kaggle import fixtures
from guie_nb.kaggle import metadata as md
from guie_nb.kaggle.layout import HELPERS_SLUG, INPUT_ENV, TEMP_ENV, WORKING_ENV, KaggleRoots
from guie_nb.kaggle.stage import StagedKernel, build_helper_dataset, stage_kernels
from guie_nb.notebook_build import NOTEBOOK_ORDER
from guie_nb.params import RESOLVED_CONFIG
from guie_nb.preflight import EXPORT_THROUGHPUT_SOURCE, PREFLIGHT, SESSION_HOURS, export_hours, format_scoring

OWNER = "rehearsal"
OFFLINE_SITE = '''"""Loaded by the rehearsal into kernels whose metadata has internet off: any connection or
name lookup beyond this machine fails, as on Kaggle."""
import ipaddress
import socket

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _local(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "")


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(str(address[0])):
        raise OSError(101, f"network is off for this kernel (enable_internet false): {address[0]}")


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _local(str(host)):
        raise socket.gaierror(-3, f"network is off for this kernel (enable_internet false): {host}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


class Fixtures:
    """Generated under `root` on first use, kept between rehearsals (keyed by their spec), and
    linked into each kernel's input. `scale`: "published" lists the datasets at their published
    sizes (hard links, a few MB), "tiny" a few hundred images; `raw` overrides per mount slug."""

    def __init__(self, root: Path, scale: str = "published", raw: dict[str, fixtures.RawSpec] | None = None):
        if scale not in ("published", "tiny"):
            raise ValueError(f"scale must be 'published' or 'tiny', got {scale!r}")
        self.root, self.scale, self.raw = root, scale, raw or {}

    def _made(self, key: str, make) -> Path:
        path = self.root / key
        if not path.exists():
            scratch = path.with_name(path.name + ".partial")
            shutil.rmtree(scratch, ignore_errors=True)
            make(scratch)
            scratch.rename(path)  # a rehearsal killed half-way leaves no half fixture behind
        return path

    def _raw(self, kind: str, slug: str) -> Path:
        maker = fixtures.RAW_FIXTURES.get(slug)
        if maker is None:  # a mount whose layout the project does not know: attached, empty
            return self._made(f"{kind}/{slug}", lambda p: p.mkdir(parents=True))
        spec = self.raw.get(slug) or (fixtures.RawSpec.published(slug) if self.scale == "published"
                                      else fixtures.RawSpec())
        key = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
        return self._made(f"{kind}/{slug}-{key}", lambda p: maker(p, spec))

    def competition(self, slug: str) -> Path:
        return self._raw("competitions", slug)

    def dataset(self, handle: str) -> Path:
        return self._raw("datasets", handle.split("/")[1])

    def model(self, handle: str) -> Path:
        return self._made(f"models/{handle}", lambda p: fixtures.kaggle_model(p, handle))


def _kernel_output_fixture(kernel: StagedKernel, folder: Path, resolved: dict[str, dict]) -> Path:
    """What `kernel` leaves in /kaggle/working, for the kernels that mount it."""
    nb = kernel.notebook
    if folder.exists():
        return folder
    if nb == "01_data_prep":
        return fixtures.data_prep_output(folder, part=kernel.part)
    if nb == "04_export":  # with the export's resolved config, which names the exported model
        return fixtures.export_output(folder, resolved=resolved.get(kernel.key))
    # the model this stage trains, as its dry run resolved it (else the latest training kernel's)
    models = [r.get("model") for r in resolved.values() if r.get("model")]
    model = resolved.get(kernel.key, {}).get("model") or (models[-1] if models else None)
    return fixtures.training_output(folder, kernel.output_sub, model)


def _link(target: Path, at: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target.resolve(), target_is_directory=True)


def _mount(kernel: StagedKernel, input_root: Path, fx: Fixtures, outputs: dict[str, Path], helpers: Path) -> list[str]:
    """Link what `kernel`'s metadata attaches into a fresh `input_root`; returns the handles."""
    shutil.rmtree(input_root, ignore_errors=True)
    input_root.mkdir(parents=True)
    meta, attached = kernel.meta, []
    for slug in meta.get("competition_sources", []):
        _link(fx.competition(slug), input_root / slug)
        attached.append(f"competition:{slug}")
    for handle in meta.get("dataset_sources", []):
        slug = handle.split("/")[1]
        _link(helpers if slug == HELPERS_SLUG else fx.dataset(handle), input_root / slug)
        attached.append(f"dataset:{handle}")
    for handle in meta.get("model_sources", []):
        _link(fx.model(handle), input_root.joinpath(*handle.split("/")[1:]))
        attached.append(f"model:{handle}")
    for ref in meta.get("kernel_sources", []):
        slug = ref.split("/")[1]
        _link(outputs[slug], input_root / slug)
        attached.append(f"kernel:{ref}")
    return attached


def _run_notebook(kernel: StagedKernel, roots: KaggleRoots, executed: Path, offline_dir: Path | None,
                  xla_memory: bool) -> str | None:
    """Run the staged notebook with dry_run=True; returns the error, if any."""
    env = {**os.environ, INPUT_ENV: roots.input, WORKING_ENV: roots.working, TEMP_ENV: roots.temp,
           "GUIE_XLA_MEMORY": "1" if xla_memory else "0",
           # the simulation runs on this machine's CPU; XLA's TPU compile needs no TPU backend
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    if offline_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(offline_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(HF_HUB_OFFLINE="1", GUIE_OFFLINE="1")
    nb = kernel.folder / kernel.meta["code_file"]
    cmd = [sys.executable, "-m", "papermill", str(nb), str(executed), "-y", "dry_run: true", "--cwd", roots.working,
           "-k", "python3", "--no-progress-bar"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    tail = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
    return f"notebook failed: {tail.strip()[:600]} (see {executed})"


def _kernel_report(kernel: StagedKernel, attached: list[str], working: Path, error: str | None) -> dict:
    meta = kernel.meta
    entry = {"notebook": kernel.notebook, "kernel": kernel.key, "stage": kernel.stage,
             "slug": meta["id"].split("/")[1], "machine_shape": meta.get("machine_shape"),
             "internet": md.flag(meta, "enable_internet"),
             "attached": attached, "inputs": [], "resolved": {}, "limits": [], "problems": [],
             "estimates": {"output_gb": None, "hours": None, "memory_gib_per_device_xla": None,
                           "memory_gib_per_device_plan": None}}
    resolved = next(iter(working.rglob(RESOLVED_CONFIG)), None)
    pre = next(iter(working.rglob(PREFLIGHT)), None)
    if resolved:
        entry["resolved"] = json.loads(resolved.read_text())
    if pre:
        report = json.loads(pre.read_text())
        entry.update(inputs=report["inputs"], limits=report["limits"], problems=list(report["problems"]))
        entry["estimates"].update(report["estimates"])
    elif not error:
        error = "the notebook wrote no preflight.json (dry_run not honoured?)"
    if error:
        entry["problems"].append(error)
    return entry


def _scale_training_hours(entry: dict, planned_train_images: int | None,
                          class_sizes: dict[str, dict[str, int]] | None = None) -> None:
    """A training kernel reads the fixture data-prep output; its hours are scaled to the number of
    training images the data-prep kernels' dry runs planned from the (published-size) listings.
    A class-resampling stage (`min_draws_per_class`) is scaled by resampled epochs instead: the
    plan's classes by size (`class_sizes`, per source) against the fixture's resampled epoch."""
    e = entry["estimates"]
    # the whole data-prep output: a stage on a subset of its sources (train_sources) scales alike
    fixture_images = e.get("data_train_images") or e.get("train_images")
    if entry["notebook"] not in ("02_train_tpu", "03_finetune") or not planned_train_images or not fixture_images \
            or e.get("hours") is None:
        return
    train = entry.get("resolved", {}).get("train") or {}
    m = train.get("min_draws_per_class") or 0
    if m and class_sizes and e.get("train_images"):
        from guie_nb.data.resampling import histogram_epoch_images

        names = train.get("train_sources") or list(class_sizes)
        epoch = sum(histogram_epoch_images(class_sizes[n], m) for n in names if n in class_sizes)
        e["hours"] *= epoch / e["train_images"]
        e["hours_basis"] = (f"{epoch} training images per epoch (the data-prep plan's classes resampled to at "
                            f"least {m} draws each), at the assumed MFU")
    else:
        e["hours"] *= planned_train_images / fixture_images
        e["hours_basis"] = f"{planned_train_images} training images (the data-prep plan), at the assumed MFU"
    for lim in entry["limits"]:
        if lim["name"] == "session_hours":
            lim["value"] = e["hours"]


def _stand_in_zip(entry: dict) -> None:
    """05 hands over the export's submission.zip, which in the rehearsal is a stand-in of a few
    bytes: its output is then the export's estimate from the model (`model_output_gb`, as 04's),
    or unknown when no export config was mounted (`--only 05_submit`)."""
    e = entry["estimates"]
    if entry["notebook"] != "05_submit" or e.get("output_gb") is None:
        return
    e["output_gb"] = e.get("model_output_gb")
    e["output_basis"] = ("the exported model's float32 weights, as 04 estimates them (the rehearsal's "
                         "submission.zip is a stand-in)" if e["output_gb"] is not None else
                         "unknown: the rehearsal's submission.zip is a stand-in, and no export config names the model")
    for lim in entry["limits"]:
        if lim["name"] == "output_gb":
            lim["value"] = e["output_gb"]
            lim["ok"] = lim["value"] is None or lim["value"] <= lim["limit"]
            if not lim["ok"]:
                entry["problems"].append(f"over the limit: output_gb {lim['value']:.3g} > {lim['limit']:g}")


def _machine_kind(meta: dict) -> str:
    return "tpu" if md.flag(meta, "enable_tpu") else "gpu" if md.flag(meta, "enable_gpu") else "cpu"


def _export_hours(entry: dict, meta: dict, planned_heldout_images: int | None,
                  planned_train_images: int | None = None) -> None:
    """The export's hours on the machine it is staged for, for the held-out images the data-prep
    kernels planned (the fixture data-prep output holds a few): `guie_nb.preflight.export_hours`
    of the forward passes its dry run counted (`export_work`)."""
    e = entry["estimates"]
    if entry["notebook"] != "04_export" or not e.get("export_work"):
        return
    kind = _machine_kind(meta)
    heldout = planned_heldout_images or e["heldout_images"]
    train = planned_train_images or e.get("train_images")
    e.update(machine=kind, heldout_images=heldout, train_images=train,
             hours=export_hours(e["export_work"], kind, heldout, train),
             hours_basis=f"{heldout} held-out images"
             f"{' (the data-prep plan)' if planned_heldout_images else ''}; {EXPORT_THROUGHPUT_SOURCE[kind]}")
    for lim in entry["limits"]:
        if lim["name"] == "session_hours":
            lim["value"] = e["hours"]


def _session_limit(entry: dict, meta: dict) -> None:
    """Judge the hours against the session of the machine the kernel is staged for (12 h CPU,
    9 h TPU/GPU), replacing the notebook's own verdict, which assumed its usual machine."""
    kind = _machine_kind(meta)
    hint = "stage it on a GPU (the preset's KERNEL_MACHINES) or cut its held-out work" \
        if entry["notebook"] == "04_export" else "plan it across resumed sessions, or fewer epochs per kernel"
    entry["problems"] = [p for p in entry["problems"] if not p.startswith("over the limit: session_hours")]
    for lim in entry["limits"]:
        if lim["name"] == "session_hours":
            lim["limit"] = SESSION_HOURS[kind]
            lim["ok"] = lim["value"] is None or lim["value"] <= lim["limit"]
            if not lim["ok"]:
                entry["problems"].append(f"over the limit: session_hours {lim['value']:.3g} > {lim['limit']:g} "
                                         f"on {md.accelerator(meta)} ({hint})")


def rehearse(preset: str, out_root: str | Path = "build/rehearsal", *, notebook_dir: str | Path, metadata_dir: str | Path,
             only: list[str] | None = None, overrides: dict[str, dict] | None = None,
             raw: dict[str, fixtures.RawSpec] | None = None, scale: str = "published", xla_memory: bool = False,
             log=print) -> dict:
    """Stage `preset`, run each kernel's dry run on a simulated Kaggle; returns (and writes) the report."""
    root = Path(out_root).resolve() / preset
    shutil.rmtree(root, ignore_errors=True)
    sim = root / "kaggle"
    roots = KaggleRoots(str(sim / "input"), str(sim / "working"), str(sim / "temp"))
    report = {"preset": preset, "ok": False, "kernels": [], "problems": []}
    try:
        staged = stage_kernels(root / "stage", OWNER, preset, notebook_dir, metadata_dir, roots, overrides)
    except (ValueError, FileNotFoundError) as err:  # MetadataError and SourceError are ValueErrors
        report["problems"].append(f"staging failed: {err}")
        return _write(report, root, log)
    helpers = build_helper_dataset(root / "helpers", OWNER)
    offline = root / "offline-site"
    offline.mkdir()
    (offline / "sitecustomize.py").write_text(OFFLINE_SITE)
    fx = Fixtures(Path(out_root).resolve() / ".fixtures", scale, raw)
    outputs: dict[str, Path] = {}
    resolved: dict[str, dict] = {}
    planned: list[int | None] = []  # training images each data-prep kernel plans
    class_sizes: dict | None = None  # the data-prep plan's classes by size, per source
    planned_all: list[int | None] = []  # and all its images (training + held-out)
    for kernel in staged:
        slug = kernel.meta["id"].split("/")[1]
        if only and kernel.notebook not in only and kernel.key not in only:
            continue
        for ref in kernel.meta.get("kernel_sources", []):  # earlier kernels' outputs: fixtures
            dep = ref.split("/")[1]
            producer = next(k for k in staged if k.meta["id"] == ref)
            outputs.setdefault(dep, _kernel_output_fixture(producer, root / "outputs" / dep, resolved))
        log(f"== {kernel.key} ({slug}, {kernel.meta.get('machine_shape') or 'CPU'})")
        attached = _mount(kernel, Path(roots.input), fx, outputs, helpers)
        shutil.rmtree(roots.working, ignore_errors=True)
        shutil.rmtree(roots.temp, ignore_errors=True)
        Path(roots.working).mkdir(parents=True)
        Path(roots.temp).mkdir(parents=True)
        executed = root / "executed" / f"{slug}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        internet = md.flag(kernel.meta, "enable_internet")
        error = _run_notebook(kernel, roots, executed, None if internet else offline, xla_memory)
        entry = _kernel_report(kernel, attached, Path(roots.working), error)
        if kernel.notebook == "01_data_prep":
            e = entry["estimates"]
            planned.append(e.get("train_images_planned"))
            planned_all.append(e.get("images_planned"))
            class_sizes = class_sizes or e.get("train_class_sizes")  # every part: the whole run
        _scale_training_hours(entry, sum(planned) if planned and None not in planned else None, class_sizes)
        known = planned and None not in planned + planned_all
        _export_hours(entry, kernel.meta, sum(planned_all) - sum(planned) if known else None,
                      sum(planned) if known else None)
        _session_limit(entry, kernel.meta)
        _stand_in_zip(entry)
        resolved[kernel.key] = entry["resolved"]
        shutil.copytree(roots.working, root / "dry-run" / slug, symlinks=True)
        report["kernels"].append(entry)
    report["scoring"] = _scoring(preset)
    if report["scoring"] and not report["scoring"]["fits"]:
        report["problems"].append(f"over the limit: {format_scoring(report['scoring'])}")
    report["ok"] = bool(report["kernels"]) and all(not k["problems"] for k in report["kernels"]) \
        and not report["problems"]
    return _write(report, root, log)


def _scoring(preset: str) -> dict | None:
    """The scoring-time estimate of the model the preset exports, from the preset's own data (its
    final stage's resolution and patch stride, flip TTA), `guie_nb.preflight.scoring_estimate`."""
    from guie_nb import presets
    from guie_nb.preflight import scoring_estimate

    model, flip = presets.final_model(preset)
    return None if model is None else scoring_estimate(model, flip)


def _write(report: dict, root: Path, log) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(format_table(report))
    log(f"report: {root / 'report.json'}")
    return report


def format_table(report: dict) -> str:
    width = max([18] + [len(k.get("kernel", k["notebook"])) + 1 for k in report["kernels"]])
    rows = [f"rehearsal of {report['preset']}: {'OK' if report['ok'] else 'FAILED'}",
            f"{'kernel':<{width}} {'machine':<13} {'net':<4} {'inputs':<7} {'out GB':>8} {'hours':>7} "
            f"{'GiB/chip plan':>13} {'XLA':>6} {'scoring h':>9}  problems"]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    for k in report["kernels"]:
        e = k["estimates"]
        found = sum(i["found"] for i in k["inputs"])
        part = re.search(r"part-(\d+)-of-(\d+)$", k["slug"])
        name = k.get("kernel", k["notebook"]).split("#")[0] + (f" {part.group(1)}/{part.group(2)}" if part else "")
        rows.append(f"{name:<{width}} {k['machine_shape'] or 'CPU':<13} {'on' if k['internet'] else 'off':<4} "
                    f"{found}/{len(k['inputs']):<5} {num(e['output_gb'], '.3g'):>8} {num(e['hours'], '.3g'):>7} "
                    f"{num(e['memory_gib_per_device_plan'], '.1f'):>13} {num(e['memory_gib_per_device_xla'], '.1f'):>6} "
                    f"{num(e.get('scoring_hours'), '.3g'):>9}  {len(k['problems'])}")
    for k in report["kernels"]:
        rows += [f"  {k.get('kernel', k['notebook'])}: {p}" for p in k["problems"]]
    rows += [f"  {p}" for p in report.get("problems", [])]
    for k in report["kernels"]:  # the export's hours rest on an assumed throughput: say which
        if k["notebook"] == "04_export" and k["estimates"].get("hours_basis"):
            rows.append(f"04_export hours: {k['estimates']['hours_basis']}")
    if report.get("scoring"):
        rows.append(format_scoring(report["scoring"]))
        rows.append(f"  ({report['scoring']['assumption']})")
    return "\n".join(rows)


def main(argv=None) -> int:
    import argparse

    repo = Path(__file__).resolve().parents[3]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", "--profile", dest="preset", default="demo")
    p.add_argument("--out", default=str(repo / "build" / "rehearsal"))
    p.add_argument("--only", nargs="+", metavar="KERNEL",
                   help=f"only these kernels: notebooks of {list(NOTEBOOK_ORDER)} or kernel keys (03_finetune:<stage>)")
    p.add_argument("--xla-memory", action="store_true",
                   help="also compile each training step for a TPU v5e-8 ahead of time (minutes per kernel; needs libtpu)")
    args = p.parse_args(argv)
    report = rehearse(args.preset, args.out, notebook_dir=repo / "notebooks", metadata_dir=repo / "kernel-metadata",
                      only=args.only, xla_memory=args.xla_memory)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
