"""token_cache.py: caches combined by hand, cached == direct scoring, files reused and keyed by expert."""
import math

import pytest
import torch

import ensemw2s.token_cache as token_cache
from ensemw2s.ensemble import Ensemble
from ensemw2s.errors import UserError
from ensemw2s.token_cache import (
    TokenCache,
    cached_expert_scores,
    combine_cached,
    expert_identity,
    expert_token_logprobs,
    requests_fingerprint,
)
from tests.conftest import assert_loglikelihoods_close
from tests.test_ensemble import scoring_requests

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# by hand


def _hand_cache(p: list[list[float]], targets: list[int], offsets: list[int]) -> TokenCache:
    """A full-vocabulary cache of one expert whose next-token distribution at position j is p[j]."""
    lp = torch.tensor(p).log()  # (P, V)
    t = torch.tensor(targets)
    top_lp, top_ids = lp.topk(lp.shape[1], dim=-1)
    return TokenCache("requests", lp.shape[1], torch.tensor(offsets), t, lp.gather(-1, t[:, None]).squeeze(-1),
                      lp.argmax(-1), top_ids, top_lp)


def test_combine_cached_sums_each_requests_tokens():
    # request 0 owns positions 0 and 1, request 1 position 2; w = (0.75, 0.25)
    a = _hand_cache([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]], [0, 0, 1], [0, 2, 3])
    b = _hand_cache([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]], [0, 0, 1], [0, 2, 3])
    # prob: p = (0.7, 0.3), (0.4, 0.6), (0.15, 0.85); position 1's target 0 is not the greedy token
    (lp0, greedy0), (lp1, greedy1) = combine_cached([a, b], [3.0, 1.0])
    assert lp0 == pytest.approx(math.log(0.7) + math.log(0.4)) and not greedy0
    assert lp1 == pytest.approx(math.log(0.85)) and greedy1
    # vote: the same scores; expert a (0.75) chose 0, 0, 1, every target
    votes = combine_cached([a, b], [3.0, 1.0], "vote")
    assert [lp for lp, _ in votes] == pytest.approx([lp0, lp1]) and [g for _, g in votes] == [True, True]


def test_fingerprint_changes_with_the_requests_and_max_length():
    base = requests_fingerprint([[1, 2]], [[3]], None)
    assert base == requests_fingerprint(([1, 2],), ((3,),), None)  # lists or tuples alike
    assert base != requests_fingerprint([[1, 2]], [[4]], None)
    assert base != requests_fingerprint([[1, 2]], [[3]], 8)


def test_expert_identity_follows_the_files(tmp_path):
    assert expert_identity("org/some-model") == expert_identity("org/some-model")  # a hub id: its own key
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "w.bin").write_bytes(b"12")
    before = expert_identity(tmp_path / "e")
    (tmp_path / "e" / "w.bin").write_bytes(b"123")  # a retrained expert
    assert expert_identity(tmp_path / "e") != before


# ---------------------------------------------------------------------------------------------
# cached == direct


@pytest.fixture(scope="module")
def cached(experts, tiny_tokenizer):
    ens = Ensemble(experts, [1.0, 1.0, 1.0], "prob", tiny_tokenizer)
    contexts, conts = scoring_requests(ens, tiny_tokenizer)
    full = [expert_token_logprobs(m, contexts, conts, batch_size=3, top_k=len(tiny_tokenizer)) for m in experts]
    small = [expert_token_logprobs(m, contexts, conts, batch_size=5, top_k=2) for m in experts]
    return contexts, conts, full, small


@pytest.mark.parametrize("combine", ["prob", "vote"])
@pytest.mark.parametrize("subset", [[0], [0, 1], [0, 2], [0, 1, 2]])
def test_cached_combination_equals_direct_scoring(combine, subset, cached, experts, tiny_tokenizer):
    contexts, conts, full, small = cached
    weights = [[2.0, 0.5, 1.1][i] for i in subset]
    ens = Ensemble([experts[i] for i in subset], weights, combine, tiny_tokenizer)
    direct = ens.loglikelihood(contexts, conts, batch_size=3)  # the full caches' batches: the same numbers
    exact = combine_cached([full[i] for i in subset], weights, combine)
    assert [lp for lp, _ in exact] == pytest.approx([lp for lp, _ in direct], abs=1e-6)
    assert [g for _, g in exact] == [g for _, g in direct]
    # a top-k cache (other batches, so float noise): the same log-likelihoods; is_greedy only errs towards False
    approx = combine_cached([small[i] for i in subset], weights, combine)
    assert_loglikelihoods_close([lp for lp, _ in approx], [lp for lp, _ in direct], [len(c) for c in conts],
                                len(tiny_tokenizer))
    assert all(d or not a for (_, a), (_, d) in zip(approx, direct))
    if combine == "vote" or len(subset) == 1:  # argmax ids are cached: exact
        assert [g for _, g in approx] == [g for _, g in direct]


def test_token_cache_round_trip_and_misuse(cached, tmp_path, experts):
    contexts, conts, full, _ = cached
    full[1].save(tmp_path / "e1.pt")
    loaded = TokenCache.load(tmp_path / "e1.pt")
    assert combine_cached([full[0], loaded], [1.0, 2.0]) == combine_cached(full[:2], [1.0, 2.0])
    with pytest.raises(UserError, match="full distributions"):
        combine_cached(full, [1.0, 1.0, 1.0], "logprob")
    other = expert_token_logprobs(experts[2], contexts[:2], conts[:2])
    with pytest.raises(UserError, match="different requests"):
        combine_cached([full[0], other], [1.0, 1.0])
    with pytest.raises(UserError, match="not found"):
        TokenCache.load(tmp_path / "missing.pt")


def test_cached_expert_scores_are_computed_once_per_expert(cached, tmp_path, experts, expert_dirs, monkeypatch):
    contexts, conts, _, _ = cached
    first = cached_expert_scores(experts[0], expert_dirs[0], contexts, conts, tmp_path, batch_size=3)
    assert [p.name for p in tmp_path.iterdir()] == [
        f"{expert_identity(expert_dirs[0])}-{requests_fingerprint(contexts, conts, None)[:16]}.pt"]

    def recompute(*a, **k):
        raise AssertionError("the cache should have been read, not recomputed")

    monkeypatch.setattr(token_cache, "expert_token_logprobs", recompute)
    again = cached_expert_scores(experts[0], expert_dirs[0], contexts, conts, tmp_path, batch_size=3)
    assert torch.equal(again.target_logprobs, first.target_logprobs) and again.fingerprint == first.fingerprint
