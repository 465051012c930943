"""The training hyper-parameters: a plain dataclass that notebooks fill from their parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    end_learning_rate_ratio: float = 0.01  # cosine decays to this fraction of the peak
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only
    steps_per_epoch: int | None = None  # None: one pass over the training images
    steps_per_execution: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
