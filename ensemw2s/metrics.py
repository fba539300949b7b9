"""PURE scoring math: answer normalisation, accuracy, PGR, improvements, bootstrap and seed CIs, best round.

Arrays in, numbers out; no I/O, no frames of files, no globals. Everything is testable with numbers
worked by hand. Conventions:

- Accuracies are fractions in [0, 1]; improvements are **accuracy points** (x100), as the paper states
  its claims (+4 ID / +6 OOD for experts, +3.2 / +2.28 for students).
- Paired quantities (PGR, improvements, gaps) take per-example 0/1 arrays scored on the **same rows in
  the same order**; their bootstrap resamples one set of example indices for all arrays, so the CI
  reflects the per-example correlation between the models.
- A ratio whose denominator is 0 is NaN, never inf: PGR is undefined when the ceiling-weak gap is 0.
- Bootstrap CIs are percentile intervals over resamples drawn by a seeded `numpy.random.Generator`
  (`resample_weights`): the same inputs and seed give the same bytes. `n_boot = 0` disables them.
"""
from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

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


def pgr(student: float, weak: float, ceiling: float) -> float:
    """Performance gap recovered: (student - weak) / (ceiling - weak); NaN when the gap is 0."""
    return float(_pgr(np.float64(student), np.float64(weak), np.float64(ceiling)))


def _pgr(student: np.ndarray, weak: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """Elementwise PGR; NaN where the gap is 0 (or not finite)."""
    gap = ceiling - weak
    ok = np.isfinite(gap) & (gap != 0)
    return np.where(ok, (student - weak) / np.where(ok, gap, 1.0), np.nan)


def improvement(new: float, base: float) -> float:
    """Accuracy points gained by `new` over `base`: 100 * (new - base)."""
    return float(100.0 * (new - base))


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


def pgr_ci(student, weak, ceiling, weights: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Paired bootstrap CI of PGR: the same resamples of the examples for student, weak and ceiling."""
    return percentile_ci(_pgr(*_resampled(weights, student, weak, ceiling)), level=level)


def difference_ci(new, base, weights: np.ndarray, scale: float = 1.0, level: float = LEVEL) -> tuple[float, float]:
    """Paired bootstrap CI of scale * (acc(new) - acc(base)) (scale 100 for accuracy points)."""
    a, b = _resampled(weights, new, base)
    return percentile_ci(scale * (a - b), level=level)


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
    half = float(stats.t.ppf(0.5 + level / 2.0, k - 1) * x.std(ddof=1) / math.sqrt(k))
    return mean, mean - half, mean + half, k
