"""`ensemw2s report`: metrics.csv -> one table (CSV, Markdown, LaTeX) or figure (PNG, PDF) per name.

One function per table or figure, registered by name in `TABLES` / `FIGURES`; adding one is adding a
function. Every function reads the tidy metrics.csv (`collect.py`) and, for the boosting figures, the
boosting.json files. With several seeds the `seed = all` rows (mean over seeds, t-interval) are shown;
with one seed, that seed's rows (bootstrap interval over examples).

Tables: each function returns a long frame (index columns, `column`, `value`, `ci_low`, `ci_high`,
`fmt`); `write_table` writes it wide: numbers (with `<column> ci_low/ci_high` beside) to `.csv`, and
formatted cells "value [low, high]" to `.md` and `.tex`. Accuracies are shown in percent.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ensemw2s.collect import BOOSTING_METRICS, COLUMNS, boosting_rows
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.evaluate import SCORES
from ensemw2s.io import atomic_path, write_text
from ensemw2s.registry import Registry, unknown_name_message

METHOD = "boost"  # the EnsemW2S ensemble (token-level AdaBoost weights); the paper's claims are about it
ABLATIONS = ("boost", "boost-uniform", "bagging", "sequence")
SPLIT_LABEL = {"val": "val", "test_id": "ID", "test_ood": "OOD"}
SCORE_LABEL = {"acc": "acc", "acc_norm": "acc_norm", "exact_match": "EM"}
PAPER_CLAIMS = [  # (claim, role, metric, split, paper's number in accuracy points)
    ("experts ID", "ensemble", "improvement_vs_expert1", "test_id", 4.0),
    ("experts OOD", "ensemble", "improvement_vs_expert1", "test_ood", 6.0),
    ("students ID", "student", "improvement_vs_student1", "test_id", 3.2),
    ("students OOD", "student", "improvement_vs_student1", "test_ood", 2.28),
]
COMPUTE_METRICS = ("tokens_processed", "wall_time_s", "gpu_hours")
KEY = [c for c in COLUMNS if c not in ("seed", "value", "ci_low", "ci_high", "n", "note")]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # long: index columns + column, value, ci_low, ci_high, fmt, note
    index: list[str]
    caption: str
    row_order: dict[str, dict] = field(default_factory=dict)  # index column -> {value: rank}; else sorted


TABLES: Registry[Callable[[pd.DataFrame, list[Path]], Table]] = Registry("table")
FIGURES: Registry[Callable] = Registry("figure")


# ---------------------------------------------------------------------------------------------
# input


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


def _need(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    if frame.empty:
        raise UserError(f"metrics.csv has no rows for {what}; score those models first")
    return frame


def _scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows (acc, acc_norm, exact_match)."""
    return frame[frame["metric"].isin(SCORES) & (frame["metric"] == frame["score"])]


def _best_rounds(frame: pd.DataFrame) -> pd.DataFrame:
    """r* per (weak, strong, dataset, role, ensemble, score), with r_last = the last round scored: the
    ensemble's best_round row (chosen on val); a student takes its supervising ensemble's r* (choosing a
    student on its own gold val accuracy would hand it gold supervision)."""
    fam = ["weak_model", "strong_model", "dataset", "role", "ensemble", "score"]
    supervisor = ["weak_model", "dataset", "ensemble", "score"]
    best = frame[(frame["metric"] == "best_round") & (frame["role"] == "ensemble")][supervisor + ["value"]]
    best = best.rename(columns={"value": "r_star"})
    last = (frame[frame["role"].isin(["ensemble", "student"]) & frame["metric"].isin(SCORES)]
            .groupby(fam, as_index=False)["round"].max().rename(columns={"round": "r_last"}))
    out = last.merge(best, on=supervisor, how="left")
    out["r_star"] = out["r_star"].fillna(out["r_last"]).astype(int)
    return out[fam + ["r_star", "r_last"]]


def _at_best_round(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    fam = ["weak_model", "strong_model", "dataset", "role", "ensemble", "score"]
    merged = rows.merge(_best_rounds(frame), on=fam, how="inner")
    return merged[merged["round"] == merged["r_star"]]


def _model_label(row) -> str:
    if row["role"] in ("weak_base", "strong_base", "ceiling"):
        return row["role"].replace("_", " ")
    return f"{row['role']} {row['ensemble']}".strip()


# ---------------------------------------------------------------------------------------------
# tables


CELL_FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda v: f"{100 * v:.1f}",  # accuracy (fraction) in percent
    "mde": lambda v: f"{v:.1f}",  # a minimum detectable effect, accuracy points
    "points": lambda v: f"{v:+.1f}",  # accuracy points, signed
    "claim": lambda v: f"{v:+g}",  # a number quoted from the paper, as written there
    "ratio": lambda v: f"{v:.2f}",  # PGR
    "int": lambda v: f"{int(round(v)):d}",
    "count": lambda v: f"{v:,.0f}",
    "seconds": lambda v: f"{v:.1f}",
}


def _cell(value: float, lo: float, hi: float, fmt: str, note: str = "") -> str:
    """"value [low, high]" in the column's format; "n/a" (with the reason, e.g. "gap CI includes 0") for a
    missing value; a `text` cell shows its note."""
    if fmt == "text":
        return note
    if pd.isna(value):
        return f"n/a ({note})" if note else "n/a"
    f = CELL_FORMATS[fmt]
    if pd.isna(lo) or pd.isna(hi) or fmt in ("int", "count", "claim"):
        return f(value)
    return f"{f(value)} [{f(lo)}, {f(hi)}]"


def _long(rows: pd.DataFrame, index: list[str], column: Callable[[pd.Series], str],
          fmt: str | Callable[[pd.Series], str]) -> pd.DataFrame:
    """Rows -> the long table frame; `column` names each row's header, `fmt` its number format."""
    out = rows.copy()
    records = [r for _, r in out.iterrows()]
    out["column"] = [column(r) for r in records]
    out["fmt"] = [fmt(r) if callable(fmt) else fmt for r in records]
    out["note"] = out["note"].fillna("") if "note" in out else ""
    return out[index + ["column", "value", "ci_low", "ci_high", "fmt", "note"]]


def _split_score(row) -> str:
    return f"{SPLIT_LABEL.get(row['eval_split'], row['eval_split'])} {SCORE_LABEL.get(row['score'], row['score'])}"


def _split_order(rows: pd.DataFrame) -> pd.DataFrame:
    order = {s: i for i, s in enumerate(SPLIT_LABEL)}
    return rows.assign(_s=rows["eval_split"].map(order)).sort_values("_s", kind="stable").drop(columns="_s")


def _latex_escape(text: str) -> str:
    """pandas escapes the cells, not the caption."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
               "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def render_table(table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, shown): the wide frame of numbers (with `<column> ci_low/ci_high` beside) and the wide frame
    of formatted cells "value [low, high]"; rows sorted by the index columns (by rank for `row_order`'s)."""
    long, index = table.frame, table.index
    columns = list(dict.fromkeys(long["column"]))  # first appearance: the order the function chose
    keys = long[index].drop_duplicates()
    sort_by = keys.assign(**{c: keys[c].map(order) for c, order in table.row_order.items()})  # ranks replace values
    keys = keys.loc[sort_by.sort_values(index, kind="stable").index].reset_index(drop=True)
    numeric, shown = keys.copy(), keys.copy()
    for col in columns:
        part = long[long["column"] == col].drop_duplicates(index)
        aligned = keys.merge(part, on=index, how="left")
        numeric[col] = aligned["value"].to_numpy()
        if aligned["ci_low"].notna().any():
            numeric[f"{col} ci_low"] = aligned["ci_low"].to_numpy()
            numeric[f"{col} ci_high"] = aligned["ci_high"].to_numpy()
        if (aligned["fmt"] == "text").any():  # a column of words: the words go to the CSV too
            numeric[col] = aligned["note"].fillna("").to_numpy()
        shown[col] = [_cell(v, lo, hi, f, "" if pd.isna(n) else n) if isinstance(f, str) else ""
                      for v, lo, hi, f, n in zip(aligned["value"], aligned["ci_low"], aligned["ci_high"],
                                                 aligned["fmt"], aligned["note"])]
    return numeric, shown


def table_markdown(table: Table) -> str:
    """The caption and the Markdown table (what `<name>.md` holds and the README shows)."""
    _, shown = render_table(table)
    return f"{table.caption}\n\n{shown.to_markdown(index=False, disable_numparse=True)}\n"  # keep our formats


def write_table(table: Table, out: str | Path) -> None:
    """`out.csv` (numbers), `out.md` and `out.tex` (formatted cells with CIs)."""
    numeric, shown = render_table(table)
    out = Path(out)
    with atomic_path(out.with_name(out.name + ".csv")) as tmp:
        numeric.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    write_text(out.with_name(out.name + ".md"), table_markdown(table))
    latex = shown.to_latex(index=False, escape=True, caption=_latex_escape(table.caption), label=f"tab:{out.name}")
    write_text(out.with_name(out.name + ".tex"), latex)


@TABLES.register("experts")
def table_experts(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Weak base, experts h_t and ensembles of the first r experts, per round, ID and OOD."""
    rows = _scores(pooled(frame))
    rows = rows[rows["role"].isin(["weak_base", "expert", "ensemble"])
                & rows["eval_split"].isin(["test_id", "test_ood"])]
    rows = _split_order(_need(rows, "experts or ensembles"))
    rows = rows.assign(model=[_model_label(r) for _, r in rows.iterrows()])
    index = ["dataset", "weak_model", "model", "round"]
    return Table(_long(rows, index, _split_score, "pct"), index,
                 "Accuracy (%) of the weak base, each expert h_t (round t) and the ensemble of the first r experts "
                 "(round r), in-distribution (ID: test_id) and out-of-distribution (OOD: test_ood), with 95% CIs.")


STUDENT_COLUMNS = {"student": "student", "strong_base": "strong base", "ceiling": "ceiling",
                   "gap_ceiling_minus_weak": "gap", "pgr_vs_weak": "PGR(weak)", "pgr_vs_ensemble": "PGR(ens)",
                   "pgr_strong_base_vs_weak": "PGR(strong base)", "improvement_vs_strong_base": "vs strong base"}
STUDENT_FORMATS = {"pgr_vs_weak": "ratio", "pgr_vs_ensemble": "ratio", "pgr_strong_base_vs_weak": "ratio",
                   "improvement_vs_strong_base": "points"}


def _pair_reference(p: pd.DataFrame, students: pd.DataFrame, role: str) -> pd.DataFrame:
    """Accuracy rows of the ceiling or the strong base beside every student row of the same strong model."""
    ident = ["weak_model", "strong_model", "dataset", "ensemble", "round", "score", "eval_split"]
    ref = _scores(p[p["role"] == role]).drop(columns=["weak_model", "ensemble", "round"])
    return students[ident].drop_duplicates().merge(ref, on=["strong_model", "dataset", "score", "eval_split"])


@TABLES.register("students")
def table_students(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Students per supervisor (ensemble, r) beside the untaught strong base and the ceiling: the gap, PGR
    against h_1, the ensemble and what the strong base alone would get, ID and OOD."""
    p = pooled(frame)
    p = p[p["eval_split"].isin(["test_id", "test_ood"])]
    students = p[(p["role"] == "student") & p["metric"].isin([*SCORES, *STUDENT_COLUMNS])]
    students = _need(students[students["metric"].isin(STUDENT_COLUMNS) | (students["metric"] == students["score"])],
                     "students")
    students = students.assign(metric=students["metric"].where(~students["metric"].isin(SCORES), "student"))
    rows = pd.concat([students, _pair_reference(p, students, "ceiling").assign(metric="ceiling"),
                      _pair_reference(p, students, "strong_base").assign(metric="strong_base")], ignore_index=True)
    order = {m: i for i, m in enumerate(STUDENT_COLUMNS)}
    rows = _split_order(rows.assign(_m=rows["metric"].map(order)).sort_values("_m", kind="stable"))
    index = ["dataset", "weak_model", "strong_model", "score", "ensemble", "round"]
    return Table(
        _long(rows, index, lambda r: f"{SPLIT_LABEL[r['eval_split']]} {STUDENT_COLUMNS[r['metric']]}",
              lambda r: STUDENT_FORMATS.get(r["metric"], "pct")),
        index,
        "Students taught by the ensemble of the first r experts: accuracy (%) beside the strong base zero-shot "
        "(what the strong model knew before it was taught) and the ceiling (%); the gap ceiling - weak (accuracy "
        "%, weak = the single expert h_1); PGR against h_1, against the ensemble supervisor, and PGR(strong "
        "base), what the untaught strong model would get in the student's place; 'vs strong base' = student - "
        "strong base (points). PGR is n/a, with the reason, where the gap's 95% CI does not exclude 0. CIs: "
        "accuracies bootstrap over questions, comparisons the paired (McNemar) estimator, PGR Fieller.")


@TABLES.register("rounds")
def table_rounds(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Accuracy per round r for experts, ensembles and students on every split, with r* chosen on val."""
    p = pooled(frame)
    rows = _need(_scores(p[p["role"].isin(["expert", "ensemble", "student"])]), "experts, ensembles or students")
    rows = rows.sort_values("round", kind="stable")
    best = _best_rounds(p)
    index = ["dataset", "weak_model", "strong_model", "role", "ensemble", "score", "eval_split"]
    long = _long(rows, index, lambda r: f"r={r['round']}", "pct")
    stars = rows[index].drop_duplicates().merge(best, on=[c for c in index if c != "eval_split"], how="inner")
    stars = stars.assign(column="r*", value=stars["r_star"].astype(float), ci_low=np.nan, ci_high=np.nan, fmt="int",
                         note="")
    return Table(pd.concat([long, stars[long.columns]], ignore_index=True), index,
                 "Accuracy (%) for every round r (experts: h_r alone; ensembles and students: the first r experts), "
                 "with 95% CIs; r* = the ensemble size with the best val accuracy (ties: smaller r; r* = 1 is h_1 alone); "
                 "students are read at their supervisor's r*.")


@TABLES.register("ablations")
def table_ablations(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Token-level boosting vs its uniform-weight ensemble, bagging and sequence-level weights, each at its r*."""
    p = pooled(frame)
    rows = _scores(p[p["role"].isin(["ensemble", "student"]) & p["eval_split"].isin(["test_id", "test_ood"])])
    rows = _need(_at_best_round(p, rows), "ensembles or students")
    order = {e: i for i, e in enumerate(ABLATIONS)}
    rows = rows.assign(_e=rows["ensemble"].map(order).fillna(len(order))).sort_values(["_e", "ensemble"], kind="stable")
    index = ["dataset", "weak_model", "strong_model", "role", "score", "eval_split"]
    return Table(_long(rows, index, lambda r: r["ensemble"], "pct"), index,
                 "Ablations: accuracy (%) of each ensemble (boost = token-level AdaBoost weights; boost-uniform = "
                 "the same experts, equal weights; bagging = experts on bootstrap resamples; sequence = "
                 "sequence-level weights) and of its student, each at its own r* chosen on val, with 95% CIs.")


@TABLES.register("compute")
def table_compute(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Compute per scored model: tokens processed (and wall time / GPU-hours where metrics.csv has them)."""
    rows = _need(frame[frame["metric"].isin(COMPUTE_METRICS) & (frame["seed"] != "all")], "compute (tokens_processed)")
    index = ["dataset", "weak_model", "strong_model", "role", "ensemble", "round"]
    per_model = rows.groupby(index + ["metric"], as_index=False).agg(value=("value", "mean"), seeds=("seed", "nunique"))
    per_model = per_model.assign(ci_low=np.nan, ci_high=np.nan)
    order = {m: i for i, m in enumerate(COMPUTE_METRICS)}
    per_model = per_model.assign(_m=per_model["metric"].map(order)).sort_values("_m", kind="stable")
    seeds = per_model.drop_duplicates(index).assign(metric="seeds", value=lambda d: d["seeds"].astype(float))
    rows = pd.concat([per_model, seeds], ignore_index=True)
    fmt = {"tokens_processed": "count", "wall_time_s": "seconds", "gpu_hours": "ratio", "seeds": "int"}
    return Table(_long(rows, index, lambda r: r["metric"], lambda r: fmt[r["metric"]]), index,
                 "Compute per model: mean over seeds of the tokens run through the model(s) while scoring it "
                 "(an ensemble counts every expert), and wall time or GPU-hours where recorded. Training cost per "
                 "step is in provenance.json.")


PRIMARY_SCORE = "acc"  # the pre-specified primary metric: multiple-choice accuracy


def _claim_rows(p: pd.DataFrame, claim: str, role: str, metric: str, split: str, paper: float) -> pd.DataFrame:
    """One claim's comparison rows (acc) at r* (chosen on val; students at their supervisor's r*) and at r = T,
    each with its MDE from the same standard error."""
    sel = p[(p["role"] == role) & (p["metric"] == metric) & (p["eval_split"] == split) & (p["ensemble"] == METHOD)
            & (p["score"] == PRIMARY_SCORE)]
    mde = p[(p["role"] == role) & (p["metric"] == f"{metric}_mde") & (p["eval_split"] == split)
            & (p["ensemble"] == METHOD) & (p["score"] == PRIMARY_SCORE)]
    fam = ["weak_model", "strong_model", "dataset", "role", "ensemble", "score"]
    sel = sel.merge(_best_rounds(p), on=fam, how="inner")
    mde = mde[fam + ["round", "value"]].rename(columns={"value": "mde"})
    sel = sel.merge(mde, on=[*fam, "round"], how="left")
    vs_base = p[(p["metric"] == "improvement_vs_strong_base") & (p["eval_split"] == split)]
    vs_base = vs_base[[*fam, "round", "value", "ci_low", "ci_high"]].rename(
        columns={"value": "vs_base", "ci_low": "vs_base_low", "ci_high": "vs_base_high"})
    sel = sel.merge(vs_base, on=[*fam, "round"], how="left")
    at_star = sel[sel["round"] == sel["r_star"]].assign(at="r*")
    at_last = sel[sel["round"] == sel["r_last"]].assign(at="r=T")
    return pd.concat([at_star, at_last], ignore_index=True).assign(claim=claim, paper=paper)


def _verdict(row) -> str:
    """Could this run detect the paper's effect? (80% power at 5% two-sided: MDE <= claimed effect)."""
    if row["at"] == "r*" and row["r_star"] == 1:
        who = "the ensemble is h_1" if row["role"] == "ensemble" else "the student is the student of h_1"
        return f"r* = 1: {who}, difference 0 by construction"
    if pd.isna(row["mde"]):
        return "no MDE (missing scores)"
    if row["mde"] <= row["paper"]:
        return f"yes: MDE {row['mde']:.1f} <= {row['paper']:g}"
    return f"no: MDE {row['mde']:.1f} > {row['paper']:g}"


@TABLES.register("paper_claims")
def table_paper_claims(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """The pre-specified comparisons beside the paper's claims: the boost ensemble at r* (chosen on val) vs h_1,
    the student of that ensemble vs the student of h_1, ID and OOD, multiple-choice acc; r = T beside r*."""
    p = pooled(frame)
    parts = [_claim_rows(p, *claim) for claim in PAPER_CLAIMS]
    rows = _need(pd.concat(parts, ignore_index=True), f"improvements of the {METHOD!r} ensemble or its students")
    index = ["claim", "dataset", "weak_model", "strong_model", "at"]
    paper = rows.assign(value=rows["paper"], ci_low=np.nan, ci_high=np.nan, note="")
    measured = rows.assign(note="")
    rounds = rows.assign(value=rows["round"].astype(float), ci_low=np.nan, ci_high=np.nan, note="")
    mdes = rows.assign(value=rows["mde"], ci_low=np.nan, ci_high=np.nan,
                       note=["r* = 1" if (a == "r*" and r == 1) else "" for a, r in zip(rows["at"], rows["r_star"])])
    mdes.loc[mdes["note"] != "", "value"] = np.nan  # an MDE of a difference that is 0 by construction says nothing
    vs_base = rows.assign(value=rows["vs_base"], ci_low=rows["vs_base_low"], ci_high=rows["vs_base_high"], note="")
    vs_base = vs_base[vs_base["role"] == "student"]
    verdicts = rows.assign(value=np.nan, ci_low=np.nan, ci_high=np.nan,
                           note=[_verdict(r) for _, r in rows.iterrows()])
    order = {c[0]: i for i, c in enumerate(PAPER_CLAIMS)}
    frame_out = pd.concat([_long(paper, index, lambda r: "paper (points)", "claim"),
                           _long(rounds, index, lambda r: "r", "int"),
                           _long(measured, index, lambda r: "measured (points)", "points"),
                           _long(mdes, index, lambda r: "MDE (points)", "mde"),
                           _long(verdicts, index, lambda r: "detectable at 80% power?", "text"),
                           _long(vs_base, index, lambda r: "student vs untaught strong base (points)", "points")],
                          ignore_index=True)
    frame_out = frame_out.assign(_c=frame_out["claim"].map(order)).sort_values("_c", kind="stable").drop(columns="_c")
    return Table(frame_out, index,
                 "EnsemW2S, pre-specified comparisons (multiple-choice acc, accuracy points): the boosted ensemble "
                 "of the first r experts vs the single expert h_1 (experts), and the student of that ensemble vs "
                 "the student of h_1 (students); r* chosen on val (students: their supervisor's r*), r = T beside "
                 "it. CIs and the minimum detectable effect (80% power, 5% two-sided) come from one estimator: "
                 "the seed-stratified paired difference, conditional on the trained models. The paper reports "
                 "+4 ID / up to +6 OOD (experts) and +3.2 ID / up to +2.28 OOD (students). The last column: the "
                 "student against the strong base zero-shot (what supervision added).")


@TABLES.register("summary")
def table_summary(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """One line per model that a reader compares, ID and OOD acc: the bases, h_1, the boost ensemble and its
    student at r* and at r = T, the student of h_1 and the ceiling."""
    p = pooled(frame)
    rows = _scores(p[p["eval_split"].isin(["test_id", "test_ood"]) & (p["score"] == PRIMARY_SCORE)])
    rows = _need(rows, "test_id / test_ood accuracy")
    best = _best_rounds(p)
    pairs = rows[rows["role"] == "student"][["weak_model", "strong_model"]].drop_duplicates()
    parts = []
    for ds in sorted(rows["dataset"].unique()):
        for weak, strong in pairs.itertuples(index=False):
            here = rows[rows["dataset"] == ds]
            for order, (label, sel) in enumerate(_summary_models(best, ds, weak, strong)):
                mask = np.ones(len(here), dtype=bool)
                for col, val in sel.items():
                    mask &= (here[col] == val).to_numpy()
                parts.append(here[mask].assign(model=label, _o=order, pair=_pair_label(weak, strong)))
    rows = _need(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), "students (the summary is per pair)")
    rows = _split_order(rows.sort_values("_o", kind="stable"))
    index = ["dataset", "pair", "model"]
    long = _long(rows, index, lambda r: SPLIT_LABEL[r["eval_split"]], "pct")
    order = {m: i for i, m in enumerate(dict.fromkeys(rows["model"]))}
    return Table(long, index,
                 "Multiple-choice accuracy (%) on held-out easy (ID: test_id) and hard (OOD: test_ood) questions, "
                 "95% CIs (one seed: bootstrap over questions; several: t-interval over seeds); r* = the boosting "
                 "round chosen on val (r* = 1: the ensemble is h_1), T = the last round.", row_order={"model": order})


def _summary_models(best: pd.DataFrame, ds: str, weak: str, strong: str) -> list[tuple[str, dict]]:
    """(label, selector) of the summary's models, in reading order."""
    b = best[(best["dataset"] == ds) & (best["weak_model"] == weak) & (best["role"] == "ensemble")
             & (best["ensemble"] == METHOD) & (best["score"] == PRIMARY_SCORE)]
    models = [("weak base, zero-shot", dict(role="weak_base", weak_model=weak)),
              ("strong base, zero-shot", dict(role="strong_base", strong_model=strong)),
              ("single weak expert h_1", dict(role="expert", weak_model=weak, ensemble=METHOD, round=1))]
    student = dict(role="student", weak_model=weak, strong_model=strong, ensemble=METHOD)
    models.append(("student of h_1", {**student, "round": 1}))
    if len(b):
        r_star, r_last = int(b["r_star"].iloc[0]), int(b["r_last"].iloc[0])
        for what, r in (("r*", r_star), ("T", r_last)):
            if r > 1 and not (what == "T" and r == r_star):
                models.append((f"boosted ensemble, {what} = {r}", dict(role="ensemble", weak_model=weak,
                                                                     ensemble=METHOD, round=r)))
                models.append((f"student of the ensemble, {what} = {r}", {**student, "round": r}))
    models.append(("ceiling (strong on gold student_pool)", dict(role="ceiling", strong_model=strong)))
    return models


# ---------------------------------------------------------------------------------------------
# figures

FIGURE_SCORES = ("acc", "exact_match")  # acc_norm tracks acc closely; the tables have it
ROLE_STYLE = {"expert": (":", "o"), "ensemble": ("-", "s"), "student": ("--", "^")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    return plt, sns


def save_figure(fig, out: str | Path) -> None:
    """`out.png` (150 dpi) and `out.pdf`, atomically; the PDF carries no creation date."""
    plt, _ = _pyplot()
    out = Path(out)
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        with atomic_path(out.with_name(f"{out.name}.{ext}")) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
    plt.close(fig)


def _grid(n_rows: int, n_cols: int, width: float = 4.2, height: float = 3.0):
    plt, _ = _pyplot()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False)
    return fig, axes


def _palette(names: Iterable[str]) -> dict[str, tuple]:
    """Fixed colours: the ablation ensembles always get the same, well-separated colourblind-safe ones."""
    _, sns = _pyplot()
    colors = sns.color_palette("colorblind", 10)
    pick = [0, 2, 1, 4, 5, 6, 8, 9, 7, 3]  # blue, green, orange, purple, ...: no two look alike
    names = set(names)
    slots = [*ABLATIONS, *sorted(names - set(ABLATIONS))]  # an ablation's colour never depends on the others
    return {name: colors[pick[i % len(pick)]] for i, name in enumerate(slots) if name in names}


def _legend(fig, axes) -> None:
    """One legend for the whole figure (right of the panels), each label once."""
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _present(values: Iterable[str], order: Iterable[str]) -> list[str]:
    """The entries of `order` (first occurrence) that occur in `values`."""
    values = set(values)
    return [v for v in dict.fromkeys(order) if v in values]


def _pair_label(weak: str, strong: str) -> str:
    return f"{weak} -> {strong}" if strong else weak


@FIGURES.register("acc_vs_rounds")
def figure_acc_vs_rounds(frame: pd.DataFrame, boosting: list[Path]):
    """Accuracy vs r on ID and OOD: experts h_r alone and ensembles of the first r experts (left of each
    split), students taught by those ensembles and the ceiling (right); 95% CI bands."""
    p = pooled(frame)
    rows = _scores(p[p["role"].isin(list(ROLE_STYLE)) & p["score"].isin(FIGURE_SCORES)
                     & p["eval_split"].isin(["test_id", "test_ood"])])
    rows = _need(rows, "experts, ensembles or students on test_id / test_ood")
    ceiling = _scores(p[p["role"] == "ceiling"])
    strong_base = _scores(p[p["role"] == "strong_base"])
    panels = rows[["dataset", "weak_model", "score"]].drop_duplicates().sort_values(["dataset", "weak_model", "score"])
    columns = [(split, group) for split in _present(rows["eval_split"], ["test_id", "test_ood"])
               for group in (("expert", "ensemble"), ("student",))]
    colors = _palette(rows["ensemble"])
    several_strong = len(set(rows["strong_model"]) - {""}) > 1
    fig, axes = _grid(len(panels), len(columns), width=4.0)
    for i, (ds, weak, score) in enumerate(panels.itertuples(index=False)):
        here = rows[(rows["dataset"] == ds) & (rows["weak_model"] == weak) & (rows["score"] == score)]
        for j, (split, roles) in enumerate(columns):
            ax = axes[i, j]
            sel = here[(here["eval_split"] == split) & here["role"].isin(roles)]
            for (role, strong, ens), s in sel.groupby(["role", "strong_model", "ensemble"], sort=True):
                s = s.sort_values("round")
                ls, marker = ROLE_STYLE[role]
                label = f"{role} {ens}" + (f" -> {strong}" if several_strong else "")
                ax.plot(s["round"], 100 * s["value"], ls=ls, marker=marker, color=colors[ens], label=label)
                if role != "expert":  # experts alone are the reference: a band each would hide the ensembles
                    # a t-interval over few seeds can leave [0, 100]: accuracy cannot
                    lo, hi = (100 * s[c].clip(0.0, 1.0) for c in ("ci_low", "ci_high"))
                    ax.fill_between(s["round"], lo, hi, color=colors[ens], alpha=0.12, lw=0)
            if "student" in roles:
                c = ceiling[(ceiling["dataset"] == ds) & (ceiling["score"] == score) & (ceiling["eval_split"] == split)
                            & ceiling["strong_model"].isin(set(sel["strong_model"]))]
                for _, row in c.iterrows():
                    ax.axhline(100 * row["value"], color="0.35", ls="-.", lw=1.2,
                               label=f"ceiling {row['strong_model']}")
                b = strong_base[(strong_base["dataset"] == ds) & (strong_base["score"] == score)
                                & (strong_base["eval_split"] == split)
                                & strong_base["strong_model"].isin(set(sel["strong_model"]))]
                for _, row in b.iterrows():
                    ax.axhline(100 * row["value"], color="#C44E52", ls=":", lw=1.2,
                               label=f"strong base {row['strong_model']}, untaught")
            who = "students" if "student" in roles else "experts & ensembles"
            ax.set_title(f"{ds} / {weak}: {who}\n{SPLIT_LABEL[split]} {SCORE_LABEL[score]}")
            ax.set_xlabel("round r")
            ax.set_ylabel(f"{SCORE_LABEL[score]} (%)")
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Accuracy vs boosting round r (expert: h_r alone; ensemble / student: first r experts; "
                 "bands: 95% CI)", y=1.01)
    fig.tight_layout()
    _legend(fig, axes)
    return fig


@FIGURES.register("pgr")
def figure_pgr(frame: pd.DataFrame, boosting: list[Path]):
    """PGR against the weak expert h_1 per round and ensemble, per pair, dataset and test split, beside the PGR
    of the untaught strong base; withheld PGRs are drawn as "n/a"."""
    p = pooled(frame)
    rows = p[(p["role"] == "student") & (p["metric"] == "pgr_vs_weak") & p["score"].isin(FIGURE_SCORES)
             & p["eval_split"].isin(["test_id", "test_ood"])]
    rows = _need(rows, "PGR (students, ceiling and h_1 scored)")
    gaps = p[(p["role"] == "student") & (p["metric"] == "gap_ceiling_minus_weak")]
    panel_keys = ["dataset", "weak_model", "strong_model", "score"]
    panels = rows[panel_keys].drop_duplicates().sort_values(panel_keys)
    splits = _present(rows["eval_split"], ["test_id", "test_ood"])
    ensembles = _present(rows["ensemble"], [*ABLATIONS, *sorted(rows["ensemble"].unique())])
    colors = _palette(ensembles)
    width = 0.8 / len(ensembles)
    fig, axes = _grid(len(panels), len(splits))
    for i, (ds, weak, strong, score) in enumerate(panels.itertuples(index=False)):
        for j, split in enumerate(splits):
            ax = axes[i, j]
            here = (rows["dataset"] == ds) & (rows["weak_model"] == weak) & (rows["strong_model"] == strong) \
                & (rows["score"] == score) & (rows["eval_split"] == split)
            for k, ens in enumerate(ensembles):
                s = rows[here & (rows["ensemble"] == ens)].sort_values("round")
                x = s["round"].to_numpy() + (k - (len(ensembles) - 1) / 2) * width
                err = np.vstack([s["value"] - s["ci_low"], s["ci_high"] - s["value"]])
                ax.bar(x, s["value"].fillna(0.0), width=width, color=colors[ens], label=ens,
                       yerr=np.where(np.isfinite(err), err, 0), capsize=2, error_kw={"lw": 0.8})
                for xi, missing in zip(x, s["value"].isna()):  # PGR withheld: the gap is not resolved
                    if missing:
                        ax.text(xi, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="0.3")
            ax.axhline(0, color="0.3", lw=0.8)
            ax.axhline(1, color="0.3", lw=0.8, ls="--")
            base = p[(p["role"] == "student") & (p["metric"] == "pgr_strong_base_vs_weak") & (p["dataset"] == ds)
                     & (p["weak_model"] == weak) & (p["strong_model"] == strong) & (p["score"] == score)
                     & (p["eval_split"] == split)]["value"].dropna()
            if len(base):  # what the untaught strong model gets: a student must beat this to have learned
                ax.axhline(base.iloc[0], color="#C44E52", lw=1.2, ls=":", label="strong base, untaught")
            g = gaps[(gaps["dataset"] == ds) & (gaps["weak_model"] == weak) & (gaps["strong_model"] == strong)
                     & (gaps["score"] == score) & (gaps["eval_split"] == split)]
            gap = f", gap {100 * g['value'].iloc[0]:.1f} pts" if len(g) else ""
            ax.set_title(f"{ds} / {_pair_label(weak, strong)}\n{SPLIT_LABEL[split]} {SCORE_LABEL[score]}{gap}")
            ax.set_xlabel("round r of the supervising ensemble")
            ax.set_ylabel("PGR vs weak expert h_1")
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Performance gap recovered (error bars: 95% Fieller CI; dashed: PGR = 1, the ceiling; dotted: the "
                 "untaught strong base; n/a: gap CI includes 0)", y=1.01)
    fig.tight_layout()
    _legend(fig, axes)
    return fig


def _difficulty_models(p: pd.DataFrame, best: pd.DataFrame, ds: str, weak: str, strong: str, score: str) -> list[tuple]:
    """(label, selector) of the models compared ID vs OOD, in display order."""
    def r_star(role: str) -> int | None:
        b = best[(best["dataset"] == ds) & (best["weak_model"] == weak) & (best["role"] == role)
                 & (best["ensemble"] == METHOD) & (best["score"] == score)
                 & (best["strong_model"] == (strong if role == "student" else ""))]
        return int(b["r_star"].iloc[0]) if len(b) else None

    models = [("weak base", dict(role="weak_base", weak_model=weak)),
              ("expert h_1", dict(role="expert", weak_model=weak, ensemble=METHOD, round=1))]
    if (r := r_star("ensemble")) is not None:
        models.append((f"ensemble r*={r}", dict(role="ensemble", weak_model=weak, ensemble=METHOD, round=r)))
    if strong:
        models.append(("student r=1", dict(role="student", weak_model=weak, strong_model=strong, ensemble=METHOD,
                                           round=1)))
        if (r := r_star("student")) is not None:
            models.append((f"student r*={r}", dict(role="student", weak_model=weak, strong_model=strong,
                                                   ensemble=METHOD, round=r)))
        models += [("ceiling", dict(role="ceiling", strong_model=strong)),
                   ("strong base", dict(role="strong_base", strong_model=strong))]
    return models


@FIGURES.register("acc_by_difficulty")
def figure_acc_by_difficulty(frame: pd.DataFrame, boosting: list[Path]):
    """Easy (ID) vs hard (OOD) accuracy of the weak base, h_1, the ensemble, the students, ceiling, strong base."""
    p = pooled(frame)
    rows = _need(_scores(p[p["eval_split"].isin(["test_id", "test_ood"]) & p["score"].isin(FIGURE_SCORES)]),
                 "test_id / test_ood accuracy")
    best = _best_rounds(p)
    pairs = rows[rows["role"].isin(["student", "ceiling"])][["weak_model", "strong_model"]].drop_duplicates()
    pairs = pairs[pairs["weak_model"] != ""]
    if pairs.empty:
        pairs = pd.DataFrame({"weak_model": sorted(set(rows["weak_model"]) - {""}), "strong_model": ""})
    panels = [(ds, w, s) for ds in sorted(rows["dataset"].unique()) for w, s in pairs.itertuples(index=False)]
    scores = _present(rows["score"], FIGURE_SCORES)
    colors = {"test_id": "#4C72B0", "test_ood": "#DD8452"}
    fig, axes = _grid(len(panels), len(scores), width=5.5)
    for i, (ds, weak, strong) in enumerate(panels):
        for j, score in enumerate(scores):
            ax = axes[i, j]
            labels = []
            for x, (label, sel) in enumerate(_difficulty_models(p, best, ds, weak, strong, score)):
                labels.append(label)
                mask = (rows["dataset"] == ds) & (rows["score"] == score)
                for col, val in sel.items():
                    mask &= rows[col] == val
                for k, split in enumerate(("test_id", "test_ood")):
                    r = rows[mask & (rows["eval_split"] == split)]
                    if r.empty:
                        continue
                    v = 100 * r["value"].iloc[0]
                    lo, hi = (100 * min(max(r[c].iloc[0], 0.0), 1.0) for c in ("ci_low", "ci_high"))  # NaN stays
                    err = [[v - lo], [hi - v]] if np.isfinite(lo) else None
                    ax.bar(x + (k - 0.5) * 0.38, v, width=0.38, color=colors[split], yerr=err, capsize=2,
                           label=f"{SPLIT_LABEL[split]} ({'easy' if split == 'test_id' else 'hard'})")
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
            ax.set_ylabel(f"{SCORE_LABEL[score]} (%)")
            ax.set_title(f"{ds} / {_pair_label(weak, strong)}: {SCORE_LABEL[score]}")
    fig.suptitle(f"Accuracy by question difficulty (ID = easy, OOD = hard; ensemble {METHOD!r}; 95% CI)", y=1.01)
    fig.tight_layout()
    _legend(fig, axes)
    return fig


def _boosting_frame(frame: pd.DataFrame, boosting: list[Path]) -> pd.DataFrame:
    """Per-seed boosting rows: from the boosting.json files when given, else from metrics.csv."""
    if boosting:
        rows = pd.DataFrame([r for path in sorted(Path(b) for b in boosting) for r in boosting_rows(path)])
    else:
        rows = frame[frame["metric"].isin(BOOSTING_METRICS) & (frame["seed"] != "all")]
    rows = _need(rows, "boosting rounds (boosting.json)")
    several = rows["weak_model"].nunique() > 1
    return rows.assign(variant=rows["ensemble"],
                       dataset=[f"{d} / {w}" if several else d for d, w in zip(rows["dataset"], rows["weak_model"])])


def _boosting_figure(frame: pd.DataFrame, boosting: list[Path], panels: list[tuple[str, str, str]], title: str,
                     reference: dict[str, tuple[float, str]]):
    """One panel per boosting metric: value vs round t, colour = training variant, marker = dataset."""
    _, sns = _pyplot()
    rows = _boosting_frame(frame, boosting)
    colors = _palette(rows["variant"])
    fig, axes = _grid(1, len(panels), width=4.8, height=3.4)
    for ax, (metric, what, symbol) in zip(axes.flat, panels):
        sel = rows[rows["metric"] == metric].sort_values(["dataset", "variant", "round"])
        if sel.empty:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=sel, x="round", y="value", hue="variant", style="dataset", markers=True, dashes=False,
                         errorbar=("ci", 95), seed=0, ax=ax, palette=colors, hue_order=list(colors))
            ax.get_legend().remove()
        if metric in reference:
            y, label = reference[metric]
            ax.axhline(y, color="0.4", ls="--", lw=1, label=label)
        ax.set_xlabel("boosting round t")
        ax.set_ylabel(symbol)
        ax.set_title(what)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title + " (bands: 95% CI over seeds)", y=1.02)
    fig.tight_layout()
    _legend(fig, axes)
    return fig


@FIGURES.register("eps_alpha")
def figure_eps_alpha(frame: pd.DataFrame, boosting: list[Path]):
    """Weighted token error eps_t and expert weight alpha_t per boosting round."""
    return _boosting_figure(frame, boosting,
                            [("eps", "weighted token error of expert h_t", r"$\varepsilon_t$"),
                             ("alpha", "weight of expert h_t in the ensemble", r"$\alpha_t$")],
                            "Boosting: error and weight of each expert", {})


@FIGURES.register("weight_concentration")
def figure_weight_concentration(frame: pd.DataFrame, boosting: list[Path]):
    """How concentrated the token weights D_{t+1} become: share of the top 10% tokens, and entropy."""
    return _boosting_figure(frame, boosting,
                            [("weight_top10_share", "weight share of the top 10% of tokens", "share of total weight"),
                             ("weight_entropy", "entropy of the token weights", "entropy (nats)")],
                            "Concentration of the token weights D_{t+1} after round t",
                            {"weight_top10_share": (0.1, "uniform weights (0.1)")})


# ---------------------------------------------------------------------------------------------


def names() -> list[str]:
    return TABLES.names() + FIGURES.names()


POOL_MEANING = {"easy": "easy questions held out from weak_train, val and test_id (the W2S protocol)",
                "hard": "hard questions (the pool shares test_ood's distribution)"}


def protocol_note(cfg) -> str:
    """The caption sentence that says which questions the students were taught on, per dataset."""
    by_choice: dict[str, list[str]] = {}
    for ds in cfg.datasets:
        by_choice.setdefault(ds.student_pool, []).append(ds.name)
    parts = [f"{POOL_MEANING[c]} for {', '.join(names)}" for c, names in sorted(by_choice.items())]
    return f"Student pool (student_pool): {'; '.join(parts)}."


def build_table(name: str, metrics_csv: str | Path, boosting_files: Iterable[str | Path] = (),
                caption_note: str = "") -> Table:
    """Table `name` from metrics.csv, its caption followed by `caption_note` (the run's protocol choices)."""
    table = TABLES.get(name)(load_metrics(metrics_csv), [Path(b) for b in boosting_files])
    return replace(table, caption=f"{table.caption} {caption_note}".strip())


def make(name: str, metrics_csv: str | Path, boosting_files: Iterable[str | Path], out: str | Path,
         caption_note: str = "") -> None:
    """Write table or figure `name` from metrics.csv to `out` + extensions (.csv/.md/.tex or .png/.pdf)."""
    boosting = [Path(b) for b in boosting_files]
    if name in TABLES:
        write_table(build_table(name, metrics_csv, boosting, caption_note), out)
    elif name in FIGURES:
        save_figure(FIGURES.get(name)(load_metrics(metrics_csv), boosting), out)
    else:
        raise UserError(unknown_name_message("report", name, names()))
