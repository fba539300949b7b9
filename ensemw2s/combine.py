"""The combine rules: pure functions that turn T experts' next-token log-probs into the ensemble's.

At every step the experts' next-token distributions (one shared tokenizer) are combined into one
distribution (METHOD.md, "Token-level ensemble decoding"):
- `prob` (default): p(v) = sum_t w_t p_t(v), with w = alpha / sum(alpha);
- `logprob`: p(v) proportional to exp(sum_t w_t log p_t(v));
- `vote`: the token is chosen by a weighted vote of the experts' argmax tokens (ties go to the token
  of the earliest expert, i.e. the earliest boosting round); its scores (log-likelihoods) are `prob`'s.
Everything is computed in log space (logsumexp): with `prob` and `vote` an ensemble of one expert is
that expert bit for bit (with `logprob`, up to the rounding of its renormalisation).

Each rule is a `Combiner` (PROB, LOGPROB, VOTE), named in `kinds.COMBINERS`; its `from_cache` combines
per-expert token caches (token_cache.py) without the full distributions. Tensors in, tensors out: no
models, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ensemw2s.errors import UserError


def _per_expert(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Weights (T,) shaped to broadcast against a (T, ...) tensor."""
    return w.view(-1, *([1] * (like.dim() - 1)))


def weighted_logsumexp(lp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log sum_t w_t exp(lp_t): (T, *) -> (*), shifted by the max over t so that nothing overflows.

    One exp pass and a weighted sum over t (a matrix-vector product) instead of torch.logsumexp of
    lp + log w: 3-5x faster on a decoding step's (T, B, V), equal up to float rounding. Where every expert
    gives -inf the result is -inf (the shift is clamped to a finite value).
    """
    m = lp.amax(0).clamp_min(torch.finfo(lp.dtype).min)  # (*)
    return torch.tensordot(w.to(lp.dtype), (lp - m).exp(), dims=1).log().add(m)


def combine_prob(expert_lp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log sum_t w_t p_t: (T, *, V) log-probs, (T,) normalised weights -> (*, V) log-probs."""
    return weighted_logsumexp(expert_lp, w)


def combine_logprob(expert_lp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted geometric mean of the distributions, renormalised over the vocabulary: (T, *, V) -> (*, V)."""
    s = (_per_expert(w, expert_lp) * expert_lp).sum(0)  # (*, V)
    return s - torch.logsumexp(s, dim=-1, keepdim=True)


def vote(expert_tokens: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted vote over the experts' chosen tokens: (T, *) token ids -> (*) winning token ids.

    A token's support is the total weight of the experts that chose it; ties go to the earliest expert's
    token. The cached path uses this same function, so both give bit-identical decisions.
    """
    agree = expert_tokens.unsqueeze(0) == expert_tokens.unsqueeze(1)  # (T, T, *): s and t chose alike
    support = (_per_expert(w, agree) * agree).sum(0)  # (T, *): weight behind expert t's token
    best = support.argmax(0, keepdim=True)  # (1, *): first expert with maximal support
    return expert_tokens.gather(0, best).squeeze(0)


def choose_argmax(expert_lp: torch.Tensor, w: torch.Tensor, combined: torch.Tensor) -> torch.Tensor:
    """Greedy token of the combined distribution: (*, V) -> (*)."""
    return combined.argmax(-1)


def choose_vote(expert_lp: torch.Tensor, w: torch.Tensor, combined: torch.Tensor) -> torch.Tensor:
    return vote(expert_lp.argmax(-1), w)


@dataclass(frozen=True)
class CachedExperts:
    """T experts' TokenCache fields stacked: what `token_cache.combine_cached` hands to a combiner."""

    targets: torch.Tensor  # (P,) continuation token ids
    target_lp: torch.Tensor  # (T, P) log p_t(target)
    argmax_ids: torch.Tensor  # (T, P) each expert's greedy token
    topk_ids: torch.Tensor  # (T, P, k) each expert's k most likely tokens
    topk_lp: torch.Tensor  # (T, P, k) their log-probs, descending
    vocab_size: int


def _prob_greedy_bound(c: CachedExperts, w: torch.Tensor, block: int = 512) -> torch.Tensor:
    """Is the target provably the argmax of sum_t w_t p_t? (P,) bool, from the experts' top-k alone.

    A token that expert t did not store has p_t <= t's k-th largest probability, which bounds every
    competitor's ensemble probability from above. The answer is exact when k covers the vocabulary;
    otherwise it errs only towards False, and only when a competitor's bound reaches the target's exact
    probability.
    """
    lw = w.log().view(-1, 1)  # (T, 1)
    target = torch.logsumexp(lw + c.target_lp, 0)  # (P,)
    floor = c.topk_lp[..., -1]  # (T, P): bound for tokens an expert did not store
    T, P, k = c.topk_ids.shape
    beaten = torch.zeros(P, dtype=torch.bool)
    if k < c.vocab_size:  # tokens that no expert stored
        beaten |= torch.logsumexp(lw + floor, 0) > target
    for lo in range(0, P, block):  # (T, b, k, T*k) comparisons per block keep memory bounded
        ids, lps = c.topk_ids[:, lo:lo + block], c.topk_lp[:, lo:lo + block]  # (T, b, k)
        cand = ids.permute(1, 0, 2).reshape(ids.shape[1], T * k)  # (b, M): every stored token
        eq = ids.unsqueeze(-1) == cand.unsqueeze(0).unsqueeze(2)  # (T, b, k, M)
        known = lps.unsqueeze(-1).masked_fill(~eq, float("-inf")).amax(2)  # (T, b, M)
        upper = torch.where(eq.any(2), known, floor[:, lo:lo + block].unsqueeze(-1))  # (T, b, M)
        upper = torch.logsumexp(lw.unsqueeze(-1) + upper, 0)  # (b, M)
        rival = cand != c.targets[lo:lo + block].unsqueeze(-1)  # (b, M)
        beaten[lo:lo + block] |= ((upper > target[lo:lo + block].unsqueeze(-1)) & rival).any(-1)
    return ~beaten


def cached_prob(c: CachedExperts, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) ensemble log p(target), (P,) is the target the ensemble's greedy token."""
    return weighted_logsumexp(c.target_lp, w), _prob_greedy_bound(c, w)


def cached_vote(c: CachedExperts, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return weighted_logsumexp(c.target_lp, w), vote(c.argmax_ids, w) == c.targets


@dataclass(frozen=True)
class Combiner:
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (T, *, V), (T,) -> (*, V) log-probs
    choose: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # -> (*) greedy token ids
    # from per-token caches: (P,) target log-probs and greedy flags; None when the full distributions are needed
    from_cache: Callable[[CachedExperts, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None


PROB = Combiner(combine_prob, choose_argmax, cached_prob)
# its normaliser sums over the whole vocabulary, which a per-token cache does not hold
LOGPROB = Combiner(combine_logprob, choose_argmax, None)
VOTE = Combiner(combine_prob, choose_vote, cached_vote)


def normalised_weights(weights: Sequence[float]) -> torch.Tensor:
    """alpha_t / sum(alpha): (T,) float32. Weights must be positive (a stopped expert is left out)."""
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    if w.numel() == 0:
        raise UserError("an ensemble needs at least one expert weight")
    if not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
        raise UserError(f"ensemble weights must be positive and finite, got {list(weights)}")
    return w / w.sum()
