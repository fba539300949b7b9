"""PURE scoring math: answer normalisation, accuracy, best round, bootstrap and seed CIs, paired comparisons
(one estimator), their MDE, and PGR with its Fieller interval.

Arrays in, numbers out; no I/O, no frames of files, no globals. Everything is testable with numbers
worked by hand. Conventions:

- Accuracies are fractions in [0, 1]; improvements are **accuracy points** (x100), as the paper states
  its claims (+4 ID / +6 OOD for experts, +3.2 / +2.28 for students).
- One accuracy gets a percentile bootstrap CI over its examples (`resample_weights`, seeded: the same
  inputs give the same bytes; `n_boot = 0` disables it).
- Every paired comparison of two models (improvements, gaps) uses ONE estimator, for its CI, its minimum
  detectable effect and its verdict alike: the seed-stratified paired difference (`paired_moments` per
  seed, `stratified`). Each seed contributes the mean of its per-question differences and the within-seed
  (McNemar) variance of that mean; the estimate is the mean over seeds, its variance the sum of the
  within-seed variances over S^2. It is conditional on the trained models (the seeds' models are fixed);
  the between-seed SD of the per-seed differences is reported beside it.
- PGR is a ratio of two such paired differences, (student - weak) / (ceiling - weak), from seed-pooled
  accuracies, with a Fieller interval (`pgr_fieller`). Its interval is bounded exactly when the gap's
  interval from the same estimator excludes 0; where it does not, or the gap is <= 0, PGR is missing
  (NaN) with the reason.
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Mapping, Sequence

import numpy as np
from scipy import special  # ndtri / stdtrit: the quantiles scipy.stats' norm and t use, without its import time

LEVEL = 0.95

# ---------------------------------------------------------------------------------------------
# generative exact match


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lowercase; punctuation (ASCII and Unicode) becomes a space; drop articles
    (a, an, the); collapse whitespace.

    Generated answers start with the space of lm-eval's target delimiter and may end with a period;
    neither should decide whether the answer is right.
    """
    text = text.lower()
    text = "".join(" " if (ch in _PUNCT or unicodedata.category(ch).startswith("P")) else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> int:
    """1 when the normalised prediction equals the normalised reference, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(reference))


# ---------------------------------------------------------------------------------------------
# point estimates


def accuracy(correct: Sequence[float]) -> float:
    """Mean of per-example 0/1 scores; NaN for no examples."""
    x = np.asarray(correct, dtype=float)
    return float(x.mean()) if x.size else math.nan


def best_round(val_acc: Mapping[int, float]) -> int:
    """r* = argmax over rounds of validation accuracy; ties go to the smaller r; NaN entries are ignored.

    Selection uses `val` only, never a test split (the caller passes val accuracies).
    """
    finite = {int(r): float(a) for r, a in val_acc.items() if a is not None and np.isfinite(a)}
    if not finite:
        raise ValueError("best_round needs at least one round with a finite validation accuracy")
    top = max(finite.values())
    return min(r for r, a in finite.items() if a == top)


# ---------------------------------------------------------------------------------------------
# confidence intervals


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) bootstrap weights: row b counts how often resample b draws each example, divided by n,
    so `weights @ correct` gives the n_boot resampled accuracies in one product.

    One matrix per split, shared by every model scored on it, pairs all CIs on that split (and is ~4x
    cheaper than gathering resampled indices per model). n_boot = 0 gives an empty matrix: NaN CIs.
    """
    if n == 0:
        return np.zeros((n_boot, 0))
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n


def percentile_ci(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap samples; non-finite samples (a PGR whose resampled gap is 0) are
    left out; NaN bounds when none is finite."""
    samples = np.asarray(samples, dtype=float)
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _resampled(weights: np.ndarray, *arrays) -> list[np.ndarray]:
    xs = [np.asarray(a, dtype=float) for a in arrays]
    if any(x.shape != (weights.shape[1],) for x in xs):
        raise ValueError(f"per-example arrays of lengths {[x.size for x in xs]} do not match "
                         f"{weights.shape[1]} bootstrap weights")
    return [weights @ x for x in xs]  # each (n_boot,)


def bootstrap_ci(correct, weights: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of the accuracy."""
    return percentile_ci(*_resampled(weights, correct), level=level)


# ---------------------------------------------------------------------------------------------
# paired comparisons: one estimator (seed-stratified paired difference), its MDE, and PGR (Fieller)

Z_LEVEL = float(special.ndtri(0.5 + LEVEL / 2.0))  # 1.959964: two-sided 5%
Z_POWER = float(special.ndtri(0.80))  # 0.841621: 80% power
GAP_NOT_POSITIVE = "gap <= 0"
GAP_UNRESOLVED = "gap CI includes 0"


def paired_moments(*arrays) -> tuple[np.ndarray, np.ndarray, int]:
    """Means and covariance matrix of the MEANS of paired per-question scores of one seed.

    arrays: k per-question arrays of equal length n (the same questions in the same order). Returns
    (means (k,), cov (k, k), n) with cov = the population covariance of the per-question values / n:
    for a difference of two 0/1 arrays, var = (p10 + p01 - (p10 - p01)^2) / n, McNemar's variance of
    the difference of paired proportions.
    """
    x = np.vstack([np.asarray(a, dtype=float) for a in arrays])  # (k, n)
    n = x.shape[1]
    if n == 0:
        raise ValueError("paired comparison of no questions")
    centred = x - x.mean(axis=1, keepdims=True)
    return x.mean(axis=1), centred @ centred.T / n / n, n


def stratified(per_seed: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of per-seed means, and its covariance: sum of the within-seed covariances / S^2."""
    means = np.vstack([np.atleast_1d(m) for m, _ in per_seed])
    covs = np.stack([np.atleast_2d(c) for _, c in per_seed])
    s = len(per_seed)
    return means.mean(axis=0), covs.sum(axis=0) / (s * s)


def normal_ci(value: float, se: float, level: float = LEVEL) -> tuple[float, float]:
    """value -+ z * se (the interval of the stratified paired difference)."""
    half = float(special.ndtri(0.5 + level / 2.0)) * se
    return value - half, value + half


def mde(se: float) -> float:
    """Minimum detectable effect at 80% power and 5% two-sided level: (z_0.975 + z_0.8) * SE."""
    return (Z_LEVEL + Z_POWER) * se


def between_seed_sd(values: Sequence[float]) -> float:
    """SD (ddof 1) of per-seed estimates; NaN for fewer than two seeds."""
    x = np.asarray(values, dtype=float)
    return float(x.std(ddof=1)) if x.size >= 2 else math.nan


def pgr_fieller(a: float, b: float, vaa: float, vbb: float, vab: float,
                level: float = LEVEL) -> tuple[float, float, float, str]:
    """PGR = a / b with a = student - weak, b = ceiling - weak (paired differences; their variances and
    covariance from the same estimator), and Fieller's interval: the rho with
    (a - rho b)^2 <= z^2 Var(a - rho b). It is a bounded interval iff b^2 > z^2 vbb, i.e. iff the gap's
    interval b -+ z sqrt(vbb) excludes 0. Returns (pgr, low, high, reason); where the gap is <= 0 or its
    interval includes 0, all three numbers are NaN and the reason says which ('' when reported).
    """
    if not b > 0:
        return math.nan, math.nan, math.nan, GAP_NOT_POSITIVE
    z2 = float(special.ndtri(0.5 + level / 2.0)) ** 2
    quad = b * b - z2 * vbb  # coefficient of rho^2
    if not quad > 0:
        return math.nan, math.nan, math.nan, GAP_UNRESOLVED
    lin = a * b - z2 * vab
    const = a * a - z2 * vaa
    root = math.sqrt(max(lin * lin - quad * const, 0.0))  # >= 0 whenever quad > 0 (a / b is inside)
    return a / b, (lin - root) / quad, (lin + root) / quad, ""


def seed_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, int]:
    """Mean over seeds and its Student-t interval: mean +- t_{k-1} * sd / sqrt(k).

    With a handful of seeds (k = 3..5) a bootstrap over seeds has too few distinct resamples to give a
    usable interval; the t-interval is the standard small-sample choice. Non-finite values (a seed
    whose PGR is undefined) are left out; returns (mean, low, high, k) with NaN bounds when k < 2.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    k = int(x.size)
    if k == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if k < 2:
        return mean, math.nan, math.nan, k
    half = float(special.stdtrit(k - 1, 0.5 + level / 2.0) * x.std(ddof=1) / math.sqrt(k))
    return mean, mean - half, mean + half, k
