"""tables.py: every table from a small collected metrics.csv, and its CSV, Markdown and LaTeX."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import pandas as pd
import pytest

from ensemw2s.errors import UserError
from ensemw2s.selections import load_metrics
from ensemw2s.tables import TABLES, claim_verdict, protocol_note, write_table
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
                                     "summary", "controls_aa", "diagnostics", "controls", "variants", "sanity"])


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
    assert at_last["verdict"] == "supported"  # CI [1, 3]: above 0
    assert at_star["verdict"].startswith("r* = 1")
    assert "n/a (r* = 1)" in (tmp_path / "claims.md").read_text()


@pytest.mark.parametrize("low, high, verdict", [
    (0.5, 2.0, "supported"),  # above 0 (though below the claim: the rule's first branch wins)
    (-3.0, 3.5, "inconsistent with the claim"),  # the claim (4) is above the CI
    (-1.0, 5.0, "not resolvable at this size"),  # holds both 0 and 4
    (-1.0, 4.0, "not resolvable at this size"),  # the claim on the bound is not excluded
])
def test_claim_verdict_by_the_rule_fixed_in_advance(low, high, verdict):
    row = {"at": "r=T", "r_star": 2, "ci_low": low, "ci_high": high, "paper": 4.0}
    assert claim_verdict(row) == verdict


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


def test_controls_aa_table(tmp_path, make_config):
    """The A/A difference per seed and pooled, with its CI and whether the CI includes 0 (test_collect.AA_ACC:
    seed 0: 0 points, CI includes 0; seed 1: +60, and pooled: +30, whose CIs exclude 0)."""
    from ensemw2s.collect import write_metrics
    from tests.test_collect import aa_score_files

    metrics = write_metrics(make_config(), aa_score_files(tmp_path / "scores"), [], tmp_path / "metrics.csv")
    _write("controls_aa", metrics, [], tmp_path / "controls_aa")
    frame = pd.read_csv(tmp_path / "controls_aa.csv", keep_default_na=False, dtype={"seed": str})
    assert list(frame.columns[:4]) == ["dataset", "pair", "supervisor", "seed"]
    assert list(frame["seed"]) == ["0", "1", "all"] and set(frame["supervisor"]) == {"boost r=1"}
    assert frame["pair"].tolist() == ["w -> s"] * 3
    assert frame["ID acc (points)"].tolist() == pytest.approx([0.0, 60.0, 30.0], abs=1e-4)
    assert frame["ID acc: CI includes 0?"].tolist() == ["yes", "no: the CIs are too narrow",
                                                        "no: the CIs are too narrow"]
    md = (tmp_path / "controls_aa.md").read_text()
    assert "+60.0 [+29.6, +90.4]" in md and "+30.0 [+9.4, +50.6]" in md  # 60 -+ 1.96 * 15.49, 30 -+ 1.96 * 10.49
    only_header = tmp_path / "empty.csv"
    only_header.write_text(",".join(pd.read_csv(metrics, nrows=0).columns) + "\n")
    with pytest.raises(UserError, match="aa_replicate"):
        _write("controls_aa", only_header, [], tmp_path / "none")


def _diag_row(metric, split, value, seed="0", role="expert", ensemble="boost", r=2, lo="", hi="", score=""):
    return {"weak_model": "w", "strong_model": "", "dataset": "d", "eval_split": split, "role": role,
            "ensemble": ensemble, "round": r, "seed": seed, "score": score, "metric": metric, "value": value,
            "ci_low": lo, "ci_high": hi, "n": 5, "note": ""}


def test_diagnostics_table_by_hand(tmp_path):
    """One row per variant and round; the seed-'all' row where there is one, else the single seed's."""
    rows = [_diag_row("eps", "weak_train", 0.2), _diag_row("eps", "weak_train", 0.3, seed="1"),
            _diag_row("eps", "weak_train", 0.25, seed="all", lo=0.1, hi=0.4),
            _diag_row("alpha", "weak_train", 12.34567),
            _diag_row("effective_sample_size", "weak_train", 1234.4),
            _diag_row("fix_rate_tokens", "val", 0.5),
            _diag_row("fix_rate_tokens", "weak_train", 0.9),  # not shown: the table's fix rates are val's
            _diag_row("oracle_acc", "val", 0.75, seed="all", role="ensemble", lo=0.7, hi=0.8, score="acc"),
            _diag_row("oracle_acc", "test_id", 0.6, role="ensemble", score="acc"),
            _diag_row("expert_disagreement", "test_id", 0.4, role="ensemble", ensemble="boost-uniform", score="acc"),
            _diag_row("eps", "weak_train", 0.1, r=1),
            _diag_row("acc", "val", 0.5, score="acc")]  # not a diagnostic
    _write("diagnostics", _rows_csv(tmp_path / "m.csv", rows), [], tmp_path / "diagnostics")
    frame = pd.read_csv(tmp_path / "diagnostics.csv")
    assert list(frame.columns[:4]) == ["dataset", "weak_model", "ensemble", "round"]
    assert [c for c in frame.columns[4:] if "ci_" not in c] == [
        "eps", "alpha", "ESS", "val fix rate tokens", "val oracle acc", "ID oracle acc", "ID disagreement"]
    assert list(zip(frame["ensemble"], frame["round"])) == [("boost", 1), ("boost", 2), ("boost-uniform", 2)]
    r2 = frame.iloc[1]
    assert (r2["eps"], r2["eps ci_low"], r2["eps ci_high"]) == (0.25, 0.1, 0.4)  # pooled over the two seeds
    assert (r2["alpha"], r2["val fix rate tokens"], r2["val oracle acc"], r2["ID oracle acc"]) == (
        12.3457, 0.5, 0.75, 0.6)  # the CSV keeps 6 significant digits
    assert frame.iloc[2]["ID disagreement"] == 0.4 and pd.isna(frame.iloc[2]["eps"])
    md = (tmp_path / "diagnostics.md").read_text()
    line = next(x for x in md.splitlines() if "| boost " in x and "| 2 " in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4:] == ["0.25 [0.1, 0.4]", "12.35", "1,234", "50.0", "75.0 [70.0, 80.0]", "60.0", ""]


def test_controls_table(tmp_path, make_config):
    """The partition control and the longer baseline from test_controls' hand-made scores (one seed): member 1
    100% on its part, 25% elsewhere, competent; member 2 75% on its part (p = 13/256: not); routed 7/8."""
    from ensemw2s.collect import write_metrics
    from tests.test_controls import VARIANTS, fake_control_run

    cfg = make_config(boosting={"rounds": 2, "variants": VARIANTS})
    scores, boosting = fake_control_run(tmp_path)
    metrics = write_metrics(cfg, scores, boosting, tmp_path / "metrics.csv")
    _write("controls", metrics, boosting, tmp_path / "controls")
    frame = pd.read_csv(tmp_path / "controls.csv", keep_default_na=False)
    assert list(frame.columns[:5]) == ["dataset", "weak_model", "ensemble", "model", "eval_split"]
    val = frame[frame["eval_split"] == "val"].set_index(["ensemble", "model"])
    num = lambda key, col: float(val.loc[key, col])  # noqa: E731  (columns with empty cells read as text)
    assert num(("partition", "member r=1"), "own part") == 1.0
    assert num(("partition", "member r=2"), "other parts") == 0.25
    assert val.loc[("partition", "member r=1"), "competent"].startswith("yes (one-sided exact binomial p = 0.00391")
    assert val.loc[("partition", "member r=2"), "competent"].startswith("no (")
    assert num(("partition", "member r=2"), "routed minus member (points)") == pytest.approx(37.5)
    assert num(("partition", "ensemble r=2"), "routed") == 0.875
    assert num(("partition", "ensemble r=2"), "token ensemble") == 0.75
    assert num(("partition", "ensemble r=2"), "gain kept by token mixing") == pytest.approx(0.5)
    assert val.loc[("partition", "ensemble r=2"), "valid"] == "no (incompetent member(s): 2)"
    assert num(("boost", "ensemble r=2"), "vs longer (points)") == pytest.approx(12.5)
    md = (tmp_path / "controls.md").read_text()
    assert "routed ensemble does not beat member 1: measurement broken" not in md  # notes show only for n/a cells
    assert "| +25.0 [" in md  # partition r2 vs longer on val


def _gain_row(role, metric, split, value, ensemble, r, seed="all", lo="", hi="", strong="", score="acc"):
    return {**_diag_row(metric, split, value, seed=seed, role=role, ensemble=ensemble, r=r, lo=lo, hi=hi, score=score),
            "strong_model": strong}


def test_variants_table_reads_each_variant_at_its_last_round(tmp_path):
    """boost at r = 3 (not r = 2), longer at its one round; the training tokens of all rounds summed; pooled rows
    (seed = all) where there are several seeds, acc only (acc_norm is not the primary score)."""
    rows = [
        _gain_row("ensemble", "acc", "val", 0.6, "boost", 1), _gain_row("ensemble", "acc", "val", 0.62, "boost", 3),
        _gain_row("ensemble", "improvement_vs_expert1", "val", 4.0, "boost", 2),
        _gain_row("ensemble", "improvement_vs_expert1", "val", -2.0, "boost", 3, lo=-5.0, hi=1.0),
        _gain_row("ensemble", "improvement_vs_expert1", "val", 9.0, "boost", 3, score="acc_norm"),
        _gain_row("ensemble", "improvement_vs_expert1", "test_id", 1.5, "boost", 3, seed="0"),  # one seed only
        _gain_row("ensemble", "acc", "val", 0.7, "longer", 1),
        _gain_row("ensemble", "improvement_vs_expert1", "val", 10.0, "longer", 1, lo=6.0, hi=14.0),
        _gain_row("student", "improvement_vs_student1", "test_id", 3.0, "boost", 3, strong="s", lo=1.0, hi=5.0),
        _gain_row("expert", "fix_rate_tokens", "val", 0.25, "boost", 3, score=""),
        _gain_row("expert", "fix_rate_tokens", "val", 0.75, "boost", 2, score=""),
        _gain_row("ensemble", "oracle_acc", "val", 0.8, "boost", 3),
        *[_gain_row("expert", "training_tokens", "weak_train", t, "boost", r, score="") for r, t in ((1, 100), (2, 200),
                                                                                                    (3, 300))],
        _gain_row("expert", "training_tokens", "weak_train", 900, "longer", 1, score=""),
    ]
    _write("variants", _rows_csv(tmp_path / "m.csv", rows), [], tmp_path / "variants")
    frame = pd.read_csv(tmp_path / "variants.csv").set_index("ensemble")
    assert list(frame.index) == ["boost", "longer"]
    boost, longer = frame.loc["boost"], frame.loc["longer"]
    assert (boost["r"], longer["r"]) == (3, 1)
    assert (boost["ensemble - h_1, val"], boost["ensemble - h_1, val ci_low"]) == (-2.0, -5.0)
    assert boost["ensemble - h_1, ID"] == 1.5  # the single seed's row where no pooled one exists
    assert (boost["student - student of h_1, ID"], boost["token fix rate h_r, val"]) == (3.0, 0.25)
    assert (boost["oracle, val"], boost["training tokens (all rounds)"]) == (0.8, 600)
    assert (longer["ensemble - h_1, val"], longer["training tokens (all rounds)"]) == (10.0, 900)
    assert pd.isna(longer["token fix rate h_r, val"])
    line = next(x for x in (tmp_path / "variants.md").read_text().splitlines() if "| boost " in x)
    assert "-2.0 [-5.0, +1.0]" in line and "+3.0 [+1.0, +5.0]" in line and "25.0" in line and "600" in line


def test_sanity_table_flags_a_degenerate_predictor(tmp_path):
    """Per model and round: top pick shares per split, the degenerate flag (every flagged split's note, else
    "no"), and each ensemble's pseudo-answer shares; models in role order (bases, experts, ensembles, students)."""
    flag = "degenerate: picks choice 0 on 95.0% of questions"
    rows = [
        {**_gain_row("student", "pick_top_share", "test_id", 0.95, "boost", 3, strong="s"), "note": flag},
        _gain_row("student", "pick_top_share", "val", 0.4, "boost", 3, strong="s"),
        _gain_row("ensemble", "pick_top_share", "test_id", 0.3, "boost", 3),
        _gain_row("ensemble", "pseudo_choice_match_share", "student_pool", 0.8, "boost", 3, score=""),
        _gain_row("ensemble", "pseudo_truncated_share", "student_pool", 0.1, "boost", 3, score=""),
        _gain_row("ensemble", "pseudo_mean_answer_tokens", "student_pool", 3.25, "boost", 3, score=""),
        _gain_row("ensemble", "pick_top_share", "test_id", 0.9, "boost", 3, score="acc_norm"),  # not the primary score
        _gain_row("weak_base", "pick_top_share", "test_ood", 0.25, "", 0),
        _gain_row("ensemble", "acc", "test_id", 0.7, "boost", 3),  # not a sanity metric
    ]
    _write("sanity", _rows_csv(tmp_path / "m.csv", rows), [], tmp_path / "sanity")
    frame = pd.read_csv(tmp_path / "sanity.csv", keep_default_na=False)
    assert list(frame["model"]) == ["weak base", "ensemble boost", "student boost"]
    assert [c for c in frame.columns if "ci_" not in c][5:] == [
        "val top pick share", "ID top pick share", "OOD top pick share", "degenerate", "pseudo-answers that are a choice",
        "pseudo-answers truncated", "pseudo-answer tokens (mean)"]
    base, ens, student = (frame.iloc[i] for i in range(3))
    number = lambda row, *cols: tuple(float(row[c]) for c in cols)  # noqa: E731  (empty cells keep the columns text)
    assert number(student, "ID top pick share", "val top pick share") == (0.95, 0.4)
    assert student["degenerate"] == f"ID {flag}" and ens["degenerate"] == "no" and base["degenerate"] == "no"
    assert number(ens, "ID top pick share", "pseudo-answers that are a choice", "pseudo-answers truncated",
                  "pseudo-answer tokens (mean)") == (0.3, 0.8, 0.1, 3.25)
    assert number(base, "OOD top pick share") == (0.25,) and student["pseudo-answers that are a choice"] == ""
