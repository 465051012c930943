"""Stage kernels and the helper-package dataset as folders the `kaggle` client pushes.

A kernel folder holds the built `.ipynb` (the chosen preset's values, with paths placed for
Kaggle, baked into its `parameters` cell: Kaggle runs notebooks without injecting parameters) and
`kernel-metadata.json` (the template with the owner filled in). Everything is validated here,
before any network call. No credential is ever read or written by staging.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from guie_nb import presets
from guie_nb.environment import package_digest, package_files
from guie_nb.kaggle import metadata as md
from guie_nb.kaggle.inputs import Attachments
from guie_nb.kaggle.layout import OUTPUT_AT_TOP, HELPERS_SLUG, KaggleRoots, kaggle_params, output_subs, sentinel_params
from guie_nb.kaggle.paths import HELPERS_VERSION_FILE
from guie_nb.notebook_build import NOTEBOOK_ORDER, build_notebook, python_literal, source_files, write_notebook
from guie_nb.stages import notebook_of, stage_of

KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
HELPERS_TITLE = "GUIE nb helpers"


@dataclass(frozen=True)
class StagedKernel:
    notebook: str
    folder: Path
    meta: dict
    warnings: tuple[str, ...] = ()  # from metadata validation, for the caller to print
    run_id: str = ""  # baked into the notebook, written by it to its output (guie_run.json)
    content_sha256: str = ""  # notebook + metadata without the run id: "did this kernel change?"
    part: tuple[int, int] | None = None  # (shard_index, num_shards) of a data-prep split over kernels
    # the kernel's key in the chain: the notebook, `<notebook>:<stage>` (guie_nb.stages) or
    # `01_data_prep#<i>` (a data-prep part); "" = the notebook
    key: str = ""
    output_sub: str = ""  # the folder under /kaggle/working it writes ("" = the top)

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.notebook)

    @property
    def stage(self) -> str | None:
        return stage_of(self.key)

    @property
    def ref(self) -> str:
        return self.meta["id"]


def chain_metadata(metadata_dir: str | Path, owner: str) -> dict[str, dict]:
    """The templates of every notebook (NOTEBOOK_ORDER) with the owner filled in, each validated, and the chain checked."""
    metas = {}
    for nb in NOTEBOOK_ORDER:
        path = Path(metadata_dir) / f"{nb}.json"
        if not path.is_file():
            raise md.MetadataError(f"kernel metadata template {path} is missing")
        metas[nb] = md.fill_owner(md.load_template(path), owner)
        md.validate(metas[nb])
        if metas[nb]["code_file"] != f"{nb}.ipynb":
            raise md.MetadataError(f"{path}: code_file must be {nb}.ipynb, got {metas[nb]['code_file']!r}")
    helpers = f"{owner}/{HELPERS_SLUG}"
    for i, nb in enumerate(NOTEBOOK_ORDER):
        if helpers not in metas[nb].get("dataset_sources", []):
            raise md.MetadataError(f"{nb}: dataset_sources must include the helper package {helpers!r}")
        if i and metas[NOTEBOOK_ORDER[i - 1]]["id"] not in metas[nb].get("kernel_sources", []):
            raise md.MetadataError(f"{nb}: kernel_sources must chain to {metas[NOTEBOOK_ORDER[i - 1]]['id']!r}")
    return metas


def kernel_meta(template: dict, key: str) -> dict:
    """The metadata of the kernel `key` from its notebook's template: a stage's kernel has the
    stage name at the end of its slug and title (`guie-nb-03-finetune-backbone-280`)."""
    stage = stage_of(key)
    if not stage:
        return dict(template)
    owner, slug = template["id"].split("/")
    meta = {**template, "id": f"{owner}/{slug}-{stage}", "title": f"{template['title']} {stage.replace('-', ' ')}"}
    md.validate(meta)
    return meta


def _chain_sources(metas: dict[str, dict], deps: dict[str, set[str]], templates: dict[str, dict]) -> dict[str, dict]:
    """Each kernel's `kernel_sources`: the template's other kernels (not of this chain) and the
    chain kernels whose output it reads, in chain order."""
    chain_refs = {m["id"] for m in templates.values()} | {m["id"] for m in metas.values()}
    order = list(metas)
    out = {}
    for key, meta in metas.items():
        own = [r for r in meta.get("kernel_sources", []) if r not in chain_refs]
        reads = [metas[d]["id"] for d in sorted(deps[key], key=order.index)]
        out[key] = {**meta, "kernel_sources": reads + own}
    return out


STAGED_NAME = "STAGED"  # the bootstrap cell's `STAGED = {}`, baked here (guie_nb.environment.start_run)
_STAGED_LINE = re.compile(rf"^{STAGED_NAME} = .*?(  #.*)?$", re.M)


def new_run_tag() -> str:
    """A tag unique to one staging: UTC time and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def bake_staged(nb, staged: dict, notebook: str) -> None:
    """Write `staged` into the one `STAGED = ...` line of the notebook's code cells."""
    hits = [c for c in nb.cells if c.cell_type == "code" and _STAGED_LINE.search(c.source)]
    if len(hits) != 1 or len(_STAGED_LINE.findall(hits[0].source)) != 1:
        raise ValueError(f"{notebook}: expected one `{STAGED_NAME} = {{}}` line in the bootstrap cell, "
                         f"found {sum(len(_STAGED_LINE.findall(c.source)) for c in hits)}")
    cell = hits[0]
    cell.source = _STAGED_LINE.sub(lambda m: f"{STAGED_NAME} = {python_literal(staged, STAGED_NAME)}"
                                   + (m.group(1) or ""), cell.source)


def content_digest(nb, meta: dict) -> str:
    """sha256 of the notebook as staged without its run id, and its metadata."""
    text = nbformat.writes(nb) + "\n" + json.dumps(meta, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def stage_kernels(out_root: str | Path, owner: str, preset: str, notebook_dir: str | Path,
                  metadata_dir: str | Path, roots: KaggleRoots | None = None,
                  overrides: dict[str, dict] | None = None, run_tag: str | None = None,
                  helpers_sha256: str | None = None) -> list[StagedKernel]:
    """Stage every kernel of the preset's chain (one per kernel key: a notebook, or a notebook run
    as a named stage, `guie_nb.stages`) under `out_root/<slug>/`; `overrides` (kernel key -> values)
    replaces baked values. Each kernel's `kernel_sources` are the chain kernels it reads.

    Each notebook gets `STAGED = {"run_id": "<run_tag>-<notebook>", "notebook", "helpers_sha256"}`
    baked into its bootstrap cell (`run_tag` default: `new_run_tag()`; `helpers_sha256` default:
    the digest of the guie_nb package that `build_helper_dataset` stages). Kernel folders under
    `out_root` left by an earlier staging and not staged now are removed (`remove_stale_kernels`).
    Raises MetadataError for invalid metadata; each StagedKernel carries the validation warnings.
    """
    import guie_nb

    run_tag = run_tag or new_run_tag()
    helpers_sha256 = helpers_sha256 or package_digest(Path(guie_nb.__file__).parent)
    templates = chain_metadata(metadata_dir, owner)
    local = sentinel_params(preset, overrides)
    subs = output_subs(local)
    metas = {key: kernel_meta(templates[notebook_of(key)], key) for key in local}
    for key, shape in presets.kernel_machines(preset).items():  # a kernel the preset moves to another machine
        metas[key] = md.on_machine(metas[key], shape)
    slugs = {key: m["id"].split("/")[1] for key, m in metas.items()}
    datasets = {key: {d.split("/")[1] for d in m.get("dataset_sources", [])} for key, m in metas.items()}
    params, deps, attachments = kaggle_params(preset, slugs, datasets, roots, owner, overrides)
    _check_configs(preset, params)
    parts = _data_prep_parts(params["01_data_prep"])
    if parts > 1:
        metas, params, deps = _split_data_prep(metas, params, deps, parts, (roots or KaggleRoots.from_env()).input)
    metas = _chain_sources(metas, deps, templates)
    staged = []
    sources = {src.stem: src for src in source_files(notebook_dir)}
    for key, meta in metas.items():
        nb = notebook_of(key)
        meta = attach(meta, attachments[key.split("#")[0]])
        folder = Path(out_root) / meta["id"].split("/")[1]
        if folder.exists():
            shutil.rmtree(folder)  # a stale notebook must never be pushed
        part = (params[key]["shard_index"], parts) if nb == "01_data_prep" and parts > 1 else None
        notebook = build_notebook(sources[nb], params[key])
        bake_staged(notebook, {"run_id": "", "notebook": nb, "helpers_sha256": helpers_sha256}, nb)
        digest = content_digest(notebook, meta)
        run_id = f"{run_tag}-{nb}" + (f"-{stage_of(key)}" if stage_of(key) else "") + \
            (f"-part-{part[0] + 1}-of-{parts}" if part else "")
        bake_staged(notebook, {"run_id": run_id, "notebook": nb, "helpers_sha256": helpers_sha256}, nb)
        write_notebook(notebook, folder / meta["code_file"])
        (folder / KERNEL_METADATA).write_text(json.dumps(meta, indent=2) + "\n")
        warnings = md.validate(meta, folder)
        sub = "" if nb in OUTPUT_AT_TOP else subs[key.split("#")[0]]
        staged.append(StagedKernel(nb, folder, meta, tuple(warnings), run_id, digest, part, key, sub))
    remove_stale_kernels(out_root, {k.folder.name for k in staged})
    return staged


def remove_stale_kernels(out_root: str | Path, staged: set[str]) -> list[Path]:
    """Delete the kernel folders under `out_root` that this staging did not write (a previous
    preset's stages or data-prep parts): a later push, or `kaggle kernels push -p`, must never find
    them. A kernel folder is a direct subfolder holding `kernel-metadata.json`; everything else is
    kept: `chain_state.json`, the helper dataset (`dataset-metadata.json`), the chain's work folder
    and any other file or folder. Returns the folders removed."""
    root = Path(out_root)
    stale = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink() and d.name not in staged
             and (d / KERNEL_METADATA).is_file()] if root.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder)
    return stale


def _data_prep_parts(params: dict) -> int:
    n = params.get("num_shards", 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"01_data_prep: num_shards must be an integer >= 1, got {n!r}")
    return n


def _split_data_prep(metas: dict, params: dict, deps: dict, parts: int, input_root: str):
    """Data-prep over `parts` kernels side by side (`guie_nb.data.prepare`'s num_shards/shard_index):
    kernel i writes part i; the later kernels mount every part and read `data_dir` as their list."""
    base = metas["01_data_prep"]
    slug = base["id"].split("/")[1]
    owner = base["id"].split("/")[0]
    part_metas = {}
    for i in range(parts):
        suffix = f"part-{i + 1}-of-{parts}"
        part_metas[f"01_data_prep#{i}"] = {**base, "id": f"{owner}/{slug}-{suffix}",
                                           "title": f"{base['title']} {suffix.replace('-', ' ')}"}
    mount = f"{input_root}/{slug}"

    def fan_out(v):
        if isinstance(v, str) and (v == mount or v.startswith(mount + "/")):
            return [v.replace(mount, f"{input_root}/{m['id'].split('/')[1]}", 1) for m in part_metas.values()]
        if isinstance(v, dict):
            return {k: fan_out(x) for k, x in v.items()}
        return v

    new_metas, new_params, new_deps = {}, {}, {}
    for nb, meta in metas.items():
        if nb == "01_data_prep":
            for key, pm in part_metas.items():
                new_metas[key] = pm
                new_params[key] = {**params[nb], "shard_index": int(key.split("#")[1])}
                new_deps[key] = set()
            continue
        new_metas[nb] = meta  # kernel_sources follow from new_deps (_chain_sources)
        new_params[nb] = fan_out(params[nb])
        new_deps[nb] = {d for d in deps[nb] if d != "01_data_prep"} | (set(part_metas) if "01_data_prep" in deps[nb] else set())
    return new_metas, new_params, new_deps


def _check_configs(preset: str, params: dict[str, dict]) -> None:
    """Build every notebook's configs from the values about to be baked: a key no config knows
    (`train["epochz"]`, a source option) fails here, not hours into a Kaggle run."""
    from guie_nb.params import check

    try:
        check(params)
    except ValueError as err:
        raise ValueError(f"preset {preset!r}: {err}") from err


def attach(meta: dict, attachments: Attachments) -> dict:
    """`meta` with what the notebook's parameters read added to its sources (the template may
    list more: the competition itself, say)."""
    meta = dict(meta)
    for key, handles in attachments.as_metadata().items():
        meta[key] = sorted(set(meta.get(key, [])) | set(handles))
    return meta


def build_helper_dataset(out_dir: str | Path, owner: str, package_dir: str | Path | None = None) -> Path:
    """Stage `guie_nb` as the helper dataset: `<out>/guie_nb/...`, a version file, its metadata.

    The folder is pushed with the client's zip directory mode; Kaggle unpacks `guie_nb.zip`
    into /kaggle/input/guie-nb-helpers/guie_nb/, where the notebooks' bootstrap cell finds it.
    """
    import guie_nb

    package_dir = Path(package_dir or Path(guie_nb.__file__).parent)
    if not (package_dir / "__init__.py").is_file():
        raise FileNotFoundError(f"{package_dir} is not a Python package (no __init__.py)")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    for f in package_files(package_dir):
        dest = out / "guie_nb" / f.relative_to(package_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    version = {"package": "guie_nb", "version": guie_nb.__version__, "sha256": package_digest(package_dir)}
    (out / HELPERS_VERSION_FILE).write_text(json.dumps(version, indent=2) + "\n")
    meta = {"title": HELPERS_TITLE, "id": f"{owner}/{HELPERS_SLUG}", "licenses": [{"name": "other"}],
            "subtitle": "The guie_nb helper package the GUIE notebooks import"}
    md.fill_owner(meta, owner)  # checks the owner
    (out / DATASET_METADATA).write_text(json.dumps(meta, indent=2) + "\n")
    return out
