#!/usr/bin/env python
"""The memory planner's choices for ViT-H-14 on a TPU v5e-8 (16 GiB per chip), mixed bf16, AdamW,
17,691 classes: the layout, rematerialisation and gradient accumulation it picks per batch and
resolution, and the GiB per chip (`guie_nb.model.memory_plan.plan`). An estimate; with libtpu,
`make rehearse XLA=1` compares it with XLA's own figure."""

from __future__ import annotations

import guie_nb  # noqa: F401  (import order, see guie_nb/__init__.py)
from guie_nb.model.memory_plan import GIB, plan

ROWS = [("64", {"batch_size": 64}), ("128", {"batch_size": 128}),
        ("128, backbone frozen", {"batch_size": 128, "frozen_blocks": 32}),
        ("64 at 280 px", {"batch_size": 64, "image_size": 280}), ("256", {"batch_size": 256}),
        ("256 at 280 px", {"batch_size": 256, "image_size": 280}), ("512", {"batch_size": 512})]


def main() -> None:
    print("| global batch | layout | remat | grad accumulation | GiB per chip | fits |")
    print("|---|---|---|---|---|---|")
    for label, kw in ROWS:
        p = plan("ViT-H-14", **kw)
        layout = "data parallel" if p.layout == "data_parallel" else f"weights sharded (FSDP, model axis {p.model_parallel})"
        print(f"| {label} | {layout} | {'per block' if p.remat else 'no'} | {p.grad_accum_steps} | "
              f"{p.bytes_per_device / GIB:.1f} | {'yes' if p.fits else 'no'} |")


if __name__ == "__main__":
    main()
