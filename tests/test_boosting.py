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
    alpha = boosting.alpha("samme", eps, k=4)
    # log((1 - 2/7) / (2/7)) + log(4 - 1) = log(5/2) + log(3) = log(7.5)
    assert math.log(4 - 1) == pytest.approx(1.0986122886681098)
    assert alpha == pytest.approx(2.0149030205422647)
    assert boosting.stop_reason(alpha, eps, "samme") is None
    D2 = boosting.update_weights(D, MISS, alpha, round=1)
    # missed: (1/7) * 7.5, kept: 1/7; Z = (5 * 1 + 2 * 7.5) / 7 = 20/7
    # -> missed 7.5/20 = 0.375, kept 1/20 = 0.05; the missed tokens now hold 1 - 1/K = 0.75 of the mass
    expected = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    assert torch.allclose(D2, expected, atol=1e-12)
    assert D2[MISS].sum().item() == pytest.approx(0.75)


def test_hand_worked_round_adaboost():
    D = uniform(7)
    eps = boosting.weighted_error(D, MISS, round=1)
    alpha = boosting.alpha("adaboost", eps, k=4)  # K plays no part
    # 0.5 * log((5/7) / (2/7)) = 0.5 * log(2.5)
    assert alpha == pytest.approx(0.45814536593707755)
    D2 = boosting.update_weights(D, MISS, alpha, round=1)
    # exp(alpha) = sqrt(2.5); Z = (5 + 2 sqrt(2.5)) / 7 = (5 + sqrt(10)) / 7
    # -> kept 1 / (5 + sqrt(10)) = 0.12251482265544136, missed sqrt(2.5) / (5 + sqrt(10)) = 0.19371294336139655
    k, m = 0.12251482265544136, 0.19371294336139655
    assert torch.allclose(D2, torch.tensor([k, m, k, k, k, m, k], dtype=torch.float64), atol=1e-12)


def test_hand_worked_sequence_level_round():
    seq_miss = boosting.sequence_misses(MISS, OFFSETS)
    # answers 0 and 2 have a missed token, answer 1 has none: the miss covers all their tokens
    assert seq_miss.tolist() == [True, True, False, False, False, True, True]
    D = uniform(7)
    eps = boosting.weighted_error(D, seq_miss, round=1)
    assert eps == pytest.approx(4 / 7)
    alpha = boosting.alpha("samme", eps, k=4)
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


def test_perfect_expert_is_clipped_and_leaves_weights_alone():
    D = uniform(7)
    none = torch.zeros(7, dtype=torch.bool)
    eps = boosting.weighted_error(D, none, round=2)
    assert eps == 1e-10
    alpha = boosting.alpha("samme", eps, k=4)
    # log((1 - 1e-10) / 1e-10) + log(3) = 23.025850929840457 + 1.0986122886681098
    assert alpha == pytest.approx(24.124463218508566)
    assert torch.allclose(boosting.update_weights(D, none, alpha, round=2), D)


def test_chance_or_worse_stops_boosting():
    everything = torch.ones(7, dtype=torch.bool)
    eps = boosting.weighted_error(uniform(7), everything, round=3)
    assert eps == 1 - 1e-10  # clipped from 1
    alpha = boosting.alpha("samme", eps, k=4)
    assert alpha < 0
    reason = boosting.stop_reason(alpha, eps, "samme")
    assert "no better than chance" in reason and "<= 0" in reason
    # eps = 0.8 > 1 - 1/K = 0.75: log(0.2/0.8) + log(3) = log(0.75) < 0
    assert boosting.alpha("samme", 0.8, k=4) == pytest.approx(math.log(0.75))
    assert boosting.stop_reason(boosting.alpha("samme", 0.8, k=4), 0.8, "samme") is not None
    # at eps = 1 - 1/K exactly, alpha is 0 (chance level)
    assert boosting.alpha("samme", 0.75, k=4) == pytest.approx(0.0, abs=1e-12)
    # exactly at chance, rounding can leave alpha a hair above 0 (K = 9: +4.4e-16): still a stop
    for k in (9, 11, 12, 400, 49152):
        eps_chance = 1 - 1 / k
        assert boosting.stop_reason(boosting.alpha("samme", eps_chance, k), eps_chance, "samme") is not None
    assert boosting.stop_reason(boosting.alpha("samme", 0.74, k=4), 0.74, "samme") is None  # just better than chance
    # adaboost: chance is eps = 0.5, alpha = 0.5 log(1) = 0 -> stop
    assert boosting.alpha("adaboost", 0.5, k=4) == 0.0
    assert boosting.stop_reason(0.0, 0.5, "adaboost") is not None


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


def test_unknown_rules_suggest_the_known_ones():
    with pytest.raises(UserError, match="samme"):
        boosting.alpha("sammee", 0.2, k=4)
    with pytest.raises(UserError, match="resample"):
        boosting.LOSS_MULTIPLIERS.get("resampel")
    with pytest.raises(ValueError, match="K >= 2"):
        boosting.alpha("samme", 0.2, k=1)


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
    assert torch.equal(boosting.LOSS_MULTIPLIERS.get("reweight")(D, torch.Generator()), torch.ones(49))
    D2 = torch.tensor([0.05, 0.375, 0.05, 0.05, 0.05, 0.375, 0.05], dtype=torch.float64)
    # n * D: 7 * 0.05 = 0.35, 7 * 0.375 = 2.625
    assert torch.allclose(boosting.reweight_multipliers(D2), torch.tensor([0.35, 2.625, 0.35, 0.35, 0.35, 2.625, 0.35]))
    counts = boosting.LOSS_MULTIPLIERS.get("resample")(D2, torch.Generator().manual_seed(0))
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
