"""combine.py: every combine rule on small tensors worked by hand (no model)."""
import math

import pytest
import torch

from ensemw2s import combine
from ensemw2s.combine import (
    CachedExperts,
    cached_prob,
    cached_vote,
    choose_vote,
    normalised_weights,
    vote,
    weighted_logsumexp,
)
from ensemw2s.errors import UserError
from ensemw2s.kinds import COMBINERS
from tests.conftest import float32_tolerance

P1, P2 = [0.7, 0.2, 0.1], [0.1, 0.6, 0.3]


def _stacked(*dists) -> torch.Tensor:
    return torch.tensor(dists).log().unsqueeze(1)  # (T, 1, V)


def test_weights_are_normalised_to_sum_one():
    assert normalised_weights([3.0, 1.0]).tolist() == [0.75, 0.25]
    assert normalised_weights([2]).tolist() == [1.0]


@pytest.mark.parametrize("bad", [[1.0, 0.0], [1.0, -2.0], [], [float("nan")]])
def test_weights_must_be_positive(bad):
    with pytest.raises(UserError):
        normalised_weights(bad)


def test_weighted_logsumexp_is_the_log_of_the_weighted_sum():
    lp = torch.tensor([[0.5, 0.0], [0.25, 0.0]]).log()  # (T=2, 2): the second column is -inf for both
    got = weighted_logsumexp(lp, torch.tensor([0.5, 0.5]))
    assert got[0].item() == pytest.approx(math.log(0.5 * 0.5 + 0.5 * 0.25))  # log 0.375
    assert got[1].item() == float("-inf")  # no NaN where every expert gives -inf


def test_prob_is_the_weighted_mixture():
    w = normalised_weights([3.0, 1.0])  # 0.75, 0.25
    got = COMBINERS.get("prob").combine(_stacked(P1, P2), w).exp()[0]
    assert torch.allclose(got, torch.tensor([0.55, 0.30, 0.15]), atol=1e-6)


def test_logprob_is_the_normalised_weighted_geometric_mean():
    w = normalised_weights([3.0, 1.0])
    unnorm = [a ** 0.75 * b ** 0.25 for a, b in zip(P1, P2)]
    expected = torch.tensor([u / sum(unnorm) for u in unnorm])
    got = COMBINERS.get("logprob").combine(_stacked(P1, P2), w).exp()[0]
    assert torch.allclose(got, expected, atol=1e-6)
    assert math.isclose(float(got.sum()), 1.0, abs_tol=1e-6)


def test_logprob_renormalises_over_the_vocabulary():
    # geometric means sqrt(0.5 * 0.9) = 3 sqrt(0.05) and sqrt(0.5 * 0.1) = sqrt(0.05) sum to 0.894, not 1;
    # renormalised they are 3/4 and 1/4
    got = COMBINERS.get("logprob").combine(_stacked([0.5, 0.5], [0.9, 0.1]), torch.tensor([0.5, 0.5])).exp()[0]
    assert torch.allclose(got, torch.tensor([0.75, 0.25]), atol=1e-6)


def test_vote_counts_weights_and_breaks_ties_towards_the_earliest_expert():
    tokens = torch.tensor([[0], [1], [1]])  # (T, B): experts 2 and 3 agree on token 1
    assert vote(tokens, torch.tensor([0.4, 0.3, 0.3])).tolist() == [1]
    assert vote(tokens, torch.tensor([0.6, 0.2, 0.2])).tolist() == [0]
    assert vote(tokens, torch.tensor([0.5, 0.25, 0.25])).tolist() == [0]  # 0.5 vs 0.5: expert 1 wins
    # the vote chooses the token, but its scores are prob's
    lp = _stacked(P1, P2, P2)
    w = normalised_weights([0.4, 0.3, 0.3])
    c = COMBINERS.get("vote")
    assert torch.equal(c.combine(lp, w), COMBINERS.get("prob").combine(lp, w))
    assert c.choose(lp, w, c.combine(lp, w)).tolist() == [1]


def test_vote_ties_per_position():
    tokens = torch.tensor([[5, 7], [6, 7], [6, 8], [5, 8]])  # (T=4, B=2)
    # equal weights: 5 and 6 (then 7 and 8) have 0.5 each; the tie goes to expert 1's token
    assert vote(tokens, torch.tensor([0.25, 0.25, 0.25, 0.25])).tolist() == [5, 7]
    # expert 1 lighter: 6 gets 0.3 + 0.3 = 0.6 against 5's 0.1 + 0.3 = 0.4; 8 gets 0.6 against 7's 0.4
    assert vote(tokens, torch.tensor([0.1, 0.3, 0.3, 0.3])).tolist() == [6, 8]


def test_choose_vote_votes_on_each_experts_argmax():
    lp = _stacked(P1, P2, P2)  # argmax tokens 0, 1, 1
    assert choose_vote(lp, torch.tensor([0.6, 0.2, 0.2]), None).tolist() == [0]  # 0.6 against 0.4
    assert choose_vote(lp, torch.tensor([0.4, 0.3, 0.3]), None).tolist() == [1]  # 0.4 against 0.6


# ---------------------------------------------------------------------------------------------
# from per-token caches: two experts p1 = (0.6, 0.3, 0.1), p2 = (0.2, 0.5, 0.3), w = (0.75, 0.25);
# the ensemble's p = (0.5, 0.35, 0.15), so token 0 is greedy and token 1 is not


Q1, Q2, W = [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], torch.tensor([0.75, 0.25])


def _cached(target: int, k: int) -> CachedExperts:
    """One position, the two experts' top-k as a TokenCache stores them."""
    lp = torch.tensor([Q1, Q2]).log()  # (T, V)
    top_lp, top_ids = lp.topk(k, dim=-1)  # (T, k)
    return CachedExperts(torch.tensor([target]), lp[:, [target]], lp.argmax(-1, keepdim=True),
                         top_ids.unsqueeze(1), top_lp.unsqueeze(1), vocab_size=3)


def test_cached_prob_scores_the_target_as_the_mixture():
    lp, _ = cached_prob(_cached(1, k=3), W)
    assert lp.exp().tolist() == pytest.approx([0.75 * 0.3 + 0.25 * 0.5])  # 0.35


@pytest.mark.parametrize(("k", "greedy"), [(3, True), (2, True), (1, False)])
def test_cached_prob_proves_greedy_from_the_top_k_only_when_it_can(k, greedy):
    # target 0 has p = 0.5. k = 2: both experts stored token 1 (0.35 exactly); token 2, missing from
    # expert 1, is at most 0.75 * 0.3 (its floor) + 0.25 * 0.3 = 0.3: proven. k = 1: expert 1 did not store
    # token 1, whose bound 0.75 * 0.6 + 0.25 * 0.5 = 0.575 exceeds 0.5: not proven (errs towards False)
    assert cached_prob(_cached(0, k), W)[1].tolist() == [greedy]
    assert cached_prob(_cached(1, k), W)[1].tolist() == [False]  # never greedy


def test_cached_vote_votes_on_the_cached_argmax_tokens():
    # argmax tokens 0 (weight 0.75) and 1 (0.25): token 0 wins
    assert cached_vote(_cached(0, k=1), W)[1].tolist() == [True]
    assert cached_vote(_cached(1, k=1), W)[1].tolist() == [False]
    assert cached_vote(_cached(1, k=1), torch.tensor([0.25, 0.75]))[1].tolist() == [True]


def test_registry_names_the_module_combiners():
    assert COMBINERS.names() == ["logprob", "prob", "vote"]
    assert COMBINERS.get("prob") is combine.PROB and COMBINERS.get("vote") is combine.VOTE
    assert COMBINERS.get("logprob") is combine.LOGPROB
    assert combine.LOGPROB.from_cache is None  # its normaliser needs the whole vocabulary


@pytest.mark.parametrize("rule", ["prob", "logprob", "vote"])
def test_an_ensemble_of_copies_of_one_expert_is_that_expert(rule):
    """Negative control: T = 3 copies of one expert under unequal weights combine to that expert's own
    distribution (prob, logprob; vote keeps prob's) and pick its tokens, token for token."""
    torch.manual_seed(0)
    one = torch.log_softmax(torch.randn(5, 7), dim=-1)  # (positions, V)
    lp = one.expand(3, 5, 7)  # (T, positions, V)
    w = normalised_weights([2.0, 0.5, 1.5])
    c = COMBINERS.get(rule)
    combined = c.combine(lp, w)
    # float32 chains: a weighted sum over T = 3 experts, logprob's normaliser over V = 7 tokens, an exp and
    # a log, on values of magnitude max |lp|
    ops = 3 + 7 + 2
    torch.testing.assert_close(combined, one, rtol=0, atol=float32_tolerance(float(one.abs().max()), ops))
    assert torch.equal(c.choose(lp, w, combined), one.argmax(-1))
