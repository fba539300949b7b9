"""metrics.py: hand-worked numbers for accuracy, PGR, improvements, CIs, best round, answer normalisation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ensemw2s import metrics as M


@pytest.mark.parametrize(
    "text, expected",
    [
        (" Bright red.", "bright red"),
        ("The  mitochondria", "mitochondria"),
        ("an apple, a pear", "apple pear"),
        ("Carbon-dioxide!", "carbon dioxide"),
        ("«Théâtre»", "théâtre"),  # Unicode punctuation, accents kept
        ("theory", "theory"),  # articles only as whole words
        ("\tA\n", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert M.normalize_answer(text) == expected


def test_exact_match_ignores_case_punctuation_articles_and_spaces():
    assert M.exact_match(" The Carbon dioxide.", "carbon dioxide") == 1
    assert M.exact_match("carbon monoxide", "carbon dioxide") == 0
    assert M.exact_match("carbon dioxide and water", "carbon dioxide") == 0


def test_accuracy():
    assert M.accuracy([1, 0, 1, 1]) == 0.75
    assert math.isnan(M.accuracy([]))


def test_pgr_hand_worked():
    # weak 0.50, ceiling 0.70: the student at 0.60 recovers half of the 0.20 gap
    assert M.pgr(0.60, 0.50, 0.70) == pytest.approx(0.5)
    assert M.pgr(0.70, 0.50, 0.70) == pytest.approx(1.0)
    assert M.pgr(0.45, 0.50, 0.70) == pytest.approx(-0.25)
    assert M.pgr(0.80, 0.50, 0.70) == pytest.approx(1.5)


def test_pgr_is_nan_not_inf_when_gap_is_zero():
    assert math.isnan(M.pgr(0.6, 0.5, 0.5))
    assert math.isnan(M.pgr(0.5, 0.5, 0.5))


def test_improvement_in_points():
    assert M.improvement(0.54, 0.50) == pytest.approx(4.0)
    assert M.improvement(0.50, 0.54) == pytest.approx(-4.0)


def test_best_round_argmax_ties_to_smaller_round_and_ignores_nan():
    assert M.best_round({1: 0.50, 2: 0.60, 3: 0.55}) == 2
    assert M.best_round({3: 0.60, 1: 0.60, 2: 0.40}) == 1
    assert M.best_round({1: float("nan"), 2: 0.3}) == 2
    with pytest.raises(ValueError):
        M.best_round({1: float("nan")})


def _bits(acc: float, n: int, seed: int) -> np.ndarray:
    """n 0/1 values whose mean is exactly `acc` (shuffled)."""
    x = np.zeros(n, dtype=int)
    x[: round(acc * n)] = 1
    return np.random.default_rng(seed).permutation(x)


def test_resample_weights_are_seeded_draw_counts():
    w = M.resample_weights(50, 200, seed=1)
    counts = w * 50
    assert w.shape == (200, 50)
    assert np.allclose(counts, np.round(counts)) and (counts >= 0).all()
    assert np.allclose(counts.sum(axis=1), 50)  # each resample draws n examples
    assert np.array_equal(w, M.resample_weights(50, 200, seed=1))
    assert not np.array_equal(w, M.resample_weights(50, 200, seed=2))
    x = _bits(0.3, 50, 0)
    b = 7  # resampled accuracy = mean over the drawn examples, each counted as often as drawn
    drawn = np.repeat(np.arange(50), np.round(counts[b]).astype(int))
    assert (w @ x)[b] == pytest.approx(x[drawn].mean())


def test_bootstrap_ci_contains_point_estimate():
    x = _bits(0.6, 200, 0)
    lo, hi = M.bootstrap_ci(x, M.resample_weights(200, 1000, seed=7))
    assert lo < 0.6 < hi
    # normal approximation: half-width ~ 1.96 * sqrt(0.24 / 200) = 0.068
    assert 0.05 < (hi - lo) / 2 < 0.09


def test_bootstrap_disabled_or_constant():
    assert all(math.isnan(v) for v in M.bootstrap_ci([1, 0, 1], M.resample_weights(3, 0, seed=0)))
    assert M.bootstrap_ci([1, 1, 1, 1], M.resample_weights(4, 100, seed=0)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="do not match"):
        M.bootstrap_ci([1, 0], M.resample_weights(3, 10, seed=0))


def test_pgr_ci_is_paired_and_contains_estimate():
    n = 400
    weak = _bits(0.5, n, 1)
    ceiling = _bits(0.8, n, 2)
    student = weak.copy()
    student[np.flatnonzero(weak == 0)[: int(0.15 * n)]] = 1  # exactly 60 extra right: acc 0.65
    point = M.pgr(M.accuracy(student), M.accuracy(weak), M.accuracy(ceiling))
    assert point == pytest.approx(0.5)
    lo, hi = M.pgr_ci(student, weak, ceiling, M.resample_weights(n, 1000, seed=3))
    assert lo < point < hi


def test_pgr_ci_skips_resamples_with_zero_gap():
    # weak == ceiling on every example: every resample has gap 0, so no interval (NaN), never inf
    same = _bits(0.5, 50, 0)
    lo, hi = M.pgr_ci(_bits(0.6, 50, 1), same, same, M.resample_weights(50, 200, seed=0))
    assert math.isnan(lo) and math.isnan(hi)


def test_paired_difference_ci():
    base = _bits(0.5, 300, 4)
    new = base.copy()
    new[np.flatnonzero(base == 0)[:15]] = 1  # +5 points on the same examples, no example lost
    lo, hi = M.difference_ci(new, base, M.resample_weights(300, 1000, seed=0), scale=100.0)
    assert lo <= 5.0 <= hi
    assert lo >= 0.0  # paired: the new model never loses an example, so no resample is below 0


def test_seed_ci_t_interval_by_hand():
    mean, lo, hi, k = M.seed_ci([0.50, 0.60, 0.55])
    # sd = 0.05, t_{0.975, 2} = 4.302653: half-width = 4.302653 * 0.05 / sqrt(3) = 0.124207
    assert (mean, k) == (pytest.approx(0.55), 3)
    assert hi - mean == pytest.approx(0.124207, abs=1e-6)
    assert mean - lo == pytest.approx(0.124207, abs=1e-6)


def test_seed_ci_single_seed_and_nan_seeds():
    assert M.seed_ci([0.4])[:1] == (0.4,) and math.isnan(M.seed_ci([0.4])[1])
    mean, lo, hi, k = M.seed_ci([0.4, float("nan"), 0.6])
    assert k == 2 and mean == pytest.approx(0.5) and lo < 0.5 < hi
