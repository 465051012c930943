"""Bytes per device for training a ViT embedding model, and the layout that fits.

Counts, per device: weights, gradients and optimizer slots (exact, from the ViT shape), saved
activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models": per block `s*b*h*(10 + 24/t + 5*a*s/(h*t))` bytes at 16-bit with tensor parallelism `t`;
`34 + 5as/h` at t=1), margin-head logits and input images; then adds XLA's temporary buffers and
fragmentation as 10% plus 0.5 GiB. Frozen leading blocks (stem included) keep no activations,
gradients or optimizer slots. An estimate to choose a layout, checked against measured sharded
shapes in the tests; not a guarantee of what XLA allocates.

Two savers trade time for memory (`TrainConfig.remat`, `TrainConfig.grad_accum_steps`):
per-block rematerialisation keeps only each block's input, `2*s*b*h` bytes at 16-bit (the same
paper, section 5, "full activation recomputation"), plus one block's full activations while that
block's backward runs; gradient accumulation over k micro-batches scales activations and logits
with the micro-batch `b = batch / (replicas * k)` and adds one buffer of summed gradients.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from guie_nb.model.backbones import VitConfig, vit_config

GIB = 1024**3

# name -> (devices, bytes of memory per device). v3-8: 4 chips x 2 cores, 16 GiB per core (device).
DEVICES: dict[str, tuple[int, int]] = {
    "v5e-8": (8, 16 * GIB),
    "v3-8": (8, 16 * GIB),
    "v4-8": (4, 32 * GIB),
}
# precision -> (bytes per weight / gradient / optimizer slot, bytes per activation value)
PRECISIONS: dict[str, tuple[int, int]] = {"mixed_bfloat16": (4, 2), "bfloat16": (2, 2), "float32": (4, 4)}
OPTIMIZER_SLOTS: dict[str, int] = {"adamw": 2, "adam": 2, "lion": 1, "sgd": 1, "sgd_no_momentum": 0}
OVERHEAD_FRACTION, OVERHEAD_BYTES = 0.10, GIB // 2
MODEL_PARALLEL_CHOICES = (1, 2, 4, 8)  # 1: FSDP only


@dataclass
class MemoryPlan:
    backbone: str
    device: str
    layout: str  # "data_parallel" | "model_parallel" (sharding.make_distribution's names)
    model_parallel: int  # size of the mesh's `model` axis (1 for data_parallel and pure FSDP)
    batch_size: int  # global
    per_device_batch: int
    bytes_per_device: int
    capacity_bytes: int
    fits: bool
    params_total: int
    params_trainable: int
    breakdown: dict[str, int] = field(default_factory=dict)  # bytes per device by kind
    remat: bool = False  # each transformer block rematerialised in the backward pass
    grad_accum_steps: int = 1  # micro-batches per optimizer update
    micro_batch_per_device: int = 0  # per_device_batch / grad_accum_steps

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.breakdown.items())
        return (
            f"{self.backbone} on {self.device}, batch {self.batch_size}: {self.layout} "
            f"(model_parallel={self.model_parallel}), remat={self.remat}, grad_accum_steps={self.grad_accum_steps} "
            f"(micro-batch {self.micro_batch_per_device} per device), {self.bytes_per_device / GIB:.2f} of "
            f"{self.capacity_bytes / GIB:.0f} GiB per device, fits={self.fits} [GiB: {parts}]"
        )


@dataclass(frozen=True)
class ParamGroups:
    """Parameter counts by how `sharding.VIT_LAYOUT` lays them out."""

    replicated: int = 0  # norms, embeddings, out_proj / c_proj biases
    model_axis: int = 0  # split over `model` only (in_proj / c_fc biases, conv1)
    all_axes: int = 0  # split over `batch` x `model`: the big matrices

    @property
    def total(self) -> int:
        return self.replicated + self.model_axis + self.all_axes

    def local(self, layout: str, mp: int, n_devices: int) -> int:
        """Parameters one device holds."""
        if layout == "data_parallel":
            return self.total
        return self.replicated + -(-self.model_axis // mp) + -(-self.all_axes // n_devices)


def block_params(cfg: VitConfig) -> ParamGroups:
    w, m = cfg.width, cfg.mlp_width
    return ParamGroups(replicated=4 * w + 2 * w, model_axis=3 * w + m, all_axes=4 * w * w + 2 * w * m)


def stem_params(cfg: VitConfig) -> ParamGroups:
    conv = cfg.patch_size**2 * 3 * cfg.width
    return ParamGroups(replicated=cfg.width * (cfg.grid_size**2 + 2) + 2 * cfg.width, model_axis=conv)


def top_params(cfg: VitConfig) -> ParamGroups:
    return ParamGroups(replicated=2 * cfg.width, all_axes=cfg.width * (cfg.output_dim or 0))


def vit_params(cfg: VitConfig) -> int:
    """Exact parameter count of `guie_nb.model.vit.build_vit(cfg)`."""
    return stem_params(cfg).total + cfg.layers * block_params(cfg).total + top_params(cfg).total


def _activation_bytes(cfg: VitConfig, per_device_batch: int, blocks: int, t: int, act_bytes: int,
                      remat: bool = False) -> int:
    """Activations kept for the backward pass of `blocks` trainable blocks (Korthikanti et al. 2022).

    Without remat: every block's full set, `s*b*h*(10 + 24/t + 5as/(ht))` bytes at 16-bit. With
    remat: each block's input only, `2*s*b*h` at 16-bit (replicated over the model axis: this
    layout has no sequence parallelism), plus one block's full set, rebuilt during its backward.
    """
    s, h, a = cfg.grid_size**2 + 1, cfg.width, cfg.heads
    mlp = cfg.mlp_ratio / 4.0  # the paper's constants assume a 4x MLP; scale its share (16 of 24)
    per_block = s * per_device_batch * h * (10 + (8 + 16 * mlp) / t + 5 * a * s / (h * t))
    if remat:
        return int((2 * s * per_device_batch * h * blocks + per_block) * act_bytes / 2)
    return int(per_block * blocks * act_bytes / 2)  # the formula counts 16-bit values


def _local_params(cfg: VitConfig, frozen_blocks: int, layout: str, mp: int, n: int) -> tuple[int, int]:
    """(all, trainable) backbone parameters held by one device; frozen: stem + leading blocks."""
    stem, block, top = (g.local(layout, mp, n) for g in (stem_params(cfg), block_params(cfg), top_params(cfg)))
    trainable = (cfg.layers - frozen_blocks) * block
    trainable += top if frozen_blocks < cfg.layers else 0
    trainable += stem if frozen_blocks == 0 else 0
    return stem + cfg.layers * block + top, trainable


def _per_device(cfg, batch, precision, frozen_blocks, optimizer, n_devices, layout, mp, head, num_classes,
                remat=False, accum=1, subcenters=1):
    weight_bytes, act_bytes = PRECISIONS[precision]
    backbone, trainable = _local_params(cfg, frozen_blocks, layout, mp, n_devices)
    per_device_batch = batch // (n_devices // mp)
    micro = per_device_batch // accum  # what one forward/backward pass holds
    trainable_blocks = max(cfg.layers - frozen_blocks, 1)  # frozen ones still run one at a time
    breakdown = {
        "weights": (backbone + head) * weight_bytes,
        "gradients": (trainable + head) * weight_bytes,
        "optimizer": (trainable + head) * weight_bytes * OPTIMIZER_SLOTS[optimizer],
        "activations": _activation_bytes(cfg, micro, trainable_blocks, mp, act_bytes, remat),
        # logits, softmax, gradient (and the cosines to every sub-centre when there are several)
        "logits": (3 + (subcenters if subcenters > 1 else 0)) * micro * num_classes * 4,
        "images": per_device_batch * cfg.image_size**2 * 3 * 4,  # the whole batch is on the device
    }
    if accum > 1:  # the running sum, next to one micro-batch's gradients
        breakdown["accumulated_gradients"] = (trainable + head) * 4
    if layout == "model_parallel":  # a block's gathered weights, forward and backward
        breakdown["gathered_block"] = 2 * block_params(cfg).total * act_bytes // mp
    subtotal = sum(breakdown.values())
    breakdown["xla_overhead"] = int(subtotal * OVERHEAD_FRACTION) + OVERHEAD_BYTES
    return breakdown, per_device_batch


def _shardable(cfg: VitConfig, layout: str, mp: int, n_devices: int, batch: int) -> bool:
    if layout == "data_parallel":
        return mp == 1
    return (
        n_devices % mp == 0
        and cfg.width % n_devices == 0
        and cfg.mlp_width % n_devices == 0
        and batch % (n_devices // mp) == 0
    )


def _accum_choices(grad_accum_steps: int | None, per_device_batch: int) -> list[int]:
    if grad_accum_steps is not None:
        return [grad_accum_steps]
    ks, k = [], 1
    while per_device_batch % k == 0:  # every micro-batch still splits over the replicas
        ks.append(k)
        k *= 2
    return ks


def _tiers(remat: bool | None, grad_accum_steps: int | None, per_device_batch: int) -> list[tuple[bool, int]]:
    """(remat, k) in the order tried: the cheapest in time first (no remat, k=1), then remat,
    then more micro-batches (with remat unless it is forced off)."""
    remats = [False, True] if remat is None else [remat]
    ks = _accum_choices(grad_accum_steps, per_device_batch)
    return [(r, ks[0]) for r in remats] + [(remats[-1], k) for k in ks[1:]]


def plan(
    backbone: str | VitConfig,
    batch_size: int,
    precision: str = "mixed_bfloat16",
    frozen_blocks: int = 0,
    optimizer: str = "adamw",
    device: str = "v5e-8",
    image_size: int | None = None,
    num_classes: int = 17691,
    embedding_dim: int = 64,
    layout: str | None = None,
    model_parallel: int | None = None,
    remat: bool | None = None,
    grad_accum_steps: int | None = None,
    hidden_dim: int | None = None,
    subcenters: int = 1,
    patch_stride: int | None = None,
    neck_branches: int = 1,
) -> MemoryPlan:
    """Bytes per device for training `backbone` with a global `batch_size`.

    Each argument left at None is chosen: the first setting that fits, in this order (cheapest in
    step time first): data parallel; weights sharded (`model_parallel` layout) with the smallest
    `model` axis that fits (1 = FSDP); the same layouts with per-block remat; then with remat and
    2, 4, 8, ... micro-batches (while each still splits over the data-parallel replicas). When
    nothing fits, the smallest plan tried, with `fits=False`. A value given forces that choice
    (`remat=False, grad_accum_steps=1` gives the plain plan). `hidden_dim` / `subcenters`: the
    neck and head of `guie_nb.model.embedding` (`neck_branches` copies of the neck); `patch_stride`
    below the patch size: overlapping patches, so more tokens (`VitConfig.num_tokens`). Raises ValueError on unknown names, a batch that
    does not split over the devices or micro-batches, or `frozen_blocks` outside 0..layers.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {sorted(DEVICES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {sorted(PRECISIONS)}")
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {sorted(OPTIMIZER_SLOTS)}")
    if layout not in (None, "data_parallel", "model_parallel"):
        raise ValueError(f"unknown layout {layout!r}")
    name = backbone if isinstance(backbone, str) else "custom"
    cfg = vit_config(backbone) if isinstance(backbone, str) else backbone
    overrides = {k: v for k, v in (("image_size", image_size), ("patch_stride", patch_stride)) if v}
    if overrides:
        cfg = vit_config(backbone, **overrides) if isinstance(backbone, str) else replace(cfg, **overrides)
    if not 0 <= frozen_blocks <= cfg.layers:
        raise ValueError(f"frozen_blocks must be in 0..{cfg.layers}, got {frozen_blocks}")
    n_devices, capacity = DEVICES[device]
    if batch_size < 1 or batch_size % n_devices:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of the {n_devices} devices")
    if grad_accum_steps is not None and (grad_accum_steps < 1 or batch_size % grad_accum_steps):
        raise ValueError(f"grad_accum_steps {grad_accum_steps} must be >= 1 and divide batch_size {batch_size}")

    if layout == "data_parallel":
        candidates = [("data_parallel", 1)]
    elif layout == "model_parallel" or model_parallel:
        choices = [model_parallel] if model_parallel else MODEL_PARALLEL_CHOICES
        candidates = [("model_parallel", mp) for mp in choices]
    else:
        candidates = [("data_parallel", 1)] + [("model_parallel", mp) for mp in MODEL_PARALLEL_CHOICES]
    candidates = [(lay, mp) for lay, mp in candidates if _shardable(cfg, lay, mp, n_devices, batch_size)]
    if not candidates:
        raise ValueError(
            f"cannot shard width {cfg.width} / MLP {cfg.mlp_width} / batch {batch_size} over "
            f"{n_devices} devices with layout={layout} model_parallel={model_parallel}"
        )
    neck = neck_branches * (cfg.feature_dim * hidden_dim + hidden_dim + hidden_dim * embedding_dim if hidden_dim else (
        cfg.feature_dim * embedding_dim))
    head = neck + embedding_dim + num_classes * subcenters * embedding_dim
    total, trainable = vit_params(cfg) + head, _local_params(cfg, frozen_blocks, "data_parallel", 1, 1)[1] + head
    plans = []
    for rm, k in _tiers(remat, grad_accum_steps, batch_size // n_devices):
        for lay, mp in candidates:
            per_device_batch = batch_size // (n_devices // mp)
            if per_device_batch % k:
                if grad_accum_steps is not None:
                    raise ValueError(f"the per-replica batch {per_device_batch} ({lay}, model_parallel={mp}) "
                                     f"does not split into grad_accum_steps={k} micro-batches")
                continue
            breakdown, per_device_batch = _per_device(
                cfg, batch_size, precision, frozen_blocks, optimizer, n_devices, lay, mp, head, num_classes,
                rm, k, subcenters,
            )
            used = sum(breakdown.values())
            plans.append(MemoryPlan(
                backbone=name,
                device=device,
                layout=lay,
                model_parallel=mp,
                batch_size=batch_size,
                per_device_batch=per_device_batch,
                bytes_per_device=used,
                capacity_bytes=capacity,
                fits=used <= capacity,
                params_total=total,
                params_trainable=trainable,
                breakdown=breakdown,
                remat=rm,
                grad_accum_steps=k,
                micro_batch_per_device=per_device_batch // k,
            ))
            if plans[-1].fits:
                return plans[-1]
    return min(plans, key=lambda p: p.bytes_per_device)


def plan_for(model_cfg, train_cfg, num_classes: int, device: str = "v5e-8", choose: bool = False) -> MemoryPlan:
    """Does this training configuration fit `device`? One call for rehearsals and dry runs.

    Reads backbone, input size, neck, head (`guie_nb.model.embedding.ModelConfig`) and batch,
    precision, optimizer, frozen blocks (`freeze_backbone`: all of them, with ln_post / proj),
    layout, model_parallel, remat and grad_accum_steps (`guie_nb.training.config.TrainConfig`).
    The plan is for exactly that configuration; `choose=True` instead lets the planner pick the
    layout, remat and accumulation (what to set when the configuration does not fit).
    A frozen head (`freeze_head`) is still counted as trained: its gradients and slots are
    `num_classes * embedding_dim` floats, a few MB.
    """
    vit = model_cfg.vit  # its patch_stride reaches `plan`, which counts the overlapping patches' tokens
    forced = {} if choose else {
        "layout": train_cfg.layout, "model_parallel": train_cfg.model_parallel,
        "remat": train_cfg.remat, "grad_accum_steps": train_cfg.grad_accum_steps,
    }
    return plan(
        model_cfg.backbone, train_cfg.batch_size, precision=train_cfg.precision,
        frozen_blocks=vit.layers if train_cfg.freeze_backbone else train_cfg.frozen_blocks,
        optimizer=train_cfg.optimizer, device=device, image_size=vit.image_size, num_classes=num_classes,
        embedding_dim=model_cfg.embedding_dim, hidden_dim=model_cfg.hidden_dim,
        subcenters=model_cfg.head.subcenters, patch_stride=vit.patch_stride,
        neck_branches=model_cfg.neck_branches, **forced,
    )
