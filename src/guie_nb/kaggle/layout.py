"""Where things live on Kaggle, and the preset's paths rewritten for a chain of kernels.

Locally one root holds everything (`root/raw`, `root/data`, `root/train`, `root/finetune`,
`root` = export). On Kaggle each notebook is its own kernel: it writes under /kaggle/working
(saved as the kernel's output) and reads an earlier kernel's output where Kaggle mounts it,
/kaggle/input/<kernel-slug>/. Environment variables move these roots (tests simulate the
Kaggle layout in a temporary folder with them); the notebooks' bootstrap cell honours the same
input variable.
"""

from __future__ import annotations

from guie_nb.kaggle.inputs import Attachments, place_inputs
from guie_nb.kaggle.paths import (  # noqa: F401  (re-exported)
    HELPERS_SLUG, INPUT_ENV, TEMP_ENV, WORKING_ENV, KaggleRoots)
from guie_nb.notebook_build import NOTEBOOK_ORDER

# the sub-folder of the local root each notebook writes ("" = the root itself)
OUTPUT_SUB = {"01_data_prep": "data", "02_train_tpu": "train", "03_finetune": "finetune", "04_export": "",
              "05_submit": "submit"}
# kernels whose own sub-folder is the top of /kaggle/working on Kaggle: the competition takes the
# submitted file by its name at the top of the kernel's output (`-f submission.zip`)
OUTPUT_AT_TOP = {"05_submit"}
_SENTINEL = "/@guie-root@"


def _producer(head: str) -> str:
    for nb, sub in OUTPUT_SUB.items():
        if sub and sub == head:
            return nb
    return "04_export"  # anything else under the root is the export's output


def _place(path: str, nb: str, params: dict, kernel_slugs: dict[str, str], dataset_slugs: set[str],
           roots: KaggleRoots, deps: set[str]) -> str:
    rest = path[len(_SENTINEL):].lstrip("/")
    head = rest.split("/", 1)[0]
    if head == "raw":
        sub = rest.split("/", 1)[1] if "/" in rest else ""
        if params.get("demo_data_dir"):  # generated in the session: scratch space
            return f"{roots.temp}/{rest}"
        name = sub.split("/", 1)[0]
        if name not in dataset_slugs:
            raise ValueError(f"{nb}: raw source {path.replace(_SENTINEL, '<root>')!r} needs a dataset "
                             f"with slug {name!r} in dataset_sources (have {sorted(dataset_slugs)})")
        return f"{roots.input}/{sub}"
    producer = _producer(head)
    if producer == nb:
        if nb in OUTPUT_AT_TOP:
            rest = rest[len(OUTPUT_SUB[nb]):].lstrip("/")
        return f"{roots.working}/{rest}".rstrip("/")
    if NOTEBOOK_ORDER.index(producer) > NOTEBOOK_ORDER.index(nb):
        raise ValueError(f"{nb} reads {rest!r}, which the later notebook {producer} writes")
    deps.add(producer)
    return f"{roots.input}/{kernel_slugs[producer]}/{rest}".rstrip("/")


def _rewrite(value, place):
    if isinstance(value, str) and (value == _SENTINEL or value.startswith(_SENTINEL + "/")):
        return place(value)
    if isinstance(value, dict):
        return {k: _rewrite(v, place) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rewrite(v, place) for v in value)
    return value


def kaggle_params(preset: str, kernel_slugs: dict[str, str], dataset_slugs: dict[str, set[str]] | None = None,
                  roots: KaggleRoots | None = None, owner: str | None = None, overrides: dict[str, dict] | None = None,
                  ) -> tuple[dict[str, dict], dict[str, set[str]], dict[str, Attachments]]:
    """The preset's parameters with paths placed for Kaggle, the kernels each notebook reads, and
    what each notebook's kernel must attach (raw data named `kaggle://...`, Kaggle Model weights).

    `kernel_slugs` maps notebook -> kernel slug (its mount folder); `dataset_slugs` maps notebook ->
    slugs of the datasets its metadata already lists (raw data under `<root>/raw/<slug>` is read
    from /kaggle/input/<slug>); `owner` fills `{owner}` in dataset handles; `overrides` (notebook ->
    values) replace the preset's values before anything is placed or attached.
    """
    from guie_nb import presets

    roots = roots or KaggleRoots.from_env()
    dataset_slugs = dataset_slugs or {}
    local = presets.notebook_params(preset, _SENTINEL)
    for nb, values in (overrides or {}).items():
        if nb not in local:
            raise ValueError(f"overrides for unknown notebook {nb!r}; notebooks: {list(NOTEBOOK_ORDER)}")
        local[nb] = {**local[nb], **values}
    params, deps, attachments = {}, {}, {}
    for nb in NOTEBOOK_ORDER:
        deps[nb] = set()
        place = lambda p, nb=nb: _place(p, nb, local[nb], kernel_slugs, dataset_slugs.get(nb, set()),  # noqa: E731
                                        roots, deps[nb])
        params[nb], attachments[nb] = place_inputs(_rewrite(local[nb], place), roots.input, owner)
    return params, deps, attachments


def local_params(preset: str, root: str, roots: KaggleRoots | None = None) -> dict[str, dict]:
    """The preset's parameters for a local run (papermill): `kaggle://` inputs placed under
    `$GUIE_KAGGLE_INPUT` (default /kaggle/input), where the user keeps or mounts the raw data."""
    from guie_nb import presets

    roots = roots or KaggleRoots.from_env()
    return {nb: place_inputs(p, roots.input)[0] for nb, p in presets.notebook_params(preset, root).items()}
