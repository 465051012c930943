"""Where things live on Kaggle, and the preset's paths rewritten for a chain of kernels.

Locally one root holds everything (`root/raw`, `root/data`, `root/train`, `root/finetune`,
`root` = export; a preset's training stages `root/<stage name>`).
On Kaggle each notebook is its own kernel: it writes under /kaggle/working
(saved as the kernel's output) and reads an earlier kernel's output where Kaggle mounts it,
/kaggle/input/<kernel-slug>/. Environment variables move these roots (tests simulate the
Kaggle layout in a temporary folder with them); the notebooks' bootstrap cell honours the same
input variable.
"""

from __future__ import annotations

from guie_nb.kaggle.inputs import Attachments, place_inputs
from guie_nb.kaggle.paths import (  # noqa: F401  (re-exported)
    HELPERS_SLUG, INPUT_ENV, TEMP_ENV, WORKING_ENV, KaggleRoots)
from guie_nb.stages import check_chain, notebook_of

# where each kernel writes under the root follows from its own `out_dir` (`output_subs`): root/data,
# root/train, root/finetune, the root itself (export), root/submit; a stage writes root/<stage name>
# kernels whose own sub-folder is the top of /kaggle/working on Kaggle: the competition takes the
# submitted file by its name at the top of the kernel's output (`-f submission.zip`)
OUTPUT_AT_TOP = {"05_submit"}
_SENTINEL = "/@guie-root@"


def output_subs(local: dict[str, dict]) -> dict[str, str]:
    """Kernel key -> the folder under the root it writes (its `out_dir`; "" = the root itself), for
    parameters made with the root `_SENTINEL`. Raises ValueError when two kernels write one folder."""
    subs = {}
    for key, values in local.items():
        out = values.get("out_dir")
        if isinstance(out, str) and (out == _SENTINEL or out.startswith(_SENTINEL + "/")):
            subs[key] = out[len(_SENTINEL):].strip("/")
    taken = [s for s in subs.values()]
    if len(taken) != len(set(taken)):
        raise ValueError(f"two kernels write the same folder: {subs}")
    return subs


def _producer(rest: str, subs: dict[str, str]) -> str:
    """The kernel whose output holds `rest` (a path under the root): the longest `out_dir` that
    contains it; anything else under the root is the export's (`out_dir` = the root)."""
    owners = [k for k, sub in subs.items() if sub and (rest == sub or rest.startswith(sub + "/"))]
    if owners:
        return max(owners, key=lambda k: len(subs[k]))
    top = [k for k, sub in subs.items() if not sub]
    if not top:
        raise ValueError(f"no kernel writes <root>/{rest}")
    return top[0]


def _place(path: str, key: str, params: dict, kernel_slugs: dict[str, str], dataset_slugs: set[str],
           roots: KaggleRoots, deps: set[str], subs: dict[str, str], order: list[str]) -> str:
    rest = path[len(_SENTINEL):].lstrip("/")
    head = rest.split("/", 1)[0]
    if head == "raw":
        sub = rest.split("/", 1)[1] if "/" in rest else ""
        if params.get("demo_data_dir"):  # generated in the session: scratch space
            return f"{roots.temp}/{rest}"
        name = sub.split("/", 1)[0]
        if name not in dataset_slugs:
            raise ValueError(f"{key}: raw source {path.replace(_SENTINEL, '<root>')!r} needs a dataset "
                             f"with slug {name!r} in dataset_sources (have {sorted(dataset_slugs)})")
        return f"{roots.input}/{sub}"
    producer = _producer(rest, subs)
    if producer == key:
        if notebook_of(key) in OUTPUT_AT_TOP:
            rest = rest[len(subs[key]):].lstrip("/")
        return f"{roots.working}/{rest}".rstrip("/")
    if order.index(producer) > order.index(key):
        raise ValueError(f"{key} reads {rest!r}, which the later kernel {producer} writes")
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


def sentinel_params(preset: str, overrides: dict[str, dict] | None = None) -> dict[str, dict]:
    """The preset's parameters under the root `_SENTINEL`, `overrides` applied: kernel key -> values,
    or notebook -> values for each kernel of that notebook (each of its stages)."""
    from guie_nb import presets

    local = presets.notebook_params(preset, _SENTINEL)
    for name, values in (overrides or {}).items():
        keys = [name] if name in local else [k for k in local if notebook_of(k) == name]
        if not keys:
            raise ValueError(f"overrides for unknown kernel {name!r}; the preset's kernels: {list(local)}")
        for key in keys:
            local[key] = {**local[key], **values}
    return local


def kaggle_params(preset: str, kernel_slugs: dict[str, str], dataset_slugs: dict[str, set[str]] | None = None,
                  roots: KaggleRoots | None = None, owner: str | None = None, overrides: dict[str, dict] | None = None,
                  ) -> tuple[dict[str, dict], dict[str, set[str]], dict[str, Attachments]]:
    """The preset's parameters with paths placed for Kaggle, the kernels each kernel reads, and
    what each kernel must attach (raw data named `kaggle://...`, Kaggle Model weights); all keyed
    by kernel key (a notebook, or `<notebook>:<stage>`; `guie_nb.stages`), in chain order.

    `kernel_slugs` maps kernel key -> kernel slug (its mount folder); `dataset_slugs` maps kernel key
    -> slugs of the datasets its metadata already lists (raw data under `<root>/raw/<slug>` is read
    from /kaggle/input/<slug>); `owner` fills `{owner}` in dataset handles; `overrides` (kernel key ->
    values) replace the preset's values before anything is placed or attached.
    """
    roots = roots or KaggleRoots.from_env()
    dataset_slugs = dataset_slugs or {}
    local = sentinel_params(preset, overrides)
    order = check_chain(local)
    subs = output_subs(local)
    params, deps, attachments = {}, {}, {}
    for key in order:
        deps[key] = set()
        place = lambda p, key=key: _place(p, key, local[key], kernel_slugs, dataset_slugs.get(key, set()),  # noqa: E731
                                          roots, deps[key], subs, order)
        params[key], attachments[key] = place_inputs(_rewrite(local[key], place), roots.input, owner)
    return params, deps, attachments


def local_params(preset: str, root: str, roots: KaggleRoots | None = None) -> dict[str, dict]:
    """The preset's parameters for a local run (papermill), by kernel key in chain order:
    `kaggle://` inputs placed under `$GUIE_KAGGLE_INPUT` (default /kaggle/input), where the user
    keeps or mounts the raw data."""
    from guie_nb import presets

    roots = roots or KaggleRoots.from_env()
    return {key: place_inputs(p, roots.input)[0] for key, p in presets.notebook_params(preset, root).items()}
