"""selections.py: which rows of metrics.csv the tables and figures show, on hand-written rows."""
from __future__ import annotations

import pandas as pd
import pytest

from ensemw2s.collect import COLUMNS
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.selections import (accuracy_rows, at_best_round, best_rounds, ensemble_order, load_metrics, need,
                                 pair_label, pooled)

ROW = dict(weak_model="w", strong_model="", dataset="d", eval_split="test_id", role="ensemble", ensemble="boost",
           round=1, seed="0", score="acc", metric="acc", value=0.5, ci_low="", ci_high="", n=4, note="")


def _frame(tmp_path, rows):
    path = tmp_path / "metrics.csv"
    pd.DataFrame([{**ROW, **r} for r in rows], columns=COLUMNS).to_csv(path, index=False)
    return load_metrics(path)


def test_load_metrics_reads_text_as_text(tmp_path):
    frame = _frame(tmp_path, [dict(seed="all"), dict(seed="0")])
    assert list(frame["seed"]) == ["all", "0"] and list(frame["strong_model"]) == ["", ""]
    assert frame["round"].dtype.kind == "i"


def test_load_metrics_names_the_missing_file_and_columns(tmp_path):
    with pytest.raises(UserError, match="metrics file not found; run `ensemw2s metrics` first"):
        load_metrics(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("weak_model,value\nw,1\n")
    with pytest.raises(DataFileError, match="not a metrics.csv .missing columns strong_model"):
        load_metrics(tmp_path / "bad.csv")


def test_pooled_keeps_the_seed_all_row_else_the_single_seed(tmp_path):
    frame = _frame(tmp_path, [dict(seed="0", value=0.4), dict(seed="1", value=0.6), dict(seed="all", value=0.5),
                              dict(round=2, seed="0", value=0.7)])
    assert list(zip(pooled(frame)["round"], pooled(frame)["value"])) == [(1, 0.5), (2, 0.7)]


def test_accuracy_rows_and_need(tmp_path):
    frame = _frame(tmp_path, [dict(), dict(metric="best_round", value=1), dict(score="acc", metric="acc_norm")])
    assert len(accuracy_rows(frame)) == 1  # only where the metric is the score itself
    with pytest.raises(UserError, match="no rows for students; score those models first"):
        need(frame[frame["role"] == "student"], "students")


def test_students_take_their_supervisors_best_round(tmp_path):
    """r* = 2 from the ensemble's best_round row; its student reads r* = 2 too; with no best_round row
    (bagging) r* is the last round scored."""
    rows = [dict(eval_split="val", round=0, metric="best_round", value=2)]
    for role, strong in (("ensemble", ""), ("student", "s")):
        rows += [dict(role=role, strong_model=strong, round=r, value=0.1 * r) for r in (1, 2, 3)]
    rows += [dict(ensemble="bagging", round=r) for r in (1, 2)]
    frame = _frame(tmp_path, rows)
    best = best_rounds(frame).set_index(["role", "ensemble"])
    assert best.loc[("ensemble", "boost"), ["r_star", "r_last"]].tolist() == [2, 3]
    assert best.loc[("student", "boost"), ["r_star", "r_last"]].tolist() == [2, 3]
    assert best.loc[("ensemble", "bagging"), ["r_star", "r_last"]].tolist() == [2, 2]
    at = at_best_round(frame, accuracy_rows(frame))
    assert sorted(zip(at["role"], at["ensemble"], at["round"])) == [("ensemble", "bagging", 2),
                                                                    ("ensemble", "boost", 2), ("student", "boost", 2)]


def test_ensemble_order_is_metrics_order_ensembles_first(tmp_path):
    frame = _frame(tmp_path, [dict(role="weak_base", ensemble=""), dict(role="expert", ensemble="sequence"),
                              dict(ensemble="boost-uniform"), dict(ensemble="boost"), dict(ensemble="boost-uniform"),
                              dict(role="student", ensemble="vote")])
    assert ensemble_order(frame) == ["boost-uniform", "boost", "sequence", "vote"]


def test_pair_label():
    assert pair_label("w", "s") == "w -> s" and pair_label("w", "") == "w"
