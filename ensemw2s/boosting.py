"""Token-level AdaBoost math (METHOD.md "Token-level boosting"), as pure functions on tensors.

A weight distribution D lives on answer tokens only. Every function accepts D in any shape: the flat
(n,) layout of `weights.pt`, or a padded (B, T) layout where a mask put zero on prompt and padding.
A zero weight stays zero under the update, so prompt and padding never gain mass.
No I/O here: rounds.py reads and writes, training.py turns weights into loss multipliers.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ensemw2s.kinds import TOKEN_WEIGHTINGS

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


def reference_error(prior: str | int, vocab_size: int, base_error: float | None) -> float | None:
    """e_ref, the error the SAMME prior term is measured against: 1 - 1/K (K = |V| for `vocab`, or the
    integer given), the weak base's own teacher-forced token error (`base_error`), or None (`none`)."""
    if prior == "none":
        return None
    if prior == "base_error":
        if base_error is None:
            raise ValueError("prior base_error needs the weak base's measured token error on weak_train")
        return min(max(float(base_error), EPS_MIN), EPS_MAX)
    k = vocab_size if prior == "vocab" else prior
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"prior {prior!r}: K must be an integer >= 2 (or vocab, base_error, none), got K={k}")
    return 1.0 - 1.0 / k


def prior_term(prior: str | int, vocab_size: int, base_error: float | None = None) -> float:
    """log(e_ref / (1 - e_ref)): the paper's prior term log(1/(1-e) - 1), 0 under `none`.

    At e_ref = 1 - 1/K it is log(K-1), computed as such: (1 - 1/K) / (1/K) is not K - 1 in floating point,
    and the default (K = |V|) must stay bit-identical to SAMME's log(K-1).
    """
    e_ref = reference_error(prior, vocab_size, base_error)
    if e_ref is None:
        return 0.0
    if prior == "base_error":
        return math.log(e_ref / (1.0 - e_ref))
    return math.log((vocab_size if prior == "vocab" else prior) - 1)


def alpha(eps: float, prior: float) -> float:
    """alpha_t = log((1-eps)/eps) + prior term (SAMME); with prior 0 it is binary AdaBoost's 2 alpha, so the
    update exp(alpha miss) and the normalised ensemble weights are binary AdaBoost's exactly."""
    return math.log((1.0 - eps) / eps) + prior


class Stop(NamedTuple):
    reason: str
    keeps_expert: bool  # a perfect fit's expert is kept (with its alpha); a chance-level one is not


def check_stop(alpha_t: float, eps: float, prior: str | int, n_missed: int) -> Stop | None:
    """None while boosting goes on; else why it stops after this round and whether its expert is kept.

    alpha <= 0 (up to rounding): the expert is no better than chance and is dropped. No missed token: the
    weights cannot change, so the next round would train on the same D and repeat this one; the expert
    fits weak_train and is kept.
    """
    if alpha_t <= ALPHA_TOL:
        return Stop(f"alpha = {alpha_t:.6g} <= 0 at weighted error eps = {eps:.6g}: the expert is no better "
                    f"than chance under prior {prior!r}", keeps_expert=False)
    if n_missed == 0:
        return Stop(f"perfect_fit: no answer token missed (eps taken as {eps:.6g}, half the smallest token "
                    f"weight; alpha = {alpha_t:.6g}): the weights cannot change, so boosting ends with this "
                    f"expert", keeps_expert=True)
    return None


def update_weights(D: Tensor, miss: Tensor, alpha_t: float, round: int, learning_rate: float = 1.0,
                   uniform_mix: float = 0.0) -> Tensor:
    """D_{t+1} = D_t * exp(nu * alpha_t * miss_t) / Z_t, computed in float64 (miss in [0, 1]: 0/1 for a
    hard miss, 1 - p(gold) for a soft one); then, with uniform_mix lambda > 0,
    D_{t+1} <- (1 - lambda) D_{t+1} + lambda / n on the n answer tokens.
    then, with uniform_mix lambda > 0, D_{t+1} <- (1 - lambda) D_{t+1} + lambda / n on the n answer tokens.

    nu (learning_rate) shrinks the update as scikit-learn's AdaBoost does (nu = 1: the plain update);
    lambda keeps every token's weight at lambda / n at least, so no token drops out of resampling.

    float64 because a token never missed shrinks by about 1/((1-eps)K) per samme round: float32 flushes
    it to 0 after 7-8 rounds at K = 50k (it would then never be drawn again); float64 holds ~65 rounds,
    and a weight that still underflows is an error rather than a silent loss of support.
    """
    D = D.to(torch.float64)
    _check_finite(D, "the token weights D", round)
    # alpha <= log(1e10) + prior < 60 after clipping (prior <= log(1e10) too): exp cannot overflow
    new = D * torch.exp(learning_rate * alpha_t * miss.to(torch.float64))
    new = new / new.sum()  # Z_t
    if uniform_mix > 0:
        support = (D > 0).to(torch.float64)
        new = (1.0 - uniform_mix) * new + uniform_mix * support / support.sum()
    _check_finite(new, "the updated token weights", round)
    if ((new == 0) & (D > 0)).any():
        raise FloatingPointError(
            f"boosting round {round}: a token weight underflowed to 0 in float64; use fewer boosting.rounds, "
            f"a smaller prior (a variant's prior: none, base_error or a small K), a learning_rate < 1 or a uniform_mix"
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


def plain_multipliers(D: Tensor, offsets: Tensor, round: int, token_weighting: str,
                      generator: torch.Generator) -> None:
    """Plain SFT in every round: the controls (partition, longer) choose their rows, not token weights."""
    return None


def bagging_multipliers(D: Tensor, offsets: Tensor, round: int, token_weighting: str,
                        generator: torch.Generator) -> Tensor:
    """Each example's tokens count as often as the example is drawn in a bootstrap resample."""
    lengths = offsets[1:] - offsets[:-1]  # (N,)
    return torch.repeat_interleave(bootstrap_counts(len(lengths), generator), lengths).to(torch.float32)


def soft_misses(gold_prob: Tensor) -> Tensor:
    """`miss: soft`: 1 - p_t(gold token), in [0, 1]; a confident right token misses by little, a confident
    wrong one by almost 1 (`hard` counts both as 0 or 1 by the argmax alone)."""
    return 1.0 - gold_prob.to(torch.float64)


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
