"""Tables of `ensemw2s report`: one function per table, from metrics.csv, registered by name in `TABLES`.

Adding a table is adding a function. Each returns a `Table`: a long frame (index columns, `column`,
`value`, `ci_low`, `ci_high`, `fmt`, `note`) and its caption; `write_table` writes it wide: numbers (with
`<column> ci_low/ci_high` beside) to `.csv`, and formatted cells "value [low, high]" to `.md` and `.tex`.
Accuracies are shown in percent. Rows are chosen as the figures choose them (`selections.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ensemw2s import controls, diagnostics
from ensemw2s.io import atomic_path, write_text
from ensemw2s.registry import Registry
from ensemw2s.scores import PRIMARY_SCORE, ROLES, SCORES
from ensemw2s.selections import (FAMILY, SCORE_LABEL, SPLIT_LABEL, accuracy_rows, at_best_round, best_rounds,
                                 ensemble_order, need, pair_label, pooled)
from ensemw2s.variants import METHOD

PAPER_CLAIMS = [  # (claim, role, metric, split, paper's number in accuracy points)
    ("experts ID", "ensemble", "improvement_vs_expert1", "test_id", 4.0),
    ("experts OOD", "ensemble", "improvement_vs_expert1", "test_ood", 6.0),
    ("students ID", "student", "improvement_vs_student1", "test_id", 3.2),
    ("students OOD", "student", "improvement_vs_student1", "test_ood", 2.28),
]
COMPUTE_METRICS = ("tokens_processed", "wall_time_s", "gpu_hours")


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # long: index columns + column, value, ci_low, ci_high, fmt, note
    index: list[str]
    caption: str
    row_order: dict[str, dict] = field(default_factory=dict)  # index column -> {value: rank}; else sorted


TABLES: Registry[Callable[[pd.DataFrame, list[Path]], Table]] = Registry("table")


def tables_for(cfg) -> list[str]:
    """The tables a run of `cfg` has rows for (the workflow's targets and the cost plan): `controls_aa` needs
    the A/A student (evaluation.aa_replicate), `controls` a control variant (partition, longer)."""
    skip = ({"controls_aa"} if not cfg.aa_replicate() else set()) | ({controls.TABLE} if not controls.has_controls(cfg) else set())
    return [t for t in TABLES.names() if t not in skip]

CELL_FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda v: f"{100 * v:.1f}",  # accuracy (fraction) in percent
    "mde": lambda v: f"{v:.1f}",  # a minimum detectable effect, accuracy points
    "points": lambda v: f"{v:+.1f}",  # accuracy points, signed
    "claim": lambda v: f"{v:+g}",  # a number quoted from the paper, as written there
    "ratio": lambda v: f"{v:.2f}",  # PGR
    "int": lambda v: f"{int(round(v)):d}",
    "count": lambda v: f"{v:,.0f}",
    "seconds": lambda v: f"{v:.1f}",
    "num": lambda v: f"{v:.4g}",  # a boosting quantity (eps near 1, alpha near log K): 4 significant digits
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


def _model_label(row) -> str:
    if row["role"] in ("weak_base", "strong_base", "ceiling"):
        return row["role"].replace("_", " ")
    return f"{row['role']} {row['ensemble']}".strip()


@TABLES.register("experts")
def table_experts(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Weak base, experts h_t and ensembles of the first r experts, per round, ID and OOD."""
    rows = accuracy_rows(pooled(frame))
    rows = rows[rows["role"].isin(["weak_base", "expert", "ensemble"])
                & rows["eval_split"].isin(["test_id", "test_ood"])]
    rows = _split_order(need(rows, "experts or ensembles"))
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
    ref = accuracy_rows(p[p["role"] == role]).drop(columns=["weak_model", "ensemble", "round"])
    return students[ident].drop_duplicates().merge(ref, on=["strong_model", "dataset", "score", "eval_split"])


@TABLES.register("students")
def table_students(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Students per supervisor (ensemble, r) beside the untaught strong base and the ceiling: the gap, PGR
    against h_1, the ensemble and what the strong base alone would get, ID and OOD."""
    p = pooled(frame)
    p = p[p["eval_split"].isin(["test_id", "test_ood"])]
    students = p[(p["role"] == "student") & p["metric"].isin([*SCORES, *STUDENT_COLUMNS])]
    students = need(students[students["metric"].isin(STUDENT_COLUMNS) | (students["metric"] == students["score"])],
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
    rows = need(accuracy_rows(p[p["role"].isin(["expert", "ensemble", "student"])]), "experts, ensembles or students")
    rows = rows.sort_values("round", kind="stable")
    best = best_rounds(p)
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
    """Every ensemble in metrics.csv (columns in metrics.csv's order: token-level boosting beside its uniform-weight
    ensemble, bagging, sequence-level weights, whichever the run has) and its student, each at its r*."""
    p = pooled(frame)
    rows = accuracy_rows(p[p["role"].isin(["ensemble", "student"]) & p["eval_split"].isin(["test_id", "test_ood"])])
    rows = need(at_best_round(p, rows), "ensembles or students")
    order = {e: i for i, e in enumerate(ensemble_order(frame))}
    rows = rows.assign(_e=rows["ensemble"].map(order)).sort_values("_e", kind="stable")
    index = ["dataset", "weak_model", "strong_model", "role", "score", "eval_split"]
    return Table(_long(rows, index, lambda r: r["ensemble"], "pct"), index,
                 "Ablations: accuracy (%) of each ensemble (boost = token-level AdaBoost weights; boost-uniform = "
                 "the same experts, equal weights; bagging = experts on bootstrap resamples; sequence = "
                 "sequence-level weights) and of its student, each at its own r* chosen on val, with 95% CIs.")


@TABLES.register("compute")
def table_compute(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Compute per scored model: tokens processed (and wall time / GPU-hours where metrics.csv has them)."""
    rows = need(frame[frame["metric"].isin(COMPUTE_METRICS) & (frame["seed"] != "all")], "compute (tokens_processed)")
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


def _claim_rows(p: pd.DataFrame, claim: str, role: str, metric: str, split: str, paper: float) -> pd.DataFrame:
    """One claim's comparison rows (acc) at r* (chosen on val; students at their supervisor's r*) and at r = T,
    each with its MDE from the same standard error."""
    sel = p[(p["role"] == role) & (p["metric"] == metric) & (p["eval_split"] == split) & (p["ensemble"] == METHOD)
            & (p["score"] == PRIMARY_SCORE)]
    mde = p[(p["role"] == role) & (p["metric"] == f"{metric}_mde") & (p["eval_split"] == split)
            & (p["ensemble"] == METHOD) & (p["score"] == PRIMARY_SCORE)]
    sel = sel.merge(best_rounds(p), on=FAMILY, how="inner")
    mde = mde[FAMILY + ["round", "value"]].rename(columns={"value": "mde"})
    sel = sel.merge(mde, on=[*FAMILY, "round"], how="left")
    vs_base = p[(p["metric"] == "improvement_vs_strong_base") & (p["eval_split"] == split)]
    vs_base = vs_base[[*FAMILY, "round", "value", "ci_low", "ci_high"]].rename(
        columns={"value": "vs_base", "ci_low": "vs_base_low", "ci_high": "vs_base_high"})
    sel = sel.merge(vs_base, on=[*FAMILY, "round"], how="left")
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


def claim_verdict(row) -> str:
    """The verdict on a claim by the rule fixed before any run: *supported* where the CI's lower bound is above 0,
    *inconsistent with the claim* where its upper bound is below the claimed effect, else *not resolvable at this
    size* (the CI holds both 0 and the claim)."""
    if row["at"] == "r*" and row["r_star"] == 1:
        return "r* = 1: the ensemble chosen on val is h_1 (see r = T)"
    if pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return "n/a (no CI)"
    if row["ci_low"] > 0:
        return "supported"
    if row["ci_high"] < row["paper"]:
        return "inconsistent with the claim"
    return "not resolvable at this size"


@TABLES.register("paper_claims")
def table_paper_claims(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """The pre-specified comparisons beside the paper's claims: the boost ensemble at r* (chosen on val) vs h_1,
    the student of that ensemble vs the student of h_1, ID and OOD, multiple-choice acc; r = T beside r*."""
    p = pooled(frame)
    parts = [_claim_rows(p, *claim) for claim in PAPER_CLAIMS]
    rows = need(pd.concat(parts, ignore_index=True), f"improvements of the {METHOD!r} ensemble or its students")
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
    claim_verdicts = rows.assign(value=np.nan, ci_low=np.nan, ci_high=np.nan,
                                 note=[claim_verdict(r) for _, r in rows.iterrows()])
    order = {c[0]: i for i, c in enumerate(PAPER_CLAIMS)}
    frame_out = pd.concat([_long(paper, index, lambda r: "paper (points)", "claim"),
                           _long(rounds, index, lambda r: "r", "int"),
                           _long(measured, index, lambda r: "measured (points)", "points"),
                           _long(mdes, index, lambda r: "MDE (points)", "mde"),
                           _long(verdicts, index, lambda r: "detectable at 80% power?", "text"),
                           _long(claim_verdicts, index, lambda r: "verdict", "text"),
                           _long(vs_base, index, lambda r: "student vs untaught strong base (points)", "points")],
                          ignore_index=True)
    frame_out = frame_out.assign(_c=frame_out["claim"].map(order)).sort_values("_c", kind="stable").drop(columns="_c")
    return Table(frame_out, index,
                 "EnsemW2S, pre-specified comparisons (multiple-choice acc, accuracy points): the boosted ensemble "
                 "of the first r experts vs the single expert h_1 (experts), and the student of that ensemble vs "
                 "the student of h_1 (students); r* chosen on val (students: their supervisor's r*), r = T beside "
                 "it. CIs and the minimum detectable effect (80% power, 5% two-sided) come from one estimator: "
                 "the seed-stratified paired difference, conditional on the trained models. The paper reports "
                 "+4 ID / up to +6 OOD (experts) and +3.2 ID / up to +2.28 OOD (students). Verdict, by a rule fixed "
                 "in advance: supported where the CI's lower bound is above 0, inconsistent with the claim where its "
                 "upper bound is below the claimed effect, else not resolvable at this size. The last column: the "
                 "student against the strong base zero-shot (what supervision added).")


@TABLES.register("summary")
def table_summary(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """One line per model that a reader compares, ID and OOD acc: the bases, h_1, the boost ensemble and its
    student at r* and at r = T, the student of h_1 and the ceiling."""
    p = pooled(frame)
    rows = accuracy_rows(p[p["eval_split"].isin(["test_id", "test_ood"]) & (p["score"] == PRIMARY_SCORE)])
    rows = need(rows, "test_id / test_ood accuracy")
    best = best_rounds(p)
    pairs = rows[rows["role"] == "student"][["weak_model", "strong_model"]].drop_duplicates()
    parts = []
    for ds in sorted(rows["dataset"].unique()):
        for weak, strong in pairs.itertuples(index=False):
            here = rows[rows["dataset"] == ds]
            for order, (label, sel) in enumerate(_summary_models(best, ds, weak, strong)):
                mask = np.ones(len(here), dtype=bool)
                for col, val in sel.items():
                    mask &= (here[col] == val).to_numpy()
                parts.append(here[mask].assign(model=label, _o=order, pair=pair_label(weak, strong)))
    rows = need(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), "students (the summary is per pair)")
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


@TABLES.register("controls_aa")
def table_controls_aa(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """The A/A control: the replicate student (same supervisor, another training seed) minus the student, per
    seed and pooled; its CI must include 0, or the CIs are too narrow."""
    rows = frame[(frame["role"] == "replicate") & (frame["metric"] == "aa_difference")]
    rows = need(rows, "the A/A replicate (evaluation.aa_replicate: true)")
    rows = _split_order(rows.assign(pair=[pair_label(w, s) for w, s in zip(rows["weak_model"], rows["strong_model"])],
                                    supervisor=[f"{e} r={r}" for e, r in zip(rows["ensemble"], rows["round"])]))
    includes = rows.assign(value=np.nan, ci_low=np.nan, ci_high=np.nan,
                           note=["yes" if lo <= 0 <= hi else "no: the CIs are too narrow"
                                 for lo, hi in zip(rows["ci_low"], rows["ci_high"])])
    index = ["dataset", "pair", "supervisor", "seed"]
    long = pd.concat([_long(rows, index, lambda r: f"{_split_score(r)} (points)", "points"),
                      _long(includes, index, lambda r: f"{_split_score(r)}: CI includes 0?", "text")],
                     ignore_index=True)
    seeds = sorted(set(rows["seed"]), key=lambda x: (x == "all", int(x) if x != "all" else 0))
    return Table(long, index,
                 "A/A control: a second student of the same supervisor (the boost variant's h_1) trained with another "
                 "seed, minus the student (accuracy points), per seed and pooled over seeds (seed = all), with the "
                 "paired 95% CI of every comparison. The two differ only in their training seed, so the CI must "
                 "include 0; where it does not, the CIs are too narrow.",
                 row_order={"seed": {x: i for i, x in enumerate(seeds)}})


CONTROL_COLUMNS = [  # (metric, header, format) of the controls table, in its order
    ("partition_own_part_acc", "own part", "pct"),
    ("partition_other_parts_acc", "other parts", "pct"),
    ("partition_member_competent", "competent", "text"),
    ("token_ensemble_part_acc", "token ensemble on the part", "pct"),
    ("routed_minus_member", "routed minus member (points)", "points"),
    ("acc", "token ensemble", "pct"),
    ("routed_acc", "routed", "pct"),
    ("token_ensemble_kept_share", "gain kept by token mixing", "ratio"),
    ("partition_valid", "valid", "text"),
    ("improvement_vs_longer", "vs longer (points)", "points"),
]


def _flag(value: float, note: str) -> str:
    """A 0/1 row (or its mean over seeds) as words."""
    word = "yes" if value == 1 else "no" if value == 0 else f"in {100 * value:.0f}% of seeds"
    return f"{word} ({note})" if note else word


@TABLES.register("controls")
def table_controls(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """The positive control (partition members on their own and the other parts, competence, the routed and the
    token-level ensemble of them) and every ensemble at r = T against the compute-matched longer expert."""
    p = pooled(frame)
    partition = set(p.loc[p["metric"] == "routed_acc", "ensemble"])
    token = (p["metric"] == "acc") & (p["score"] == "acc") & (p["role"] == "ensemble") & p["ensemble"].isin(partition)
    token &= p["round"].isin(set(p.loc[p["metric"] == "routed_acc", "round"]))
    columns = {m: (header, fmt) for m, header, fmt in CONTROL_COLUMNS}
    rows = p[(p["metric"].isin(list(columns)) & (p["metric"] != "acc")) | token]
    rows = need(rows[rows["eval_split"].isin(list(SPLIT_LABEL))], "the controls (a partition or a longer variant)")
    flags = rows["metric"].isin(["partition_member_competent", "partition_valid"])
    rows = rows.assign(note=[_flag(v, n if seed != "all" else "") if f else n  # a pooled note is seed 0's
                             for v, n, f, seed in zip(rows["value"], rows["note"].fillna(""), flags, rows["seed"])])
    order = {m: i for i, m in enumerate(columns)}
    rows = _split_order(rows.assign(model=[f"{'member' if r == 'expert' else 'ensemble'} r={t}"
                                           for r, t in zip(rows["role"], rows["round"])],
                                    _c=rows["metric"].map(order)).sort_values("_c", kind="stable"))
    index = ["dataset", "weak_model", "ensemble", "model", "eval_split"]
    return Table(_long(rows, index, lambda r: columns[r["metric"]][0], lambda r: columns[r["metric"]][1]), index,
                 "Controls (accuracy %, 95% CIs; mean over seeds where there are several). Positive control "
                 "(kind partition): member r is trained on part r of weak_train (the questions' partition_key values "
                 "dealt into T parts) for h_1's optimizer steps; competent = beats chance on its own part (one-sided "
                 "exact binomial, 5%). The routed ensemble answers each question with its part's member: it must "
                 "beat every member (routed minus member > 0), or the measurement is broken; the token-level "
                 "ensemble of the same members keeps the shown share of the routed gain over the best member. "
                 "valid = every member competent. vs longer: each ensemble at r = T minus the compute-matched "
                 "single expert trained for T x h_1's optimizer steps (kind longer), paired.",
                 row_order={"eval_split": {s: i for i, s in enumerate(SPLIT_LABEL)},
                            "ensemble": {e: i for i, e in enumerate(ensemble_order(frame))}})


DIAGNOSTIC_COLUMNS = [  # (metric, eval_split, header, format) of the diagnostics table, in its order
    ("eps", "weak_train", "eps", "num"),
    ("alpha", "weak_train", "alpha", "num"),
    ("missed_mass_after_update", "weak_train", "missed mass after update", "num"),
    ("effective_sample_size", "weak_train", "ESS", "count"),
    ("fix_rate_tokens", "val", "val fix rate tokens", "pct"),
    ("fix_rate_questions", "val", "val fix rate questions", "pct"),
    ("oracle_acc", "val", "val oracle acc", "pct"),
    ("oracle_acc", "test_id", "ID oracle acc", "pct"),
    ("expert_disagreement", "val", "val disagreement", "pct"),
    ("expert_disagreement", "test_id", "ID disagreement", "pct"),
]


@TABLES.register("diagnostics")
def table_diagnostics(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Why an ensemble helps or not, per variant and round: what boosting did to the weights, whether h_t fixes
    what h_{t-1} missed, and the ceiling (oracle) and diversity (disagreement) of the first r experts."""
    p = pooled(frame)
    columns = {(m, s): (header, fmt) for m, s, header, fmt in DIAGNOSTIC_COLUMNS}
    rows = p[[(m, s) in columns for m, s in zip(p["metric"], p["eval_split"])]]
    rows = need(rows, "boosting rounds or diagnostics (boosting.json, answer_misses.json, scored ensembles)")
    order = {c: i for i, c in enumerate(columns)}
    rows = rows.assign(_c=[order[(m, s)] for m, s in zip(rows["metric"], rows["eval_split"])])
    rows = rows.sort_values("_c", kind="stable")
    index = ["dataset", "weak_model", "ensemble", "round"]
    return Table(_long(rows, index, lambda r: columns[(r["metric"], r["eval_split"])][0],
                       lambda r: columns[(r["metric"], r["eval_split"])][1]), index,
                 "Diagnostics per variant and round r (mean over seeds with a t-interval where there are several): the "
                 "weighted token error eps and ensemble weight alpha of h_r, the share of the token weights on the "
                 "tokens h_r missed after its update and their effective sample size ESS = 1 / sum D^2 (weak_train); "
                 "the fix rates, the share of the answer tokens (questions) h_{r-1} missed that h_r gets right (%, "
                 "val); the oracle accuracy, the share of questions any of h_1..h_r gets right: the ceiling of any "
                 "ensemble of them (%); and the mean pairwise disagreement of their picks (%). An ensemble cannot beat "
                 "its oracle, and experts that agree everywhere are one expert.",
                 row_order={"ensemble": {e: i for i, e in enumerate(ensemble_order(frame))}})


# the `variants` table: (role, metric, eval_split, header, format), each variant at its last round
VARIANT_COLUMNS = [
    ("ensemble", "improvement_vs_expert1", "val", "ensemble - h_1, val", "points"),
    ("ensemble", "improvement_vs_expert1", "test_id", "ensemble - h_1, ID", "points"),
    ("ensemble", "improvement_vs_expert1", "test_ood", "ensemble - h_1, OOD", "points"),
    ("student", "improvement_vs_student1", "test_id", "student - student of h_1, ID", "points"),
    ("student", "improvement_vs_student1", "test_ood", "student - student of h_1, OOD", "points"),
    ("expert", "fix_rate_tokens", "val", "token fix rate h_r, val", "pct"),
    ("ensemble", "oracle_acc", "val", "oracle, val", "pct"),
    ("ensemble", "expert_disagreement", "val", "disagreement, val", "pct"),
    ("expert", "training_tokens", "weak_train", "training tokens (all rounds)", "count"),
]


@TABLES.register("variants")
def table_variants(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """Each variant at its last round r (T; `longer`: its one expert): the gain of its ensemble over h_1 and of
    its student over the student of h_1 (paired CIs), and the diagnostics that say why, beside its training cost."""
    p = pooled(frame)
    p = p[(p["score"].isin([PRIMARY_SCORE, ""]))]
    last = (p[p["role"].isin(["ensemble", "student", "expert"]) & p["ensemble"].ne("")]
            .groupby(["dataset", "weak_model", "role", "ensemble"])["round"].max())
    parts = []
    for role, metric, split, header, fmt in VARIANT_COLUMNS:
        rows = p[(p["role"] == role) & (p["metric"] == metric) & (p["eval_split"] == split)]
        if metric == "training_tokens":  # the cost of every round's expert, summed
            rows = (rows.groupby(["dataset", "weak_model", "ensemble"], as_index=False)["value"].sum()
                    .assign(ci_low=np.nan, ci_high=np.nan, note=""))
        else:
            at = [last.get((d, w, role, e)) for d, w, e in zip(rows["dataset"], rows["weak_model"], rows["ensemble"])]
            rows = rows[[r == a for r, a in zip(rows["round"], at)]]
        if not rows.empty:
            parts.append(rows.assign(_header=header, _fmt=fmt)[["dataset", "weak_model", "ensemble", "value", "ci_low",
                                                               "ci_high", "note", "_header", "_fmt"]])
    rows = need(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(),
                "ensembles compared with h_1 (improvement_vs_expert1)")
    r_last = last.xs("ensemble", level="role").rename("value").reset_index()
    r_col = r_last.assign(ci_low=np.nan, ci_high=np.nan, note="", _header="r", _fmt="int")
    rows = pd.concat([r_col[rows.columns], rows], ignore_index=True)
    index = ["dataset", "weak_model", "ensemble"]
    return Table(_long(rows, index, lambda r: r["_header"], lambda r: r["_fmt"]), index,
                 "Boosting variants, each at its last round r (T; longer: its one expert trained T x as long): the "
                 "ensemble's gain over the single expert h_1 and its student's gain over the student of h_1 (accuracy "
                 "points, multiple-choice acc; the seed-stratified paired estimator, 95% CI); the share of the val "
                 "answer tokens h_(r-1) missed that h_r gets right (%, variants that train experts), the oracle "
                 "(any of h_1..h_r right) and the experts' pairwise disagreement on val (%), and the training tokens "
                 "of all its experts (mean over seeds; an out-of-fold variant counts its extra copies). Means over "
                 "seeds with a t-interval where there are several.",
                 row_order={"ensemble": {e: i for i, e in enumerate(ensemble_order(frame))}})


SANITY_COLUMNS = [  # (metric, eval_split, header, format) of the sanity table, in its order
    ("pick_top_share", "val", "val top pick share", "pct"),
    ("pick_top_share", "test_id", "ID top pick share", "pct"),
    ("pick_top_share", "test_ood", "OOD top pick share", "pct"),
    ("pseudo_choice_match_share", "student_pool", "pseudo-answers that are a choice", "pct"),
    ("pseudo_truncated_share", "student_pool", "pseudo-answers truncated", "pct"),
    ("pseudo_mean_answer_tokens", "student_pool", "pseudo-answer tokens (mean)", "num"),
]


@TABLES.register("sanity")
def table_sanity(frame: pd.DataFrame, boosting: list[Path]) -> Table:
    """What is scored, checked: every scored model's most frequent pick position (a model that always picks one
    position is flagged degenerate: it scores the share of gold answers there) and each ensemble's pseudo-answers."""
    p = pooled(frame)
    columns = {(m, s): (header, fmt) for m, s, header, fmt in SANITY_COLUMNS}
    wanted = np.array([(m, s) in columns for m, s in zip(p["metric"], p["eval_split"])], dtype=bool)
    rows = p[wanted & p["score"].isin([PRIMARY_SCORE, ""]).to_numpy()]
    rows = need(rows, "scored models (the picks of score files) or pseudo-labels").copy()
    rows["model"] = [_model_label(r) for _, r in rows.iterrows()]
    rows = rows.assign(_header=[columns[(m, s)][0] for m, s in zip(rows["metric"], rows["eval_split"])],
                       _fmt=[columns[(m, s)][1] for m, s in zip(rows["metric"], rows["eval_split"])])
    index = ["dataset", "model", "weak_model", "strong_model", "round"]
    picks = rows[rows["metric"] == "pick_top_share"]
    flags = []
    for key, group in picks.groupby(index, sort=False):
        notes = [f"{SPLIT_LABEL[s]} {n}" for s, n in zip(group["eval_split"], group["note"].fillna("")) if n]
        flags.append({**dict(zip(index, key)), "value": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                      "note": "; ".join(notes) or "no", "_header": "degenerate", "_fmt": "text"})
    variants = {e: i for i, e in enumerate(ensemble_order(frame))}
    labels = rows[["role", "ensemble", "model"]].drop_duplicates("model")
    ranked = sorted(zip(labels["role"], labels["ensemble"], labels["model"]),
                    key=lambda x: (ROLES.index(x[0]), variants.get(x[1], -1)))
    rows = pd.concat([rows.assign(note=""), pd.DataFrame(flags)], ignore_index=True)
    headers = [h for h, _ in list(columns.values())[:3]] + ["degenerate"] + [h for h, _ in list(columns.values())[3:]]
    rows = rows.assign(_c=rows["_header"].map({h: i for i, h in enumerate(headers)})).sort_values("_c", kind="stable")
    return Table(_long(rows, index, lambda r: r["_header"], lambda r: r["_fmt"]), index,
                 "Sanity of what is scored (%; mean over seeds with a t-interval where there are several). Top pick "
                 "share: the share of questions on which a model picks its most frequent answer position; from "
                 f"{100 * diagnostics.DEGENERATE_SHARE:.0f}% it is flagged degenerate (it answers by position, not "
                 "content, and scores the share of gold answers at that position, `gold_top_share` in metrics.csv). "
                 "Each ensemble's pseudo-answers for student_pool: the share equal (after normalisation) to one of the "
                 "question's choices, the share cut at max_new_tokens, and their mean length in tokens.",
                 row_order={"model": {m: i for i, (_, _, m) in enumerate(ranked)}})


POOL_MEANING = {"easy": "easy questions held out from weak_train, val and test_id (the W2S protocol)",
                "hard": "hard questions (the pool shares test_ood's distribution)"}


def protocol_note(cfg) -> str:
    """The caption sentence that says which questions the students were taught on, per dataset."""
    by_choice: dict[str, list[str]] = {}
    for ds in cfg.datasets:
        by_choice.setdefault(ds.student_pool, []).append(ds.name)
    parts = [f"{POOL_MEANING[c]} for {', '.join(names)}" for c, names in sorted(by_choice.items())]
    return f"Student pool (student_pool): {'; '.join(parts)}."
