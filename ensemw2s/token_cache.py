"""Per-expert token caches: score each expert once, combine any ensemble of them later without a model.

An expert's `TokenCache` holds, for every continuation token of a fixed request list, what any later
combination needs (the target's log-prob, the expert's greedy token, its top-k). `combine_cached` then
gives the log-likelihoods `Ensemble.loglikelihood` gives: the evaluation of the ensembles of the first r
experts, r = 1..R, costs R expert passes instead of R(R+1)/2. Caches are stored one file per expert and
request list (`cached_expert_scores`), keyed by `expert_identity` and `requests_fingerprint`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ensemw2s.combine import CachedExperts, normalised_weights
from ensemw2s.ensemble import continuation_logprobs, model_device, scoring_batches
from ensemw2s.errors import UserError
from ensemw2s.io import atomic_path
from ensemw2s.kinds import COMBINERS

DEFAULT_TOP_K = 32  # per-position top-k kept by TokenCache (for the ensemble's is_greedy, see combine_cached)


def requests_fingerprint(contexts, continuations, max_length: int | None) -> str:
    """Identity of a list of scoring requests: caches combine only over the very same requests."""
    blob = json.dumps([[list(c) for c in contexts], [list(c) for c in continuations], max_length])
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class TokenCache:
    """One expert's record of each continuation token of a fixed request list (request order, CPU)."""

    fingerprint: str  # requests_fingerprint of the scored requests
    vocab_size: int
    offsets: torch.Tensor  # (N+1,) request i owns rows offsets[i]:offsets[i+1]
    targets: torch.Tensor  # (P,) continuation token ids
    target_logprobs: torch.Tensor  # (P,) log p(target | prefix)
    argmax_ids: torch.Tensor  # (P,) the expert's greedy token
    topk_ids: torch.Tensor  # (P, k) its k most likely tokens, most likely first
    topk_logprobs: torch.Tensor  # (P, k)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(vars(self), tmp)

    @classmethod
    def load(cls, path: str | Path) -> "TokenCache":
        if not Path(path).is_file():
            raise UserError(f"{path}: token cache not found")
        return cls(**torch.load(path, weights_only=True))


@torch.no_grad()
def expert_token_logprobs(model, contexts, continuations, *, batch_size: int = 16, max_length: int | None = None,
                          top_k: int = DEFAULT_TOP_K) -> TokenCache:
    """Score the continuations with one expert, keeping what any later ensemble needs (see TokenCache).

    Uses the same batches and model calls as `Ensemble.loglikelihood`, so cached and direct scores agree.
    """
    if not contexts:
        raise ValueError("no requests to score")
    model.eval()
    n = len(contexts)
    rows: list[list[torch.Tensor] | None] = [None] * n
    vocab = None
    for batch in scoring_batches(contexts, continuations, batch_size, max_length, model_device(model)):
        lp = continuation_logprobs(model, batch)  # (B, C, V)
        vocab = lp.shape[-1]
        k = min(top_k, vocab)
        target_lp = lp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)  # (B, C)
        top_lp, top_ids = lp.topk(k, dim=-1)  # (B, C, k)
        argmax = lp.argmax(-1)  # (B, C)
        fields = [t.cpu() for t in (batch.targets, target_lp, argmax, top_ids, top_lp)]  # one transfer per batch
        valid = batch.valid.cpu()
        for row, i in enumerate(batch.index):
            rows[i] = [t[row][valid[row]] for t in fields]
    lengths = torch.tensor([0] + [len(continuations[i]) for i in range(n)])
    cat = [torch.cat([r[j] for r in rows]) for j in range(5)]
    return TokenCache(requests_fingerprint(contexts, continuations, max_length), int(vocab), lengths.cumsum(0),
                      *cat)


def expert_identity(ref: str | Path) -> str:
    """Cache key of an expert: its resolved path plus the sizes and mtimes of its files (a retrained
    expert gets a new key without hashing gigabytes of weights); a hub id is its own key."""
    path = Path(ref)
    if not path.exists():
        return hashlib.sha256(str(ref).encode()).hexdigest()[:16]
    root = path.resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    stamp = [str(root)] + [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]


def cached_expert_scores(model, ref: str | Path, contexts, continuations, cache_dir: str | Path, *,
                         batch_size: int = 16, max_length: int | None = None) -> TokenCache:
    """The expert's TokenCache for these requests: read from `cache_dir`, or computed once and stored there."""
    fingerprint = requests_fingerprint(contexts, continuations, max_length)
    path = Path(cache_dir) / f"{expert_identity(ref)}-{fingerprint[:16]}.pt"
    if path.is_file():
        return TokenCache.load(path)
    cache = expert_token_logprobs(model, contexts, continuations, batch_size=batch_size, max_length=max_length)
    cache.save(path)
    return cache


def combine_cached(caches: Sequence[TokenCache], weights: Sequence[float], combine: str = "prob"
                   ) -> list[tuple[float, bool]]:
    """(sum of ensemble log p over continuation tokens, is_greedy) per request, from per-expert caches.

    Log-likelihoods equal `Ensemble.loglikelihood`'s. is_greedy is exact for `vote` (argmax ids are
    cached) and for `prob` when top_k covers the vocabulary; with a smaller top_k it can only be False
    where the direct path says True, when a competitor outside some expert's top-k comes within reach.
    `logprob` renormalises over the whole vocabulary and cannot be combined from a cache.
    """
    combiner = COMBINERS.get(combine)
    if combiner.from_cache is None:
        raise UserError(f"combine {combine!r} needs the experts' full distributions; score this ensemble "
                        f"directly (Ensemble.loglikelihood) instead of from per-expert token caches")
    if len(caches) != len(weights):
        raise UserError(f"{len(caches)} expert caches but {len(weights)} weights")
    first = caches[0]
    for c in caches[1:]:
        if c.fingerprint != first.fingerprint or c.vocab_size != first.vocab_size:
            raise UserError("the expert token caches were computed on different requests or vocabularies; "
                            "recompute them on the same requests")
    stacked = CachedExperts(
        first.targets, torch.stack([c.target_logprobs for c in caches]), torch.stack([c.argmax_ids for c in caches]),
        torch.stack([c.topk_ids for c in caches]), torch.stack([c.topk_logprobs for c in caches]), first.vocab_size,
    )
    lp, greedy = combiner.from_cache(stacked, normalised_weights(weights))  # (P,), (P,)
    n = len(first.offsets) - 1
    owner = torch.repeat_interleave(torch.arange(n), first.offsets.diff())  # (P,) request of each token
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, lp.double())
    misses = torch.zeros(n, dtype=torch.long).index_add_(0, owner, (~greedy).long())
    return [(float(s), bool(m == 0)) for s, m in zip(sums, misses)]
