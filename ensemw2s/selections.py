"""The rows of metrics.csv that tables and figures both show: which seed's row, which round, which order.

A table (`tables.py`) and a figure (`figures.py`) of the same models must select the same rows, so the
selections live here once. With several seeds the `seed = all` rows (mean over seeds, t-interval) are
shown; with one seed, that seed's rows (bootstrap interval over examples). r* is read from the
ensembles' `best_round` rows (chosen on val); a student is read at its supervisor's r*.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ensemw2s.collect import COLUMNS
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.scores import SCORES

SPLIT_LABEL = {"val": "val", "test_id": "ID", "test_ood": "OOD"}
SCORE_LABEL = {"acc": "acc", "acc_norm": "acc_norm", "exact_match": "EM"}
KEY = [c for c in COLUMNS if c not in ("seed", "value", "ci_low", "ci_high", "n", "note")]
FAMILY = ["weak_model", "strong_model", "dataset", "role", "ensemble", "score"]  # one model's rows over rounds


def load_metrics(path: str | Path) -> pd.DataFrame:
    """Read metrics.csv: text columns as str ('' for empty), seed as text ('all' = pooled over seeds)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: metrics file not found; run `ensemw2s metrics` first")
    text = ["weak_model", "strong_model", "dataset", "eval_split", "role", "ensemble", "seed", "score", "metric", "note"]
    frame = pd.read_csv(path, dtype={c: str for c in text})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataFileError(f"{path}: not a metrics.csv (missing columns {', '.join(missing)})")
    frame[text] = frame[text].fillna("")
    frame["round"] = frame["round"].astype(int)
    return frame


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement: the seed-'all' row where there is one, else the (single) seed's row."""
    has_all = frame.loc[frame["seed"] == "all", KEY].drop_duplicates()
    marked = frame.merge(has_all.assign(_pooled=True), on=KEY, how="left")
    keep = (marked["seed"] == "all") | marked["_pooled"].isna()
    return frame.loc[keep.to_numpy()].reset_index(drop=True)


def need(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """`frame`, or a UserError naming the models `what` to score first: no output is drawn from no rows."""
    if frame.empty:
        raise UserError(f"metrics.csv has no rows for {what}; score those models first")
    return frame


def accuracy_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows (acc, acc_norm, exact_match)."""
    return frame[frame["metric"].isin(SCORES) & (frame["metric"] == frame["score"])]


def best_rounds(frame: pd.DataFrame) -> pd.DataFrame:
    """r* per (weak, strong, dataset, role, ensemble, score), with r_last = the last round scored: the
    ensemble's best_round row (chosen on val); a student takes its supervising ensemble's r* (choosing a
    student on its own gold val accuracy would hand it gold supervision)."""
    supervisor = ["weak_model", "dataset", "ensemble", "score"]
    best = frame[(frame["metric"] == "best_round") & (frame["role"] == "ensemble")][supervisor + ["value"]]
    best = best.rename(columns={"value": "r_star"})
    last = (frame[frame["role"].isin(["ensemble", "student"]) & frame["metric"].isin(SCORES)]
            .groupby(FAMILY, as_index=False)["round"].max().rename(columns={"round": "r_last"}))
    out = last.merge(best, on=supervisor, how="left")
    out["r_star"] = out["r_star"].fillna(out["r_last"]).astype(int)
    return out[FAMILY + ["r_star", "r_last"]]


def at_best_round(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The `rows` of ensembles and students at their r* (from `frame`'s best_round rows)."""
    merged = rows.merge(best_rounds(frame), on=FAMILY, how="inner")
    return merged[merged["round"] == merged["r_star"]]


def ensemble_order(frame: pd.DataFrame) -> list[str]:
    """Ensemble names in metrics.csv's order (the ensembles' own rows first, then names only experts or
    students carry): the columns of the ablation table, and one colour per ensemble in every figure."""
    own = frame.loc[frame["role"] == "ensemble", "ensemble"]
    return [name for name in dict.fromkeys([*own, *frame["ensemble"]]) if name]


def pair_label(weak: str, strong: str) -> str:
    return f"{weak} -> {strong}" if strong else weak
