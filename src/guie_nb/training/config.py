"""The training hyper-parameters: a plain dataclass that notebooks fill from their parameters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from guie_nb.data.resampling import check_min_draws

OPTIMIZERS = ("adamw", "sgd")
LAYOUTS = ("data_parallel", "model_parallel")  # guie_nb.model.sharding
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # global batch, split over the devices
    learning_rate: float = 1e-3
    end_learning_rate_ratio: float = 0.01  # cosine decays to this fraction of the peak
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only (Nesterov)
    grad_clip_norm: float | None = None
    label_smoothing: float = 0.0
    # learning rate per parameter group: backbone x multiplier x layer_decay^(depth from the top)
    backbone_lr_multiplier: float = 1.0
    layer_decay: float = 1.0
    frozen_blocks: int = 0  # patch embedding + the first N transformer blocks stay fixed
    freeze_backbone: bool = False  # train only projection + head (1st place, stage 1)
    freeze_head: bool = False  # tune the backbone against fixed class centres (1st place, stage 2)
    # Embed once, then train only the neck + head on the stored backbone features
    # (guie_nb.training.cached; 5th place). Needs freeze_backbone. The cache holds each image under
    # the deterministic evaluation preprocessing (resize_images with the model's resize_mode, no
    # augmentation): the features the exported model's backbone computes at scoring time. A frozen
    # backbone sees the same pixels every epoch, so one random augmentation draw would add no
    # variety, only a shift away from the scorer's input. Runs one compiled call per epoch
    # (steps_per_execution, checkpoint_every and remat do not apply: a checkpoint after every
    # epoch); the cache, the expensive part, resumes shard by shard.
    cached_embeddings: bool = False
    steps_per_epoch: int | None = None  # None: one pass over the training images
    steps_per_execution: int = 1  # steps fused into one compiled call (lax.scan)
    precision: str = "float32"
    checkpoint_every: int = 0  # steps between checkpoints (0: only at epoch ends)
    keep_checkpoints: int = 2
    layout: str = "data_parallel"  # or "model_parallel" (guie_nb.model.sharding / memory_plan)
    model_parallel: int | None = None  # model_parallel: size of the mesh's model axis (1: FSDP)
    # memory (guie_nb.model.memory_plan.plan_for says whether a config fits):
    remat: bool = False  # recompute each ViT block's forward in the backward pass (~1/3 more FLOPs)
    grad_accum_steps: int = 1  # split batch_size into this many micro-batches, one update per batch
    # train on these data-prep sources only (their `name`s, e.g. ["products10k"] for the 1st place's
    # last stage); None: all. The label space and the validation split stay the data-prep's.
    train_sources: list[str] | None = None
    # class resampling (2nd place: 20, after capping classes at 100 images in data-prep): a class
    # with n_c < m training images is drawn m times per epoch in expectation (each image m / n_c
    # times, stochastically rounded; guie_nb.data.resampling), a larger class once per image; an
    # epoch (steps_per_epoch None) is the resampled stream, sum_c max(n_c, m) images. 0: off.
    min_draws_per_class: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; choose one of {LAYOUTS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.epochs < 1 or self.batch_size < 1 or self.steps_per_execution < 1:
            raise ValueError("epochs, batch_size and steps_per_execution must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.checkpoint_every < 0 or self.checkpoint_every % self.steps_per_execution:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a non-negative multiple "
                             f"of steps_per_execution ({self.steps_per_execution})")
        if self.steps_per_epoch is not None and self.steps_per_epoch % self.steps_per_execution:
            raise ValueError(f"steps_per_epoch ({self.steps_per_epoch}) must be a multiple of "
                             f"steps_per_execution ({self.steps_per_execution})")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")
        if self.cached_embeddings and not self.freeze_backbone:
            raise ValueError("cached_embeddings trains the neck and head on stored backbone features, so the "
                             "backbone cannot train: set freeze_backbone=True (or cached_embeddings=False)")
        if self.cached_embeddings and self.grad_accum_steps != 1:
            raise ValueError("cached_embeddings keeps no backbone activations, so there is nothing for "
                             f"grad_accum_steps={self.grad_accum_steps} to save: leave it at 1")
        if self.train_sources is not None and (isinstance(self.train_sources, str) or not self.train_sources
                                               or not all(isinstance(n, str) and n for n in self.train_sources)):
            raise ValueError(f"train_sources must be None or a non-empty list of source names, "
                             f"got {self.train_sources!r}")
        check_min_draws(self.min_draws_per_class)
        if self.grad_accum_steps < 1 or self.batch_size % self.grad_accum_steps:
            raise ValueError(f"grad_accum_steps ({self.grad_accum_steps}) must be >= 1 and divide "
                             f"batch_size ({self.batch_size}) into equal micro-batches")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (everything that changes the trajectory).

        `remat` is left out: it recomputes the same values, so a run that ran out of memory can
        resume with it switched on. `grad_accum_steps` stays in: the update is the same up to float
        rounding, but dropout draws its masks once per micro-batch, so the RNG stream differs. At 1
        it is left out, so checkpoints written before it existed still resume.
        """
        d = self.to_dict()
        for k in ("keep_checkpoints", "checkpoint_every", "remat"):
            d.pop(k)
        if d["grad_accum_steps"] == 1:
            d.pop("grad_accum_steps")
        if not d["cached_embeddings"]:  # off: left out, like grad_accum_steps at 1
            d.pop("cached_embeddings")
        if d["train_sources"] is None:  # left out when unset: older checkpoints still resume
            d.pop("train_sources")
        if not d["min_draws_per_class"]:  # off: left out, so older checkpoints still resume
            d.pop("min_draws_per_class")
        return json.dumps(d, sort_keys=True)
