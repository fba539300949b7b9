"""Difficulty strategies on hand-made rows: scores, tiers kept per question, cross-fitted folds, rater
panels, human annotations, the registry."""
import dataclasses
import json
import subprocess
import sys

import pytest

from ensemw2s.config import AnnotationSpec, DifficultySpec
from ensemw2s.errors import UserError
from ensemw2s.strategies import (NOT_ANNOTATED, STRATEGIES, UNLISTED, Context, annotated, by_annotation, by_length,
                                 cross_fit, group_by_uid, question_ranks, top_fraction)


class FakeRater:
    """Scores a row by a fixed function of its uid; records what it trained on and what it scored."""

    def __init__(self):
        self.calls = []

    def __call__(self, train_rows, score_rows):
        self.calls.append(({r["uid"] for r in train_rows}, [r["uid"] for r in score_rows]))
        return [int(r["uid"][:6], 16) / 16**6 for r in score_rows]


def row_loss(train_rows, score_rows):
    """A rater whose loss on a row is the row's own `loss` field."""
    return [r["loss"] for r in score_rows]


def context(strategy: str, hard_sources=frozenset(), raters=None, data_dir=".", **difficulty) -> Context:
    return Context(frozenset(hard_sources), DifficultySpec(strategy=strategy, **difficulty), 0,
                   lambda name: raters[name], data_dir)


def test_each_strategy_says_what_it_needs():
    assert {name: STRATEGIES.get(name).needs for name in STRATEGIES} == {
        "annotation": "annotation", "length": None, "model": "rater", "source": None}
    assert [name for name in STRATEGIES if STRATEGIES.get(name).needs_rater] == ["model"]


def test_an_unknown_strategy_names_the_key_and_a_close_name():
    with pytest.raises(UserError, match=r"^datasets\[0\].difficulty.strategy: unknown difficulty strategy 'lenght'. "
                                        r"Did you mean 'length'\? Known: annotation, length, model, source.$"):
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
    scores, hard = STRATEGIES.get("model").rate(
        rows, context("model", raters={"weak": rater}, rater="weak", folds=2, hard_fraction=0.5))
    assert scores == [2 / 3, 1 / 3, 1.0, 0.0]  # the ranks of 0.625, 0.5, 0.75, 0.25 over 3 steps
    assert hard == [True, False, True, False]
    assert len(rater.calls) == 2 and all(not trained & set(batch) for trained, batch in rater.calls)


# ---------------------------------------------------------------------------------------------
# rater panels


def test_question_ranks_by_hand():
    """Questions ranked by their rows' mean (a: (1 + 5) / 2 = 3, b: 2, c: 3, d: 0): d 0, b 1, a and c tied
    at positions 2 and 3, so both 2.5; divided by the last position, 3."""
    rows = [{"uid": u} for u in ("a", "a", "b", "c", "d")]
    assert question_ranks(rows, [1.0, 5.0, 2.0, 3.0, 0.0]) == [2.5 / 3, 2.5 / 3, 1 / 3, 2.5 / 3, 0.0]
    assert question_ranks([{"uid": "a"}, {"uid": "b"}], [7.0, 7.0]) == [0.5, 0.5]


def test_a_panel_averages_its_raters_ranks_by_hand():
    """weak's losses a 1, b 3, c 3, d 2 -> ranks a 0, d 1/3, b = c = 2.5/3; strong's a 2, b 0.5, c 4, d 3 ->
    b 0, a 1/3, d 2/3, c 1. Means: a 1/6, b 5/12, c 11/12, d 1/2: the hard half is c and d (weak alone: b, c)."""
    rows = [{"uid": u, "loss": weak, "strong_loss": strong}
            for u, weak, strong in (("a", 1.0, 2.0), ("b", 3.0, 0.5), ("c", 3.0, 4.0), ("d", 2.0, 3.0))]
    raters = {"weak": row_loss, "strong": lambda train, held: [r["strong_loss"] for r in held]}
    model = STRATEGIES.get("model")
    scores, hard = model.rate(rows, context("model", raters=raters, rater=("weak", "strong"), folds=2, hard_fraction=0.5))
    # each mean: two roundings per rank and one per sum and halving, relative to values <= 1
    assert scores == pytest.approx([1 / 6, 5 / 12, 11 / 12, 1 / 2], rel=4 * 2**-52)
    assert hard == [False, False, True, True]
    _, weak_alone = model.rate(rows, context("model", raters=raters, rater="weak", folds=2, hard_fraction=0.5))
    assert weak_alone == [False, True, True, False]


def test_a_panel_of_one_calls_the_same_rows_hard_as_its_losses():
    """The single rater as it was (top_fraction of the cross-fitted losses) and as a panel of one agree, also
    where ranking rows instead of questions would not: A's losses 0 and 10 (mean 5) against B's 6 and 6
    (mean 6, so B is hard); row ranks would tie them (A: positions 0 and 3, B: 1.5 twice) and take A."""
    rows = [{"uid": u, "loss": x} for u, x in (("A", 0.0), ("A", 10.0), ("B", 6.0), ("B", 6.0))]
    losses = cross_fit(rows, row_loss, 2, seed=0)
    for spelling in ("weak", ("weak",)):
        _, hard = STRATEGIES.get("model").rate(
            rows, context("model", raters={"weak": row_loss}, rater=spelling, folds=2, hard_fraction=0.5))
        assert hard == top_fraction(rows, losses, 0.5) == [False, False, True, True]


# ---------------------------------------------------------------------------------------------
# human annotations

ANNOTATIONS = {
    "EZ_e1": {"grade": "Grade 03", "bloom": "Remembering"},
    "EZ_e2": {"grade": "Grade 08", "bloom": "Applying"},
    "EZ_e3": {"bloom": "Applying"},  # annotated, but not with a grade
    "CH_c1": {"grade": "Grade 05", "bloom": "Analyzing"},
    "CH_c2": {"grade": "Grade 07", "bloom": "Analyzing"},  # neither easy nor hard
}
ROWS = [{"uid": "u1", "id": "e1", "source": "Easy"}, {"uid": "u2", "id": "e2", "source": "Easy"},
        {"uid": "u3", "id": "e3", "source": "Easy"}, {"uid": "u4", "id": "c1", "source": "Challenge"},
        {"uid": "u5", "id": "c2", "source": "Challenge"}, {"uid": "u6", "id": "c3", "source": "Challenge"},  # no entry
        {"uid": "u7", "id": "e1", "source": "Challenge"}]  # CH_e1: the key takes the row's source prefix


def annotation_context(tmp_path, file="grades.json", **changes) -> Context:
    (tmp_path / "grades.json").write_text(json.dumps(ANNOTATIONS))
    spec = {"file": file, "field": "grade", "key": {"Easy": "EZ_{id}", "Challenge": "CH_{id}"},
            "easy": ("Grade 03", "Grade 05"), "hard": ("Grade 08",), **changes}
    return context("annotation", data_dir=tmp_path, annotation=AnnotationSpec(**spec))


def test_annotation_keeps_easy_and_hard_rows_and_counts_the_others(tmp_path):
    ctx = annotation_context(tmp_path)
    kept, left_out = annotated(ROWS, ctx)
    assert [r["uid"] for r in kept] == ["u1", "u2", "u4"]
    assert left_out == {NOT_ANNOTATED: 3, UNLISTED: 1}  # u3, u6, u7; u5 (Grade 07)
    scores, hard = by_annotation(kept, ctx)
    assert scores == [0.0, 2.0, 1.0]  # Grade 03, 08, 05 in easy + hard = [03, 05, 08]
    assert hard == [False, True, False]
    assert STRATEGIES.get("annotation").select is annotated


def test_annotation_file_is_taken_from_data_dir_unless_absolute(tmp_path):
    relative = annotation_context(tmp_path)  # file: grades.json, in data_dir = tmp_path
    assert len(annotated(ROWS, relative)[0]) == 3
    with pytest.raises(UserError, match="not found"):
        annotated(ROWS, dataclasses.replace(relative, data_dir=tmp_path / "elsewhere"))
    absolute = annotation_context(tmp_path, file=str(tmp_path / "grades.json"))
    assert len(annotated(ROWS, dataclasses.replace(absolute, data_dir=tmp_path / "elsewhere"))[0]) == 3


def test_one_template_serves_every_source(tmp_path):
    kept, left_out = annotated(ROWS, annotation_context(tmp_path, key="EZ_{id}"))
    assert [r["uid"] for r in kept] == ["u1", "u2", "u7"]  # u7 (id e1) now reads EZ_e1
    assert left_out == {NOT_ANNOTATED: 4, UNLISTED: 0}


@pytest.mark.parametrize("changes, message", [
    ({"file": "none.json"}, r"difficulty.annotation.file: .*none.json not found; a relative path is taken from data_dir"),
    ({"field": "grad"}, r"difficulty.annotation.field: unknown annotation field 'grad'. Did you mean 'grade'\? "
                        r"Known: bloom, grade."),
    ({"key": "ARC_{id}"}, r"no row is annotated in .*grades.json \(the first row's key is 'ARC_e1'\); "
                          r"fix difficulty.annotation.key"),
    ({"easy": ("Grade 01",), "hard": ("Grade 12",)}, r"no annotated row has a grade in easy or hard; the rows' "
                                                     r"values are Grade 03, Grade 05, Grade 07, Grade 08"),
    ({"key": "EZ_{ident}"}, r"template 'EZ_\{ident\}' cannot be filled from a row of source 'Easy' \(KeyError: 'ident'\)"),
    ({"key": {"Easy": "EZ_{id}"}}, r"no template for source 'Challenge'; add Challenge: TEMPLATE"),
])
def test_annotation_errors_name_the_fix(tmp_path, changes, message):
    with pytest.raises(UserError, match=message):
        annotated(ROWS, annotation_context(tmp_path, **changes))


def test_an_annotation_file_that_is_not_an_object_of_objects_is_refused(tmp_path):
    ctx = annotation_context(tmp_path)
    (tmp_path / "grades.json").write_text(json.dumps([{"grade": "Grade 03"}]))
    with pytest.raises(UserError, match="must be one JSON object of key -> "):
        annotated(ROWS, ctx)
    (tmp_path / "grades.json").write_text("{")
    with pytest.raises(UserError, match="is not valid JSON"):
        annotated(ROWS, ctx)


def test_strategies_import_no_torch():
    code = "import ensemw2s.strategies, sys; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
