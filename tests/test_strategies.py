"""Difficulty strategies on hand-made rows: scores, tiers kept per question, cross-fitted folds, the registry."""
import subprocess
import sys

import pytest

from ensemw2s.config import DifficultySpec
from ensemw2s.errors import UserError
from ensemw2s.strategies import STRATEGIES, Context, by_length, cross_fit, group_by_uid, top_fraction


class FakeRater:
    """Scores a row by a fixed function of its uid; records what it trained on and what it scored."""

    def __init__(self):
        self.calls = []

    def __call__(self, train_rows, score_rows):
        self.calls.append(({r["uid"] for r in train_rows}, [r["uid"] for r in score_rows]))
        return [int(r["uid"][:6], 16) / 16**6 for r in score_rows]


def context(strategy: str, hard_sources=frozenset(), rater=None, **difficulty) -> Context:
    return Context(frozenset(hard_sources), DifficultySpec(strategy=strategy, **difficulty), 0, lambda: rater)


def test_each_strategy_says_whether_it_needs_a_rater():
    assert {name: STRATEGIES.get(name).needs_rater for name in STRATEGIES} == {
        "length": False, "model": True, "source": False}


def test_an_unknown_strategy_names_the_key_and_a_close_name():
    with pytest.raises(UserError, match=r"^datasets\[0\].difficulty.strategy: unknown difficulty strategy 'lenght'. "
                                        r"Did you mean 'length'\? Known: length, model, source.$"):
        STRATEGIES.check("lenght", "datasets[0].difficulty.strategy")


def test_group_by_uid_keeps_row_order():
    assert group_by_uid([{"uid": u} for u in "abab c"]) == {"a": [0, 2], "b": [1, 3], " ": [4], "c": [5]}


def test_source_strategy_uses_the_dataset_labels():
    ctx = context("source", {"ARC-Challenge"})
    scores, hard = STRATEGIES.get("source").rate([{"source": "ARC-Easy"}, {"source": "ARC-Challenge"}], ctx)
    assert hard == [False, True] and scores == [0.0, 1.0]


def test_length_strategy_counts_prompt_and_answer_words():
    rows = [{"uid": "a", "prompt": "Question: Why?\nAnswer:", "answer": "because"},  # 3 + 1 words
            {"uid": "b", "prompt": "Question: Where is it?\nAnswer:", "answer": "in the box"},  # 5 + 3
            {"uid": "c", "prompt": "Question: Who?\nAnswer:", "answer": "Ann and Bo"},  # 3 + 3
            {"uid": "d", "prompt": "Question: What now?\nAnswer:", "answer": "y"}]  # 4 + 1
    scores, hard = by_length(rows, context("length", hard_fraction=0.5))
    assert scores == [4.0, 8.0, 6.0, 5.0]
    assert hard == [False, True, True, False]  # the longest half


def test_top_fraction_keeps_a_question_in_one_tier():
    rows = [{"uid": u} for u in ("a", "a", "b", "c", "d", "d")]
    hard = top_fraction(rows, [9, 0, 5, 1, 2, 2], 0.5)  # means: a 4.5, b 5, c 1, d 2
    assert hard == [True, True, True, False, False, False]


def test_cross_fit_folds_hold_whole_questions():
    rows = [{"uid": u} for u in "aabbcdeeef"]
    rater = FakeRater()
    cross_fit(rows, rater, 3, seed=0)
    for trained, batch in rater.calls:
        assert not trained & set(batch)
    assert sorted(u for _, batch in rater.calls for u in batch) == sorted(r["uid"] for r in rows)
    with pytest.raises(UserError, match="folds=3 but only 2 distinct questions"):
        cross_fit([{"uid": "a"}, {"uid": "b"}], rater, 3, seed=0)


def test_model_strategy_scores_each_row_out_of_fold():
    rows = [{"uid": u} for u in ("a00000", "800000", "c00000", "400000")]  # FakeRater: 0.625, 0.5, 0.75, 0.25
    rater = FakeRater()
    scores, hard = STRATEGIES.get("model").rate(rows, context("model", rater=rater, folds=2, hard_fraction=0.5))
    assert scores == [0.625, 0.5, 0.75, 0.25] and hard == [True, False, True, False]
    assert len(rater.calls) == 2 and all(not trained & set(batch) for trained, batch in rater.calls)


def test_strategies_import_no_torch():
    code = "import ensemw2s.strategies, sys; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
