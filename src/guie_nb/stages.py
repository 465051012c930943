"""A preset's chain of kernels: which notebook runs as which named stage, in what order.

A preset maps *kernel keys* to parameter values. A key is a notebook name (`"02_train_tpu"`), or a
notebook run as a named stage, `"<notebook>:<stage>"` (`"03_finetune:backbone-280"`): one preset can
run the fine-tune notebook several times, each run its own Kaggle kernel (slug and title end in the
stage name), each reading the output of the stage before it. A preset may also leave notebooks out
(a zero-shot chain: data-prep -> export -> submit). Standard library only: presets, params, the
Kaggle layout and the local runner share it.

The rules `check_chain` enforces, so every consumer can rely on them:
- keys in chain order (the notebooks' order, `NOTEBOOK_ORDER`; stages of one notebook in the order
  given), each notebook in `NOTEBOOK_ORDER`, stage names unique;
- `01_data_prep`, `04_export` and `05_submit` exactly once each, without a stage name;
- training: one `02_train_tpu` kernel, or several, each with a stage name: each starts a model of
  its own from its pretrained weights (a *branch*: 4th place trains a ViT-H-14 and a ViT-L-14-336
  and the export concatenates them); a `03_finetune` kernel only after a `02_train_tpu` kernel.
  Which run a fine-tune continues is its `init_dir`, and staging (`guie_nb.kaggle.layout`) refuses
  a kernel that reads the output of a kernel after it, so every `03_finetune` starts from an earlier
  training kernel's output and the export may read the outputs of several branches.
"""

from __future__ import annotations

import re

NOTEBOOK_ORDER = ("01_data_prep", "02_train_tpu", "03_finetune", "04_export", "05_submit")
STAGE_SEP = ":"
PART_SEP = "#"  # "01_data_prep#i": part i of a data-prep split over kernels (staging only)
REQUIRED = ("01_data_prep", "04_export", "05_submit")
TRAINING = ("02_train_tpu", "03_finetune")
# a stage name ends the kernel's slug (`guie-nb-03-finetune-<stage>`, at most 50 characters)
_STAGE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_STAGE_LEN = 24


def notebook_of(key: str) -> str:
    """The notebook a kernel key runs: `"03_finetune:backbone-280"` -> `"03_finetune"`."""
    return key.split(PART_SEP, 1)[0].split(STAGE_SEP, 1)[0]


def stage_of(key: str) -> str | None:
    """The stage name of a kernel key, None for a plain notebook key."""
    base = key.split(PART_SEP, 1)[0]
    return base.split(STAGE_SEP, 1)[1] if STAGE_SEP in base else None


def kernel_key(notebook: str, stage: str | None = None) -> str:
    return notebook if not stage else f"{notebook}{STAGE_SEP}{stage}"


def check_chain(keys) -> list[str]:
    """The keys as a list, after checking the rules in the module docstring; ValueError names
    every broken rule."""
    keys = list(keys)
    problems = []
    for key in keys:
        nb, stage = notebook_of(key), stage_of(key)
        if nb not in NOTEBOOK_ORDER or PART_SEP in key:
            problems.append(f"{key!r} is not a notebook of {list(NOTEBOOK_ORDER)}, optionally as "
                            f"'<notebook>{STAGE_SEP}<stage>'")
        elif stage is not None and (not _STAGE.match(stage) or len(stage) > MAX_STAGE_LEN):
            problems.append(f"{key!r}: a stage name is lowercase letters, digits and single hyphens, "
                            f"at most {MAX_STAGE_LEN} characters")
    if problems:
        raise ValueError("; ".join(problems))
    order = [NOTEBOOK_ORDER.index(notebook_of(k)) for k in keys]
    if order != sorted(order):
        problems.append(f"kernels out of chain order: {keys}")
    for nb in REQUIRED:
        runs = [k for k in keys if notebook_of(k) == nb]
        if runs != [nb]:
            problems.append(f"{nb} must run exactly once, without a stage name (got {runs})")
    starts = [k for k in keys if notebook_of(k) == "02_train_tpu"]
    if len(starts) > 1 and any(stage_of(k) is None for k in starts):
        problems.append(f"several 02_train_tpu kernels (branches, each a model of its own) each need a stage "
                        f"name, got {starts}")
    if any(notebook_of(k) == "03_finetune" for k in keys) and not any(notebook_of(k) == "02_train_tpu" for k in keys):
        problems.append("a 03_finetune kernel needs a 02_train_tpu kernel before it (it starts from its output)")
    stages = [stage_of(k) for k in keys if stage_of(k)]
    if len(stages) != len(set(stages)):
        problems.append(f"stage names must be unique, got {stages}")
    if problems:
        raise ValueError("; ".join(problems))
    return keys


def training_keys(keys) -> list[str]:
    """The training kernels (02 and every 03 stage), in chain order."""
    return [k for k in keys if notebook_of(k) in TRAINING]
