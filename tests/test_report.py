"""report.py: every table and figure from a small collected metrics.csv."""
from __future__ import annotations

import copy
import csv

import pandas as pd
import pytest
from PIL import Image

from ensemw2s import config as config_mod
from ensemw2s import report
from ensemw2s.collect import COLUMNS, write_metrics
from ensemw2s.errors import UserError
from tests.conftest import BASE_CONFIG
from tests.test_collect import fake_run

ENSEMBLES = ("boost", "boost-uniform", "bagging", "sequence")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A collected fake run: 3 seeds, 3 rounds, every ablation ensemble (one dataset keeps figures fast)."""
    root = tmp_path_factory.mktemp("report")
    cfg = config_mod.from_dict({**copy.deepcopy(BASE_CONFIG), "results_dir": str(root / "results")})
    scores, boosting = fake_run(root, seeds=(0, 1, 2), datasets=("arc",), ensembles=ENSEMBLES,
                                variants=("boost", "bagging", "sequence"))
    return write_metrics(cfg, scores, boosting, root / "metrics.csv"), boosting


def _table(run, tmp_path, name):
    metrics, boosting = run
    report.make(name, metrics, boosting, tmp_path / name)
    for ext in ("csv", "md", "tex"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
    return pd.read_csv(tmp_path / f"{name}.csv", keep_default_na=False), (tmp_path / f"{name}.md").read_text()


def test_registry_names_every_table_and_figure():
    assert report.TABLES.names() == sorted(["experts", "students", "rounds", "ablations", "compute", "paper_claims",
                                           "summary"])
    assert report.FIGURES.names() == sorted(["acc_vs_rounds", "pgr", "acc_by_difficulty", "eps_alpha",
                                             "weight_concentration"])


def test_experts_table(run, tmp_path):
    frame, md = _table(run, tmp_path, "experts")
    assert list(frame.columns[:4]) == ["dataset", "weak_model", "model", "round"]
    assert {"ID acc", "ID EM", "OOD acc", "OOD EM", "ID acc ci_low"} <= set(frame.columns)
    assert set(frame["model"]) == {"weak base", "expert boost", "expert bagging", "expert sequence",
                                   *(f"ensemble {e}" for e in ENSEMBLES)}
    metrics = report.load_metrics(run[0])
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


def test_ablations_table_compares_ensembles(run, tmp_path):
    frame, _ = _table(run, tmp_path, "ablations")
    assert [c for c in frame.columns if c in ENSEMBLES] == list(ENSEMBLES)
    assert set(frame["role"]) == {"ensemble", "student"}


def test_compute_table_takes_wall_time_rows_when_present(run, tmp_path):
    metrics, boosting = run
    frame, _ = _table(run, tmp_path, "compute")
    assert "tokens_processed" in frame.columns and "wall_time_s" not in frame.columns
    extra = tmp_path / "with_time.csv"
    with open(metrics) as src, open(extra, "w", newline="") as dst:
        dst.write(src.read())
        csv.writer(dst, lineterminator="\n").writerow(
            ["gpt2", "", "arc", "all", "expert", "boost", 1, 0, "", "wall_time_s", 12.5, "", "", ""])
    report.make("compute", extra, [], tmp_path / "compute_time")
    timed = pd.read_csv(tmp_path / "compute_time.csv", keep_default_na=False)
    assert timed["wall_time_s"].replace("", float("nan")).astype(float).max() == 12.5


def test_paper_claims_beside_measurements(run, tmp_path):
    frame, md = _table(run, tmp_path, "paper_claims")
    assert set(frame["claim"]) == {"experts ID", "experts OOD", "students ID", "students OOD"}
    assert set(frame["at"]) == {"r*", "r=T"}  # the pre-specified r* (val) with r = T beside it
    paper = dict(zip(frame["claim"], frame["paper (points)"]))
    assert paper == {"experts ID": 4.0, "experts OOD": 6.0, "students ID": 3.2, "students OOD": 2.28}
    assert "+2.28" in md and "measured (points) ci_low" in frame.columns and "MDE (points)" in frame.columns
    metrics = report.load_metrics(run[0])
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
    path = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    report.make("paper_claims", path, [], tmp_path / "claims")
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
    metrics = report.load_metrics(run[0])
    metrics[~metrics["role"].isin(["student"])].to_csv(weak_only, index=False)
    with pytest.raises(UserError, match="no rows for students"):
        report.make("summary", weak_only, [], tmp_path / "summary_weak_only")


def test_latex_is_escaped(run, tmp_path):
    _table(run, tmp_path, "paper_claims")
    tex = (tmp_path / "paper_claims.tex").read_text()
    assert r"\begin{tabular}" in tex and r"weak\_model" in tex and r"h\_1" in tex
    assert "h_1" not in tex


@pytest.mark.parametrize("name", ["acc_vs_rounds", "pgr", "acc_by_difficulty", "eps_alpha", "weight_concentration"])
def test_figures_are_written_as_png_and_pdf(run, tmp_path, name):
    metrics, boosting = run
    report.make(name, metrics, boosting, tmp_path / name)
    with Image.open(tmp_path / f"{name}.png") as img:
        assert img.format == "PNG" and min(img.size) > 300
    assert (tmp_path / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_boosting_figures_fall_back_to_metrics_rows(run, tmp_path):
    metrics, _ = run
    report.make("weight_concentration", metrics, [], tmp_path / "w")
    assert (tmp_path / "w.png").stat().st_size > 0


def test_unknown_name_and_missing_rows_are_user_errors(run, tmp_path):
    metrics, boosting = run
    with pytest.raises(UserError, match="Did you mean 'experts'"):
        report.make("expert", metrics, boosting, tmp_path / "x")
    only_header = tmp_path / "empty.csv"
    only_header.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(UserError, match="no rows for students"):
        report.make("students", only_header, [], tmp_path / "s")
    assert not (tmp_path / "s.csv").exists()
