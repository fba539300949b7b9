"""metrics.py: hand-worked numbers for accuracy, PGR (Fieller), paired differences (McNemar, stratified over
seeds), MDE, CIs, best round, answer normalisation."""
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


def test_paired_moments_is_mcnemar_variance_by_hand():
    new = np.array([1, 1, 0, 0, 1])
    base = np.array([1, 0, 1, 0, 0])
    mean, cov, n = M.paired_moments(new - base)
    # d = [0, 1, -1, 0, 1]: mean 0.2; p10 = 2/5 (new right, base wrong), p01 = 1/5;
    # McNemar: var = (p10 + p01 - (p10 - p01)^2) / n = (0.6 - 0.04) / 5 = 0.112
    assert n == 5 and mean[0] == pytest.approx(0.2)
    assert cov[0, 0] == pytest.approx(0.112)
    # two arrays: covariance of their means, population form / n
    _, cov2, _ = M.paired_moments([1, 0, 1, 0], [1, 1, 0, 0])
    assert cov2 == pytest.approx(np.array([[0.25, 0.0], [0.0, 0.25]]) / 4)
    with pytest.raises(ValueError):
        M.paired_moments([])


def test_stratified_difference_sums_within_seed_variances():
    # seed 0: difference 0.2 with variance 0.112; seed 1: 0.0 with variance 0.05
    mean, cov = M.stratified([(np.array([0.2]), np.array([[0.112]])), (np.array([0.0]), np.array([[0.05]]))])
    assert mean[0] == pytest.approx(0.1)
    assert cov[0, 0] == pytest.approx((0.112 + 0.05) / 4)  # 0.0405
    assert M.between_seed_sd([0.2, 0.0]) == pytest.approx(math.sqrt(0.02))
    assert math.isnan(M.between_seed_sd([0.2]))


def test_normal_ci_and_mde():
    lo, hi = M.normal_ci(5.0, 2.0)
    assert (lo, hi) == (pytest.approx(5.0 - 3.919928), pytest.approx(5.0 + 3.919928))
    # (z_0.975 + z_0.8) = 1.959964 + 0.841621
    assert M.mde(1.0) == pytest.approx(2.801585, abs=1e-6)
    assert M.mde(0.0) == 0.0


def test_pgr_fieller_by_hand():
    # a = student - weak = 0.1, b = ceiling - weak = 0.2; var(a) = var(b) = 4e-4, cov = 2e-4; z^2 = 3.841459
    # rho^2 (b^2 - z^2 vbb) - 2 rho (ab - z^2 vab) + (a^2 - z^2 vaa) <= 0:
    # 0.0384634 rho^2 - 2 * 0.0192317 rho + 0.0084634 <= 0  ->  rho in [0.326905, 0.673095]
    value, lo, hi, reason = M.pgr_fieller(0.1, 0.2, 4e-4, 4e-4, 2e-4)
    assert (value, reason) == (pytest.approx(0.5), "")
    assert lo == pytest.approx(0.326905, abs=1e-6) and hi == pytest.approx(0.673095, abs=1e-6)
    z2 = 1.959964 ** 2
    for rho in (lo, hi):  # the end points solve (a - rho b)^2 = z^2 var(a - rho b)
        assert (0.1 - rho * 0.2) ** 2 == pytest.approx(z2 * (4e-4 - 2 * rho * 2e-4 + rho * rho * 4e-4), rel=1e-4)


def test_pgr_fieller_missing_exactly_where_the_gap_is_not_resolved():
    # the gap b = 0.03 with sd 0.02: its interval 0.03 -+ 0.039 includes 0, and Fieller's set is unbounded
    assert M.pgr_fieller(0.02, 0.03, 4e-4, 4e-4, 1e-4)[3] == M.GAP_UNRESOLVED
    assert all(math.isnan(v) for v in M.pgr_fieller(0.02, 0.03, 4e-4, 4e-4, 1e-4)[:3])
    assert M.pgr_fieller(0.02, -0.2, 4e-4, 4e-4, 1e-4)[3] == M.GAP_NOT_POSITIVE
    assert M.pgr_fieller(0.02, 0.0, 0.0, 0.0, 0.0)[3] == M.GAP_NOT_POSITIVE
    # just resolved: b = 0.05 > 1.96 * 0.02 = 0.0392
    assert M.pgr_fieller(0.02, 0.05, 4e-4, 4e-4, 1e-4)[3] == ""


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
