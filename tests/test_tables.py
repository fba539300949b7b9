"""tables.py: every table from a small collected metrics.csv, and its CSV, Markdown and LaTeX."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import pandas as pd
import pytest

from ensemw2s.errors import UserError
from ensemw2s.selections import load_metrics
from ensemw2s.tables import TABLES, protocol_note, write_table
from tests.test_report import ENSEMBLES, collected_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return collected_run(tmp_path_factory.mktemp("tables"))


def _write(name, metrics, boosting, out):
    write_table(TABLES.get(name)(load_metrics(metrics), boosting), out)


def _table(run, tmp_path, name):
    metrics, boosting = run
    _write(name, metrics, boosting, tmp_path / name)
    for ext in ("csv", "md", "tex"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    return pd.read_csv(tmp_path / f"{name}.csv", keep_default_na=False), (tmp_path / f"{name}.md").read_text()


def _rows_csv(path, rows):
    """A hand-written metrics.csv, its rows in the order given."""
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_registry_names_every_table():
    assert TABLES.names() == sorted(["experts", "students", "rounds", "ablations", "compute", "paper_claims",
                                     "summary"])


def test_experts_table(run, tmp_path):
    frame, md = _table(run, tmp_path, "experts")
    assert list(frame.columns[:4]) == ["dataset", "weak_model", "model", "round"]
    assert {"ID acc", "ID EM", "OOD acc", "OOD EM", "ID acc ci_low"} <= set(frame.columns)
    assert set(frame["model"]) == {"weak base", "expert boost", "expert bagging", "expert sequence",
                                   *(f"ensemble {e}" for e in ENSEMBLES)}
    metrics = load_metrics(run[0])
    want = metrics[(metrics["role"] == "ensemble") & (metrics["ensemble"] == "boost") & (metrics["round"] == 2)
                   & (metrics["seed"] == "all") & (metrics["eval_split"] == "test_ood") & (metrics["metric"] == "acc")
                   & (metrics["dataset"] == "arc")]["value"].item()
    got = frame[(frame["model"] == "ensemble boost") & (frame["round"] == 2) & (frame["dataset"] == "arc")]["OOD acc"]
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert f"{100 * want:.1f} [" in md  # percent, with its interval


def test_students_table_has_ceiling_gap_and_pgr(run, tmp_path):
    frame, md = _table(run, tmp_path, "students")
    for split in ("ID", "OOD"):
        assert {f"{split} student", f"{split} ceiling", f"{split} gap", f"{split} PGR(weak)", f"{split} PGR(ens)",
                f"{split} strong base", f"{split} PGR(strong base)", f"{split} vs strong base"} <= set(frame.columns)
    row = frame[(frame["dataset"] == "arc") & (frame["ensemble"] == "boost") & (frame["round"] == 3)
                & (frame["score"] == "acc")].iloc[0]
    assert 0 < row["ID PGR(weak)"] < 1 and row["ID gap"] > 0
    assert "PGR" in md.splitlines()[0]  # the caption says how to read PGR


def test_rounds_table_marks_best_round(run, tmp_path):
    frame, _ = _table(run, tmp_path, "rounds")
    assert {"r=1", "r=2", "r=3", "r*"} <= set(frame.columns)
    assert set(frame["role"]) == {"expert", "ensemble", "student"}
    assert set(frame.loc[frame["role"] == "ensemble", "r*"].astype(int)) <= {1, 2, 3}
    assert set(frame.loc[frame["role"] == "expert", "r*"]) == {""}  # r* selects an ensemble size, not an expert


def test_ablations_table_compares_every_ensemble_in_metrics_order(run, tmp_path):
    frame, _ = _table(run, tmp_path, "ablations")
    # collect sorts metrics.csv by ensemble name within a role
    assert [c for c in frame.columns if c in ENSEMBLES] == ["bagging", "boost", "boost-uniform", "sequence"]
    assert set(frame["role"]) == {"ensemble", "student"}


def test_ablations_table_takes_any_ensemble_name_in_file_order(tmp_path):
    """No list of known ensembles: a new one is a column, in the order metrics.csv has it."""
    row = dict(weak_model="w", strong_model="", dataset="d", eval_split="test_id", role="ensemble", round=1,
               seed="0", score="acc", metric="acc", ci_low="", ci_high="", n=4, note="")
    path = _rows_csv(tmp_path / "m.csv", [dict(row, ensemble="tempered", value=0.75),
                                          dict(row, ensemble="boost", value=0.5)])
    _write("ablations", path, [], tmp_path / "ablations")
    frame = pd.read_csv(tmp_path / "ablations.csv", keep_default_na=False)
    assert list(frame.columns) == ["dataset", "weak_model", "strong_model", "role", "score", "eval_split",
                                   "tempered", "boost"]
    assert "| 75.0       | 50.0    |" in (tmp_path / "ablations.md").read_text()


def test_compute_table_takes_wall_time_rows_when_present(run, tmp_path):
    metrics, boosting = run
    frame, _ = _table(run, tmp_path, "compute")
    assert "tokens_processed" in frame.columns and "wall_time_s" not in frame.columns
    extra = tmp_path / "with_time.csv"
    with open(metrics) as src, open(extra, "w", newline="") as dst:
        dst.write(src.read())
        csv.writer(dst, lineterminator="\n").writerow(
            ["gpt2", "", "arc", "all", "expert", "boost", 1, 0, "", "wall_time_s", 12.5, "", "", ""])
    _write("compute", extra, [], tmp_path / "compute_time")
    timed = pd.read_csv(tmp_path / "compute_time.csv", keep_default_na=False)
    assert timed["wall_time_s"].replace("", float("nan")).astype(float).max() == 12.5


def test_paper_claims_beside_measurements(run, tmp_path):
    frame, md = _table(run, tmp_path, "paper_claims")
    assert set(frame["claim"]) == {"experts ID", "experts OOD", "students ID", "students OOD"}
    assert set(frame["at"]) == {"r*", "r=T"}  # the pre-specified r* (val) with r = T beside it
    paper = dict(zip(frame["claim"], frame["paper (points)"]))
    assert paper == {"experts ID": 4.0, "experts OOD": 6.0, "students ID": 3.2, "students OOD": 2.28}
    assert "+2.28" in md and "measured (points) ci_low" in frame.columns and "MDE (points)" in frame.columns
    metrics = load_metrics(run[0])
    r_star = metrics[(metrics["metric"] == "best_round") & (metrics["role"] == "ensemble") & (metrics["seed"] == "all")
                     & (metrics["ensemble"] == "boost") & (metrics["dataset"] == "arc") & (metrics["score"] == "acc")]
    for claim in ("experts ID", "students ID"):  # students are read at their supervisor's r*
        row = frame[(frame["claim"] == claim) & (frame["dataset"] == "arc") & (frame["at"] == "r*")].iloc[0]
        assert row["r"] == r_star["value"].item()
    mde = metrics[(metrics["metric"] == "improvement_vs_expert1_mde") & (metrics["seed"] == "all")
                  & (metrics["ensemble"] == "boost") & (metrics["dataset"] == "arc") & (metrics["score"] == "acc")
                  & (metrics["eval_split"] == "test_id") & (metrics["round"] == r_star["value"].item())]
    row = frame[(frame["claim"] == "experts ID") & (frame["dataset"] == "arc") & (frame["at"] == "r*")].iloc[0]
    assert row["MDE (points)"] == pytest.approx(mde["value"].item(), rel=1e-5)
    verdict = row["detectable at 80% power?"]
    assert verdict.startswith("yes" if row["MDE (points)"] <= 4.0 else "no")


def test_paper_claims_say_when_r_star_is_one(tmp_path):
    """With r* = 1 the ensemble comparison is 0 by construction: no MDE, a sentence instead."""
    rows = [dict(weak_model="w", strong_model="", dataset="d", eval_split="val", role="ensemble", ensemble="boost",
                 round=0, seed="0", score="acc", metric="best_round", value=1, ci_low="", ci_high="", n=3, note="")]
    for r, gain in ((1, 0.0), (2, -1.0), (3, 2.0)):
        for metric, value in (("improvement_vs_expert1", gain), ("improvement_vs_expert1_mde", 3.0 * (r > 1)),
                              ("acc", 0.5)):
            rows.append(dict(rows[0], eval_split="test_id", round=r, metric=metric, value=value,
                             ci_low=gain - (r > 1), ci_high=gain + (r > 1)))
    path = _rows_csv(tmp_path / "m.csv", rows)
    _write("paper_claims", path, [], tmp_path / "claims")
    frame = pd.read_csv(tmp_path / "claims.csv", keep_default_na=False)
    at_star = frame[frame["at"] == "r*"].iloc[0]
    assert at_star["r"] == 1 and at_star["MDE (points)"] == ""
    assert "r* = 1" in at_star["detectable at 80% power?"]
    at_last = frame[frame["at"] == "r=T"].iloc[0]
    assert at_last["r"] == 3 and float(at_last["MDE (points)"]) == 3.0
    assert at_last["detectable at 80% power?"] == "yes: MDE 3.0 <= 4"
    assert "n/a (r* = 1)" in (tmp_path / "claims.md").read_text()


def test_summary_reads_top_to_bottom(run, tmp_path):
    frame, md = _table(run, tmp_path, "summary")
    models = list(dict.fromkeys(frame["model"]))
    assert models[:4] == ["weak base, zero-shot", "strong base, zero-shot", "single weak expert h_1", "student of h_1"]
    assert models[-1] == "ceiling (strong on gold student_pool)"
    assert {"ID", "OOD", "ID ci_low"} <= set(frame.columns)
    weak_only = tmp_path / "weak_only.csv"
    metrics = load_metrics(run[0])
    metrics[~metrics["role"].isin(["student"])].to_csv(weak_only, index=False)
    with pytest.raises(UserError, match="no rows for students"):
        _write("summary", weak_only, [], tmp_path / "summary_weak_only")


def test_latex_is_escaped(run, tmp_path):
    _table(run, tmp_path, "paper_claims")
    tex = (tmp_path / "paper_claims.tex").read_text()
    assert r"\begin{tabular}" in tex and r"weak\_model" in tex and r"h\_1" in tex
    assert "h_1" not in tex


def test_protocol_note_names_each_pool_choice_once():
    cfg = SimpleNamespace(datasets=[SimpleNamespace(name="sciq", student_pool="easy"),
                                    SimpleNamespace(name="arc", student_pool="hard"),
                                    SimpleNamespace(name="quartz", student_pool="easy")])
    assert protocol_note(cfg) == (
        "Student pool (student_pool): easy questions held out from weak_train, val and test_id (the W2S protocol) "
        "for sciq, quartz; hard questions (the pool shares test_ood's distribution) for arc.")
