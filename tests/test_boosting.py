"""Token-level AdaBoost math, checked against numbers worked by hand.

The running example: 3 answers of 2, 3 and 2 tokens (n = 7), flat layout with offsets [0, 2, 5, 7];
expert h_1 misses token 2 of answer 0 and token 1 of answer 2:

    miss = [0 1 | 0 0 0 | 1 0]          D_1 = 1/7 everywhere
"""
import math

import pytest
import torch

from ensemw2s import boosting
from ensemw2s.errors import UserError
from ensemw2s.kinds import TOKEN_WEIGHTINGS


def samme(eps: float, k: int) -> float:
    """alpha under prior: K (e_ref = 1 - 1/K), i.e. SAMME's log((1-eps)/eps) + log(K-1)."""
    return boosting.alpha(eps, boosting.prior_term(k, vocab_size=50))

OFFSETS = torch.tensor([0, 2, 5, 7])
MISS = torch.tensor([0, 1, 0, 0, 0, 1, 0], dtype=torch.bool)


def uniform(n: int) -> torch.Tensor:
    return boosting.initial_weights(torch.ones(n, dtype=torch.bool))


def test_initial_weights_sit_on_answer_tokens_only():
    # padded (B, T) layout: prompt (P) and padding (.) carry no weight
    #   row 0: P P a a .      row 1: P a a a .      row 2: P P P a a
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    D = boosting.initial_weights(mask)
    assert torch.equal(D[~mask], torch.zeros(8, dtype=torch.float64))
    assert torch.allclose(D[mask], torch.full((7,), 1 / 7, dtype=torch.float64))
    assert D.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no answer tokens"):
        boosting.initial_weights(torch.zeros(3, dtype=torch.bool))


def test_hand_worked_round_samme_k4():
    D = uniform(7)
    eps = boosting.weighted_error(D, MISS, round=1)
    assert eps == pytest.approx(2 / 7)  # two missed tokens of weight 1/7
    alpha = samme(eps, 4)
    # log((1 - 2/7) / (2/7)) + log(4 - 1) = log(5/2) + log(3) = log(7.5)
    assert math.log(4 - 1) == pytest.approx(1.0986122886681098)
    assert alpha == pytest.approx(2.0149030205422647)
    assert boosting.check_stop(alpha, eps, 4, n_missed=2) is None
    D2 = boosting.update_weights(D, MISS, alpha, round=1)
    # missed: (1/7) * 7.5, kept: 1/7; Z = (5 * 1 + 2 * 7.5) / 7 = 20/7
    # -> missed 7.5/20 = 0.375, kept 1/20 = 0.05; the missed tokens now hold 1 - 1/K = 0.75 of the mass
    expected = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    assert torch.allclose(D2, expected, atol=1e-12)
    assert D2[MISS].sum().item() == pytest.approx(0.75)


def test_hand_worked_round_prior_none_is_binary_adaboost():
    D = uniform(7)
    eps = boosting.weighted_error(D, MISS, round=1)
    alpha = boosting.alpha(eps, prior=boosting.prior_term("none", vocab_size=50))
    # log((5/7) / (2/7)) = log(2.5) = 2 x binary AdaBoost's 0.5 log(2.5): the same normalised ensemble weights
    assert alpha == pytest.approx(0.9162907318741551)
    D2 = boosting.update_weights(D, MISS, alpha, round=1)
    # binary AdaBoost's exp(-alpha_bin y h): a miss is multiplied by exp(2 alpha_bin) = exp(alpha) = 2.5;
    # Z = (5 + 2 * 2.5) / 7 = 10/7 -> kept 1/10, missed 2.5/10 = 1/4: the misses hold exactly 1/2
    # (exp(alpha) alone would leave them 2 sqrt(2.5) / (5 + 2 sqrt(2.5)) = 0.387)
    assert torch.allclose(D2, torch.tensor([0.1, 0.25, 0.1, 0.1, 0.1, 0.25, 0.1], dtype=torch.float64), atol=1e-15)
    assert D2[MISS].sum().item() == pytest.approx(0.5, abs=1e-15)


def test_adaboost_update_leaves_half_the_mass_on_the_misses_at_small_eps():
    # non-uniform D (the samme round above), one missed token of weight 0.05: eps = 0.05, alpha = log(19)
    D = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    miss = torch.tensor([1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    eps = boosting.weighted_error(D, miss, round=2)
    assert eps == pytest.approx(0.05, abs=1e-15)
    alpha = boosting.alpha(eps, prior=0.0)
    assert alpha == pytest.approx(math.log(19))
    D3 = boosting.update_weights(D, miss, alpha, round=2)
    # missed 0.05 * 19 = 0.95, kept 0.95; Z = 1.9 -> missed 0.5, kept 0.375/1.9 and 0.05/1.9
    # (exp(alpha) alone: 0.05 sqrt(19) / (0.95 + 0.05 sqrt(19)) = 0.187 on the miss)
    expected = torch.tensor([0.5, 0.375 / 1.9, 0.05 / 1.9, 0.05 / 1.9, 0.05 / 1.9, 0.375 / 1.9, 0.05 / 1.9],
                            dtype=torch.float64)
    assert torch.allclose(D3, expected, atol=1e-15)  # values <= 1, a few float64 roundings (~1e-16 each)
    assert D3[miss].sum().item() == pytest.approx(0.5, abs=1e-15)


def test_hand_worked_sequence_level_round():
    seq_miss = boosting.sequence_misses(MISS, OFFSETS)
    # answers 0 and 2 have a missed token, answer 1 has none: the miss covers all their tokens
    assert seq_miss.tolist() == [True, True, False, False, False, True, True]
    D = uniform(7)
    eps = boosting.weighted_error(D, seq_miss, round=1)
    assert eps == pytest.approx(4 / 7)
    alpha = samme(eps, 4)
    # log((3/7) / (4/7)) + log(3) = log(9/4) = 0.8109302162163288
    assert alpha == pytest.approx(0.8109302162163288)
    D2 = boosting.update_weights(D, seq_miss, alpha, round=1)
    # missed 2.25/7, kept 1/7; Z = (4 * 2.25 + 3) / 7 = 12/7 -> missed 0.1875, kept 1/12
    expected = torch.tensor([0.1875, 0.1875, 1 / 12, 1 / 12, 1 / 12, 0.1875, 0.1875], dtype=torch.float64)
    assert torch.allclose(D2, expected, atol=1e-12)
    # one weight per answer, spread evenly: answer weights 0.375, 0.25, 0.375
    per_answer = [D2[OFFSETS[i] : OFFSETS[i + 1]] for i in range(3)]
    assert [w.sum().item() for w in per_answer] == pytest.approx([0.375, 0.25, 0.375])
    assert all(torch.equal(w, w[:1].expand_as(w)) for w in per_answer)


def test_a_perfect_fit_takes_half_the_smallest_weight_as_eps_and_ends_boosting():
    D = uniform(7)
    none = torch.zeros(7, dtype=torch.bool)
    eps = boosting.weighted_error(D, none, round=2)
    assert eps == pytest.approx(1 / 14)  # half of 1/7, not the clip 1e-10 (which gives alpha = 24.1 at K = 4)
    alpha = samme(eps, 4)
    # log((13/14) / (1/14)) + log(3) = log(39), above the one-miss expert's log(6) + log(3) = log(18)
    assert alpha == pytest.approx(math.log(39))
    assert alpha > samme(boosting.weighted_error(D, MISS[[1, 0, 2, 3, 4, 0, 6]], round=2), 4)
    stop = boosting.check_stop(alpha, eps, 4, n_missed=0)
    assert stop.keeps_expert and stop.reason.startswith("perfect_fit: no answer token missed")
    # the next round would see the same D (up to renormalising: a few float64 roundings of 1/7)
    assert torch.allclose(boosting.update_weights(D, none, alpha, round=2), D, rtol=0, atol=1e-15)
    # non-uniform D: the smallest weight is 0.05 -> eps = 0.025
    D2 = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    assert boosting.weighted_error(D2, none, round=2) == pytest.approx(0.025)
    # padded layout: prompt and padding (weight 0) are not the smallest token weight
    padded = boosting.initial_weights(torch.tensor([[0, 1, 1], [0, 0, 1]], dtype=torch.bool))
    assert boosting.weighted_error(padded, torch.zeros(2, 3, dtype=torch.bool), round=2) == pytest.approx(1 / 6)


def test_weights_stay_positive_where_float32_would_flush_them_to_zero():
    # token 0 never missed, token 1 always, alpha = log(1e10) each round (samme's update_scale is 1):
    # D_t(0) = 1 / (1 + 1e10^t); after 5 rounds 1 / (1 + 1e50) = 1e-50 (1 - 1e-50)
    D, miss = uniform(2), torch.tensor([0, 1], dtype=torch.bool)
    for t in range(1, 6):
        D = boosting.update_weights(D, miss, math.log(1e10), round=t)
    # 5 factors exp(23.03), each with relative error <= 23.03 * 2^-53 ~ 3e-15: 1e-12 is loose
    assert D[0].item() == pytest.approx(1e-50, rel=1e-12) and D[1].item() == pytest.approx(1.0, abs=1e-15)
    assert D.float()[0].item() == 0.0  # float32 (smallest subnormal 1.4e-45) would lose the token
    assert boosting.resample_counts(D, torch.Generator().manual_seed(0)).sum().item() == 2  # still n = 2 draws
    # a weight that underflows even float64 (1e-300 / 1e30 < 4.9e-324) is an error, not a lost token
    with pytest.raises(FloatingPointError, match=r"round 7: a token weight underflowed to 0 in float64.*fewer"):
        boosting.update_weights(torch.tensor([1e-300, 1.0], dtype=torch.float64), miss, math.log(1e30), 7)


def test_chance_or_worse_stops_boosting():
    everything = torch.ones(7, dtype=torch.bool)
    eps = boosting.weighted_error(uniform(7), everything, round=3)
    assert eps == 1 - 1e-10  # clipped from 1
    alpha = samme(eps, 4)
    assert alpha < 0
    stop = boosting.check_stop(alpha, eps, 4, n_missed=7)
    assert "no better than chance" in stop.reason and "<= 0" in stop.reason and not stop.keeps_expert
    # eps = 0.8 > 1 - 1/K = 0.75: log(0.2/0.8) + log(3) = log(0.75) < 0
    assert samme(0.8, 4) == pytest.approx(math.log(0.75))
    assert boosting.check_stop(samme(0.8, 4), 0.8, 4, n_missed=5) is not None
    # at eps = 1 - 1/K exactly, alpha is 0 (chance level)
    assert samme(0.75, 4) == pytest.approx(0.0, abs=1e-12)
    # exactly at chance, rounding can leave alpha a hair above 0 (K = 9: +4.4e-16): still a stop
    for k in (9, 11, 12, 400, 49152):
        eps_chance = 1 - 1 / k
        assert boosting.check_stop(samme(eps_chance, k), eps_chance, 4, 3) is not None
    assert boosting.check_stop(samme(0.74, 4), 0.74, 4, 3) is None  # just better than chance
    # prior none (binary AdaBoost): chance is eps = 0.5, alpha = log(1) = 0 -> stop
    assert boosting.alpha(0.5, prior=0.0) == 0.0
    assert boosting.check_stop(0.0, 0.5, "none", 3) is not None


def test_prior_terms_hand_worked():
    # vocab and an integer K: exactly log(K - 1), the SAMME term (bit-identical, not via (1-1/K)/(1/K))
    assert boosting.prior_term("vocab", vocab_size=400) == math.log(399)
    assert boosting.prior_term(4, vocab_size=400) == math.log(3)
    assert boosting.reference_error(4, vocab_size=400, base_error=None) == 0.75
    # base_error: the weak base misses 60% of weak_train's answer tokens -> log(0.6 / 0.4) = log(1.5)
    assert boosting.prior_term("base_error", vocab_size=400, base_error=0.6) == pytest.approx(0.4054651081081644,
                                                                                         rel=1e-15)
    # a base better than a coin flip gives a negative term: an expert must beat the base to weigh > 0
    assert boosting.prior_term("base_error", vocab_size=400, base_error=0.2) == pytest.approx(math.log(0.25))
    assert boosting.alpha(0.2, boosting.prior_term("base_error", 400, 0.2)) == pytest.approx(0.0, abs=1e-15)
    # e_ref is clipped like eps, so a base that misses every token keeps a finite term log(1e10)
    assert boosting.prior_term("base_error", 400, 1.0) == pytest.approx(math.log((1 - 1e-10) / 1e-10))
    assert boosting.prior_term("none", vocab_size=400) == 0.0
    assert boosting.reference_error("none", 400, None) is None


def test_soft_misses_hand_worked():
    """miss = 1 - p(gold): tokens with p(gold) = 0.9, 0.5, 0.0 and weights 0.5, 0.25, 0.25 give
    eps = 0.5 * 0.1 + 0.25 * 0.5 + 0.25 * 1 = 0.425; the update multiplies each token by exp(alpha * miss)."""
    D = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    miss = boosting.soft_misses(torch.tensor([0.9, 0.5, 0.0]))
    assert miss.tolist() == pytest.approx([0.1, 0.5, 1.0], abs=1e-7)  # float32 p: 0.9 is off by ~2e-8
    eps = boosting.weighted_error(D, miss, round=1)
    assert eps == pytest.approx(0.425, abs=1e-7)
    alpha = boosting.alpha(eps, prior=0.0)  # log(0.575 / 0.425)
    assert alpha == pytest.approx(math.log(0.575 / 0.425), abs=1e-6)
    D2 = boosting.update_weights(D, miss, alpha, round=1)
    factors = torch.exp(alpha * miss)
    expected = D * factors / (D * factors).sum()
    assert torch.allclose(D2, expected, rtol=0, atol=1e-15)
    # the confident miss gains the most: e^alpha = 1.353, the 0.5 miss sqrt(e^alpha) = 1.163
    assert D2[2] / D2[0] == pytest.approx((0.25 / 0.5) * math.exp(alpha * 0.9), rel=1e-6)


def test_non_finite_inputs_name_the_round():
    D = uniform(7)
    D[3] = float("nan")
    with pytest.raises(FloatingPointError, match="round 3"):
        boosting.weighted_error(D, MISS, round=3)
    with pytest.raises(FloatingPointError, match="round 4"):
        boosting.update_weights(D, MISS, 1.0, round=4)
    inf = uniform(7)
    inf[0] = float("inf")
    with pytest.raises(FloatingPointError, match="round 2"):
        boosting.weighted_error(inf, MISS, round=2)


def test_unknown_names_suggest_the_known_ones():
    with pytest.raises(UserError, match="resample"):
        TOKEN_WEIGHTINGS.get("resampel")
    with pytest.raises(ValueError, match="K must be an integer >= 2"):
        boosting.prior_term(1, vocab_size=50)
    with pytest.raises(ValueError, match="measured token error"):
        boosting.prior_term("base_error", vocab_size=50)


def test_resampling_draws_in_proportion_to_D():
    D = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0], dtype=torch.float64)
    draws = 200_000
    counts = boosting.resample_counts(D, torch.Generator().manual_seed(0), n=draws)
    assert counts.dtype == torch.int64 and counts.sum().item() == draws
    assert counts[4].item() == 0  # zero weight (prompt, padding) is never drawn
    # binomial std of a share is at most sqrt(0.25 / 200000) = 0.0011; allow 5 sigma
    assert torch.allclose(counts.double() / draws, D, atol=0.0056)
    # default n: one draw per answer token; same seed, same draw
    small = boosting.resample_counts(D, torch.Generator().manual_seed(1))
    assert small.sum().item() == 4
    assert torch.equal(small, boosting.resample_counts(D, torch.Generator().manual_seed(1)))


def test_resampling_keeps_the_padded_layout():
    D = boosting.initial_weights(torch.tensor([[0, 1, 1], [0, 0, 1]], dtype=torch.bool))
    counts = boosting.resample_counts(D, torch.Generator().manual_seed(0))
    assert counts.shape == (2, 3) and counts.sum().item() == 3
    assert counts[0, 0].item() == 0 and counts[1, :2].sum().item() == 0


def test_loss_multipliers_of_uniform_weights_are_one():
    D = uniform(49)  # 1/49 * 49 is not exactly 1 in float64; the float32 multiplier is
    assert torch.equal(TOKEN_WEIGHTINGS.get("reweight")(D, torch.Generator()), torch.ones(49))
    D2 = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    # n * D: 7 * 0.05 = 0.35, 7 * 0.375 = 2.625
    assert torch.allclose(boosting.reweight_multipliers(D2), torch.tensor([0.35, 2.625, 0.35, 0.35, 0.35, 2.625, 0.35]))
    counts = TOKEN_WEIGHTINGS.get("resample")(D2, torch.Generator().manual_seed(0))
    assert counts.dtype == torch.float32 and counts.sum().item() == 7


def test_bootstrap_counts():
    counts = boosting.bootstrap_counts(10_000, torch.Generator().manual_seed(0))
    assert counts.shape == (10_000,) and counts.sum().item() == 10_000
    # a bootstrap resample leaves out about (1 - 1/N)^N ~ 1/e = 0.368 of the examples
    assert (counts == 0).double().mean().item() == pytest.approx(math.exp(-1), abs=0.015)
    assert torch.equal(counts, boosting.bootstrap_counts(10_000, torch.Generator().manual_seed(0)))


def test_weight_summaries():
    assert boosting.weight_entropy(uniform(10)) == pytest.approx(math.log(10))
    assert boosting.top_share(uniform(10)) == pytest.approx(0.1)
    D2 = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    # top ceil(0.7) = 1 token holds 0.375; entropy = -(5 * 0.05 log 0.05 + 2 * 0.375 log 0.375)
    assert boosting.top_share(D2) == pytest.approx(0.375)
    assert boosting.weight_entropy(D2) == pytest.approx(-(5 * 0.05 * math.log(0.05) + 2 * 0.375 * math.log(0.375)))


def test_shrinkage_scales_the_update_not_the_ensemble_weight():
    """nu = 0.5 on alpha = ln 3: a missed token is multiplied by sqrt(3) instead of 3 (hand-worked)."""
    D, miss = torch.full((4,), 0.25, dtype=torch.float64), torch.tensor([True, False, False, False])
    full = boosting.update_weights(D, miss, math.log(3), round=1)
    half = boosting.update_weights(D, miss, math.log(3), round=1, learning_rate=0.5)
    assert full.tolist() == pytest.approx([3 / 6, 1 / 6, 1 / 6, 1 / 6], abs=1e-15)
    r3 = math.sqrt(3)
    assert half.tolist() == pytest.approx([r3 / (r3 + 3), 1 / (r3 + 3), 1 / (r3 + 3), 1 / (r3 + 3)], abs=1e-15)
    assert torch.equal(boosting.update_weights(D, miss, math.log(3), 1, learning_rate=1.0), full)


def test_uniform_mix_keeps_a_floor_on_every_answer_token():
    """lambda = 0.5 after the update: (1 - 0.5) [3/6, 1/6, 1/6, 1/6, 0] + 0.5 / 4 on the 4 answer tokens;
    a zero weight (prompt, padding) stays zero."""
    D = torch.tensor([0.25, 0.25, 0.25, 0.25, 0.0], dtype=torch.float64)
    miss = torch.tensor([True, False, False, False, False])
    mixed = boosting.update_weights(D, miss, math.log(3), round=1, uniform_mix=0.5)
    assert mixed.tolist() == pytest.approx([0.25 + 0.125, 1 / 12 + 0.125, 1 / 12 + 0.125, 1 / 12 + 0.125, 0.0],
                                           abs=1e-15)
    assert mixed.sum().item() == pytest.approx(1.0, abs=1e-15)


def test_effective_sample_size():
    assert boosting.effective_sample_size(torch.full((4,), 0.25, dtype=torch.float64)) == pytest.approx(4.0)
    skewed = torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=torch.float64)
    assert boosting.effective_sample_size(skewed) == pytest.approx(1 / (0.49 + 3 * 0.01))
