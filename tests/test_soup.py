"""Weight soups: uniform is the arithmetic mean, greedy picks what Wortsman et al.'s Algorithm 1
picks, and run folders of different architectures are refused."""

from __future__ import annotations

import numpy as np
import pytest

from _export_helpers import save_demo_model
from guie_nb.model.soup import greedy_soup, soup_runs, uniform_soup


def test_uniform_soup_is_the_arithmetic_mean():
    rng = np.random.default_rng(0)
    runs = [[rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=5).astype("float32")] for _ in range(3)]
    soup = uniform_soup(runs)
    np.testing.assert_allclose(soup[0], (runs[0][0] + runs[1][0] + runs[2][0]) / 3, rtol=1e-6)
    np.testing.assert_allclose(soup[1], (runs[0][1] + runs[1][1] + runs[2][1]) / 3, rtol=1e-6)
    assert soup[0].dtype == np.float32
    with pytest.raises(ValueError, match=r"run 1 variable 0 has shape \(2, 4\), run 0 \(3, 4\)"):
        uniform_soup([runs[0], [np.zeros((2, 4)), runs[1][1]]])
    with pytest.raises(ValueError, match="run 1 has 1 variables, run 0 has 2"):
        uniform_soup([runs[0], runs[1][:1]])


def test_greedy_soup_picks_the_expected_subset():
    """One weight w per run; the validation score is -(w - 1)^2 (best at 1).
    Runs: 1.4 (-0.16), 0.5 (-0.25), 1.5 (-0.25), 3.0 (-4), 0.8 (-0.04).
    Order by own score: 0.8, 1.4, then 0.5 / 1.5 (tie: input order), 3.0.
    {0.8} -0.04 -> +1.4: mean 1.1, -0.01 accepted -> +0.5: mean 0.9, -0.01 >= -0.01 accepted (not lower)
    -> +1.5: mean 1.05, -0.0025 accepted -> +3.0: mean 1.44, -0.19 rejected."""
    values = [1.4, 0.5, 1.5, 3.0, 0.8]
    runs = [[np.array([v], dtype=np.float64)] for v in values]
    calls = []

    def score(weights):
        calls.append(float(weights[0][0]))
        return -float((weights[0][0] - 1.0) ** 2)

    soup = greedy_soup(runs, score)
    assert soup.chosen == [4, 0, 1, 2]
    np.testing.assert_allclose(soup.weights[0], [np.mean([0.8, 1.4, 0.5, 1.5])])
    np.testing.assert_allclose(soup.individual_scores, [-0.16, -0.25, -0.25, -4.0, -0.04])
    np.testing.assert_allclose(soup.soup_scores, [-0.04, -0.01, -0.01, -0.0025])
    assert len(calls) == 5 + 4  # each run alone, then one candidate soup per remaining run


def test_greedy_soup_keeps_the_best_run_alone_when_every_mix_is_worse():
    runs = [[np.array([1.0])], [np.array([5.0])], [np.array([-3.0])]]
    soup = greedy_soup(runs, lambda w: -abs(float(w[0][0]) - 1.0))
    assert soup.chosen == [0] and soup.weights[0][0] == 1.0


def test_soup_of_run_folders(tmp_path):
    """Two demo-tiny runs as the trainer writes them: the uniform soup's weights are their mean,
    a greedy soup scores through the callback, another architecture is refused."""
    a = save_demo_model(tmp_path / "a", seed=0, embedding_dim=16)
    b = save_demo_model(tmp_path / "b", seed=1, embedding_dim=16,
                        head={"kind": "cosface"})  # a training-only difference: still one architecture
    from guie_nb.run_dir import load_embedding_model

    wa, wb = load_embedding_model(a)[0].get_weights(), load_embedding_model(b)[0].get_weights()
    _, model, summary = soup_runs([a, b], "uniform")
    for got, x, y in zip(model.get_weights(), wa, wb):
        np.testing.assert_allclose(got, (x.astype(np.float64) + y) / 2, rtol=1e-6, atol=1e-7)
    assert summary["chosen"] == [0, 1]

    # greedy with a score that prefers run b's projection kernel: b alone first, a's addition rejected
    target = np.asarray(load_embedding_model(b)[0].get_layer("projection").kernel)

    def score(m):
        return -float(np.abs(np.asarray(m.get_layer("projection").kernel) - target).sum())

    _, model, summary = soup_runs([a, b], "greedy", score)
    assert summary["chosen"] == [1]
    np.testing.assert_allclose(np.asarray(model.get_layer("projection").kernel), target)

    c = save_demo_model(tmp_path / "c", seed=0, embedding_dim=32)
    with pytest.raises(ValueError, match=r"is not the architecture of .* \(differs in \['embedding_dim'\]\)"):
        soup_runs([a, c], "uniform")
    with pytest.raises(ValueError, match="needs a validation score"):
        soup_runs([a, b], "greedy")
    with pytest.raises(FileNotFoundError, match=r"no model_config.json in .*missing"):
        soup_runs([a, tmp_path / "missing"], "uniform")
