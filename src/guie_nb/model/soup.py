"""Weight soups: one model whose weights are the average of several fine-tuned runs' weights.

Source: Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time" (ICML 2022). Averaging only works for runs of one
architecture fine-tuned from the same pretrained initialisation (they lie in one loss basin); the
GUIE winners souped fine-tunes of one backbone (1st place: 224 px + 280 px runs, 0.671 -> 0.680;
4th place: soups of ViT-L-14-336 and ViT-H-14 fine-tunes).

- uniform soup: the arithmetic mean of every run's weights;
- greedy soup (the paper's Algorithm 1): runs sorted by their own validation score, best first; a
  run joins the soup only if the soup's validation score with it is not lower than without it.
  Scored here with the held-out mP@5 (`guie_nb.evaluation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SOUP_MODES = ("uniform", "greedy")
Weights = list[np.ndarray]  # one model's `get_weights()`, in the model's variable order

# settings that do not change the embedding model's weights (training-only or how they were initialised)
_WEIGHTLESS = ("head", "dropout", "backbone_weights")


def uniform_soup(runs: Sequence[Weights]) -> Weights:
    """Element-wise mean of the runs' weights (float64 sum, cast back to each variable's dtype).

    Raises ValueError for no runs, a different number of variables, or mismatched shapes.
    Non-float variables (counters) must be equal across runs and are kept as they are.
    """
    if not runs:
        raise ValueError("a soup needs at least one run")
    first = runs[0]
    for i, run in enumerate(runs[1:], 1):
        if len(run) != len(first):
            raise ValueError(f"run {i} has {len(run)} variables, run 0 has {len(first)}: not one architecture")
        for j, (a, b) in enumerate(zip(first, run)):
            if np.shape(a) != np.shape(b):
                raise ValueError(f"run {i} variable {j} has shape {np.shape(b)}, run 0 {np.shape(a)}")
    out = []
    for j, w in enumerate(first):
        w = np.asarray(w)
        stack = [np.asarray(run[j]) for run in runs]
        if not np.issubdtype(w.dtype, np.floating):
            if any(not np.array_equal(w, s) for s in stack):
                raise ValueError(f"non-float variable {j} differs between runs: cannot average it")
            out.append(w)
            continue
        out.append((np.sum([s.astype(np.float64) for s in stack], axis=0) / len(runs)).astype(w.dtype))
    return out


@dataclass
class GreedySoup:
    """The greedy soup's weights, the chosen runs (indices into the input, in the order they joined),
    every run's own score, and the soup's score after each accepted run."""

    weights: Weights
    chosen: list[int]
    individual_scores: list[float]
    soup_scores: list[float] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.soup_scores[-1]


def greedy_soup(runs: Sequence[Weights], score: Callable[[Weights], float]) -> GreedySoup:
    """Wortsman et al.'s greedy soup: `score(weights)` is the validation score (higher is better).

    Each run is scored alone, then visited best first (ties: input order); a run is added when the
    uniform soup of the chosen runs plus it scores >= the current soup. Scores `len(runs)` models
    alone plus `len(runs) - 1` candidate soups.
    """
    if not runs:
        raise ValueError("a soup needs at least one run")
    individual = [float(score(list(run))) for run in runs]
    order = sorted(range(len(runs)), key=lambda i: (-individual[i], i))
    chosen, best = [order[0]], individual[order[0]]
    weights = list(runs[order[0]])
    history = [best]
    for i in order[1:]:
        candidate = uniform_soup([runs[j] for j in chosen + [i]])
        s = float(score(candidate))
        if s >= best:
            chosen, best, weights = chosen + [i], s, candidate
            history.append(s)
    return GreedySoup(weights, chosen, individual, history)


def comparable_config(config: dict) -> dict:
    """A model config without the settings that do not shape the embedding model's weights."""
    return {k: v for k, v in config.items() if k not in _WEIGHTLESS}


def soup_runs(model_dirs: Sequence[str | Path], mode: str, score: Callable | None = None):
    """Load the run folders (model_config.json + embedding weights), check they are one
    architecture, and soup them. Returns `(cfg, model, summary)`: the first run's config, an
    embedding model holding the soup, and `{"mode", "model_dirs", "chosen", "individual_scores",
    "soup_scores"}`. `score(model) -> float` (validation mP@5) is required for `greedy`.
    """
    from guie_nb.run_dir import load_embedding_model

    if mode not in SOUP_MODES:
        raise ValueError(f"unknown soup mode {mode!r}; choose one of {SOUP_MODES}")
    if mode == "greedy" and score is None:
        raise ValueError("a greedy soup needs a validation score function")
    if len(model_dirs) < 2:
        raise ValueError(f"a soup needs at least 2 run folders, got {list(model_dirs)}")
    model, cfg = load_embedding_model(model_dirs[0])
    runs = [model.get_weights()]
    for d in model_dirs[1:]:
        other, other_cfg = load_embedding_model(d)
        if comparable_config(other_cfg.to_dict()) != comparable_config(cfg.to_dict()):
            diff = sorted(k for k, v in comparable_config(other_cfg.to_dict()).items()
                          if comparable_config(cfg.to_dict()).get(k) != v)
            raise ValueError(f"{d} is not the architecture of {model_dirs[0]} (differs in {diff}): "
                             "a soup averages runs of one architecture")
        runs.append(other.get_weights())
    summary = {"mode": mode, "model_dirs": [str(d) for d in model_dirs]}
    if mode == "uniform":
        model.set_weights(uniform_soup(runs))
        return cfg, model, {**summary, "chosen": list(range(len(runs)))}

    def score_weights(weights: Weights) -> float:
        model.set_weights(weights)
        return score(model)

    soup = greedy_soup(runs, score_weights)
    model.set_weights(soup.weights)
    return cfg, model, {**summary, "chosen": soup.chosen, "individual_scores": soup.individual_scores,
                        "soup_scores": soup.soup_scores}
