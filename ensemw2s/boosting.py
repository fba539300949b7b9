"""Token-level AdaBoost math (METHOD.md "Token-level boosting"), as pure functions on tensors.

A weight distribution D lives on answer tokens only. Every function accepts D in any shape: the flat
(n,) layout of `weights.pt`, or a padded (B, T) layout where a mask put zero on prompt and padding.
A zero weight stays zero under the update, so prompt and padding never gain mass.
No I/O here: rounds.py reads and writes, training.py turns weights into loss multipliers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ensemw2s.kinds import ALPHA_RULES, TOKEN_WEIGHTINGS

EPS_MIN = 1e-10
EPS_MAX = 1.0 - 1e-10
ALPHA_TOL = 1e-9  # |alpha| below this is chance level: at eps = 1 - 1/K, float rounding leaves alpha = +4e-16


def _check_finite(x: Tensor, what: str, round: int) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"boosting round {round}: {what} contains NaN or inf; the weights of the previous round are "
            f"corrupt or the expert produced non-finite outputs (rerun that round)"
        )


def initial_weights(answer_mask: Tensor) -> Tensor:
    """D_1: 1/n on each of the n answer tokens (mask True), 0 on prompt and padding."""
    mask = answer_mask.bool()
    n = int(mask.sum())
    if n == 0:
        raise ValueError("initial_weights: the mask selects no answer tokens; every row needs a non-empty answer")
    return mask.to(torch.float64) / n


def weighted_error(D: Tensor, miss: Tensor, round: int) -> float:
    """eps_t = sum D * miss, clipped to [1e-10, 1 - 1e-10] so that alpha stays finite.

    A perfect fit (no missed token) has eps = 0 and an infinite alpha; clipped, its alpha would be set by
    the constant 1e-10 (about 34 under samme at K = 50k) and swamp the ensemble. Its error is below what
    the weights resolve, so it is taken as half the smallest token weight (1/(2n) under uniform D): less
    than any expert that misses a token, as the ordering of the alphas needs.
    """
    _check_finite(D, "the token weights D", round)
    D = D.to(torch.float64)
    eps = (D * miss.to(torch.float64)).sum() if miss.any() else D[D > 0].min() / 2
    _check_finite(eps, "the weighted error eps", round)
    return float(eps.clamp(EPS_MIN, EPS_MAX))


@dataclass(frozen=True)
class AlphaRule:
    alpha: Callable[[float, int], float]  # (eps, K) -> the expert's weight in the ensemble
    update_scale: float  # D_{t+1} = D_t exp(update_scale * alpha * miss) / Z (METHOD.md step 6)


def samme_alpha(eps: float, k: int) -> float:
    """log((1-eps)/eps) + log(K-1): the paper's prior term log(1/(1-e) - 1) at chance e = 1 - 1/K."""
    if k < 2:
        raise ValueError(f"samme alpha needs K >= 2 classes, got K={k}")
    return math.log((1.0 - eps) / eps) + math.log(k - 1)


def adaboost_alpha(eps: float, k: int) -> float:
    """0.5 log((1-eps)/eps): binary AdaBoost, as in the authors' early code (K unused)."""
    return 0.5 * math.log((1.0 - eps) / eps)


# samme: a miss is multiplied by (1-eps)/eps (K-1), leaving (K-1)/K of the mass on the misses.
# adaboost: binary AdaBoost's exp(-alpha y h) is exp(2 alpha miss) up to Z; the misses then hold exactly 1/2.
# the alpha rules (config: boosting.alpha), named in ensemw2s/kinds.py
SAMME = AlphaRule(samme_alpha, update_scale=1.0)
ADABOOST = AlphaRule(adaboost_alpha, update_scale=2.0)


def alpha(rule: str, eps: float, k: int) -> float:
    return ALPHA_RULES.get(rule).alpha(eps, k)


class Stop(NamedTuple):
    reason: str
    keeps_expert: bool  # a perfect fit's expert is kept (with its alpha); a chance-level one is not


def check_stop(alpha_t: float, eps: float, rule: str, n_missed: int) -> Stop | None:
    """None while boosting goes on; else why it stops after this round and whether its expert is kept.

    alpha <= 0 (up to rounding): the expert is no better than chance and is dropped. No missed token: the
    weights cannot change, so the next round would train on the same D and repeat this one; the expert
    fits weak_train and is kept.
    """
    if alpha_t <= ALPHA_TOL:
        return Stop(f"alpha = {alpha_t:.6g} <= 0 at weighted error eps = {eps:.6g}: the expert is no better "
                    f"than chance under alpha rule {rule!r}", keeps_expert=False)
    if n_missed == 0:
        return Stop(f"perfect_fit: no answer token missed (eps taken as {eps:.6g}, half the smallest token "
                    f"weight; alpha = {alpha_t:.6g}): the weights cannot change, so boosting ends with this "
                    f"expert", keeps_expert=True)
    return None


def update_weights(D: Tensor, miss: Tensor, alpha_t: float, rule: str, round: int, learning_rate: float = 1.0,
                   uniform_mix: float = 0.0) -> Tensor:
    """D_{t+1} = D_t * exp(s * nu * alpha_t * miss_t) / Z_t, s the rule's update_scale, computed in float64;
    then, with uniform_mix lambda > 0, D_{t+1} <- (1 - lambda) D_{t+1} + lambda / n on the n answer tokens.

    nu (learning_rate) shrinks the update as scikit-learn's AdaBoost does (nu = 1: the plain update);
    lambda keeps every token's weight at lambda / n at least, so no token drops out of resampling.

    float64 because a token never missed shrinks by about 1/((1-eps)K) per samme round: float32 flushes
    it to 0 after 7-8 rounds at K = 50k (it would then never be drawn again); float64 holds ~65 rounds,
    and a weight that still underflows is an error rather than a silent loss of support.
    """
    D = D.to(torch.float64)
    _check_finite(D, "the token weights D", round)
    # s * alpha <= 2 log(1e10) + log(K-1) < 60 after clipping: exp cannot overflow
    new = D * torch.exp(ALPHA_RULES.get(rule).update_scale * learning_rate * alpha_t * miss.to(torch.float64))
    new = new / new.sum()  # Z_t
    if uniform_mix > 0:
        support = (D > 0).to(torch.float64)
        new = (1.0 - uniform_mix) * new + uniform_mix * support / support.sum()
    _check_finite(new, "the updated token weights", round)
    if ((new == 0) & (D > 0)).any():
        raise FloatingPointError(
            f"boosting round {round}: a token weight underflowed to 0 in float64 under alpha rule {rule!r}; "
            f"use fewer boosting.rounds, or a milder rule (boosting.alpha: adaboost, or a smaller boosting.samme_k)"
        )
    return new


def sequence_misses(miss: Tensor, offsets: Tensor) -> Tensor:
    """Broadcast "any token of the answer is missed" over the answer's tokens.

    The sequence variant keeps one weight per answer, spread evenly over its tokens (D_1 is the same
    token-uniform start, i.e. answer i weighs L_i / n, so round 1 equals boost's round 1). The answer
    misses if ANY of its tokens misses: the AdaBoost update then multiplies all its tokens by the same
    factor, and eps = sum over answers of weight * miss. miss: (n,) flat; offsets: (N+1,).
    """
    lengths = offsets[1:] - offsets[:-1]  # (N,)
    row = torch.repeat_interleave(torch.arange(len(lengths)), lengths)  # (n,) row of each token
    missed_tokens = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, row, miss.to(torch.float64))  # (N,)
    return (missed_tokens > 0)[row]


def resample_counts(D: Tensor, generator: torch.Generator, n: int | None = None) -> Tensor:
    """Draw n token positions (default: the number of answer tokens) with replacement from D.

    Returns integer counts with D's shape: how often each token's loss counts; undrawn tokens get 0.
    """
    flat = D.flatten().to(torch.float64)
    if n is None:
        n = int((flat > 0).sum())
    draws = torch.multinomial(flat, n, replacement=True, generator=generator)  # (n,)
    return torch.bincount(draws, minlength=flat.numel()).view_as(D)


def bootstrap_counts(n_rows: int, generator: torch.Generator) -> Tensor:
    """Bagging: how often each example appears in a bootstrap resample of n_rows examples. (n_rows,)"""
    draws = torch.randint(n_rows, (n_rows,), generator=generator)
    return torch.bincount(draws, minlength=n_rows)


def reweight_multipliers(D: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """`reweight` loss multipliers n * D: 1 everywhere under uniform D, so the loss is plain SFT.
    Deterministic: `generator` is unused (the signature every token weighting shares)."""
    n = int((D > 0).sum())
    return (D.to(torch.float64) * n).to(torch.float32)


# token weightings (D_t, generator) -> loss multipliers (METHOD.md step 2), named in ensemw2s/kinds.py
def resample_multipliers(D: Tensor, generator: torch.Generator) -> Tensor:
    """`resample` loss multipliers: how often each token is drawn from D (n draws)."""
    return resample_counts(D, generator).to(torch.float32)


# variant kinds (ensemw2s/variants.py): which tokens an expert's loss weighs, and which misses enter eps
def boost_multipliers(D: Tensor, offsets: Tensor, round: int, token_weighting: str,
                      generator: torch.Generator) -> Tensor | None:
    """Round 1 (uniform D) is plain SFT, i.e. the single-weak baseline; later rounds weigh by D_t."""
    if round == 1:
        return None
    return TOKEN_WEIGHTINGS.get(token_weighting)(D, generator)


def bagging_multipliers(D: Tensor, offsets: Tensor, round: int, token_weighting: str,
                        generator: torch.Generator) -> Tensor:
    """Each example's tokens count as often as the example is drawn in a bootstrap resample."""
    lengths = offsets[1:] - offsets[:-1]  # (N,)
    return torch.repeat_interleave(bootstrap_counts(len(lengths), generator), lengths).to(torch.float32)


def token_misses(miss: Tensor, offsets: Tensor) -> Tensor:
    """Token-level boosting: each token's own miss enters eps."""
    return miss


def effective_sample_size(D: Tensor) -> float:
    """1 / sum D^2 of a normalised D: n when uniform, 1 when all the mass sits on one token."""
    p = D.to(torch.float64)
    return float(1.0 / (p * p).sum())


def weight_entropy(D: Tensor) -> float:
    """Shannon entropy (nats) of D over its support: log(n) when uniform, falls as D concentrates."""
    p = D[D > 0].to(torch.float64)
    return float(-(p * p.log()).sum())


def top_share(D: Tensor, fraction: float = 0.1) -> float:
    """Share of the mass on the top `fraction` of answer tokens (0.1 when uniform)."""
    p = D[D > 0].to(torch.float64)
    k = max(1, math.ceil(fraction * p.numel()))
    return float(p.topk(k).values.sum() / p.sum())
