"""report.py: `ensemw2s report --name` finds a table or figure and writes its files."""
from __future__ import annotations

import copy

import pytest

from ensemw2s import config as config_mod
from ensemw2s import report
from ensemw2s.collect import COLUMNS, write_metrics
from ensemw2s.errors import UserError
from ensemw2s.figures import FIGURES
from ensemw2s.tables import TABLES
from tests.conftest import ALL_VARIANTS, BASE_CONFIG
from tests.test_collect import fake_run

ENSEMBLES = ("boost", "boost-uniform", "bagging", "sequence")


def collected_run(root):
    """(metrics.csv, boosting.json files) of a collected fake run: 3 seeds, 3 rounds, every ablation ensemble
    (one dataset keeps figures fast). The table and figure tests share it."""
    cfg = config_mod.from_dict({**copy.deepcopy(BASE_CONFIG), "results_dir": str(root / "results"),
                                "boosting": {"rounds": 3, "variants": ALL_VARIANTS}})
    scores, boosting = fake_run(root, seeds=(0, 1, 2), datasets=("arc",), ensembles=ENSEMBLES,
                                variants=("boost", "bagging", "sequence"))
    return write_metrics(cfg, scores, boosting, root / "metrics.csv"), boosting


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return collected_run(tmp_path_factory.mktemp("report"))


def test_names_are_the_tables_then_the_figures():
    assert report.names() == ["ablations", "compute", "controls", "controls_aa", "diagnostics", "experts", "paper_claims",
                              "rounds", "sanity", "students", "summary", "variants", "acc_by_difficulty", "acc_vs_rounds", "diagnostics_rounds",
                              "eps_alpha", "pgr", "weight_concentration"]
    assert report.names() == TABLES.names() + FIGURES.names()


def test_make_writes_a_table_or_a_figure_by_name(run, tmp_path):
    metrics, boosting = run
    report.make("compute", metrics, boosting, tmp_path / "compute")
    report.make("eps_alpha", metrics, boosting, tmp_path / "eps_alpha")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compute.csv", "compute.md", "compute.tex",
                                                          "eps_alpha.pdf", "eps_alpha.png"]


def test_build_table_appends_the_caption_note(run):
    metrics, boosting = run
    plain = report.build_table("compute", metrics, boosting)
    noted = report.build_table("compute", metrics, boosting, caption_note="Student pool: easy.")
    assert noted.caption == plain.caption + " Student pool: easy."
    assert noted.frame.equals(plain.frame)


def test_unknown_name_and_missing_rows_are_user_errors(run, tmp_path):
    metrics, boosting = run
    with pytest.raises(UserError, match="Did you mean 'experts'"):
        report.make("expert", metrics, boosting, tmp_path / "x")
    only_header = tmp_path / "empty.csv"
    only_header.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(UserError, match="no rows for students"):
        report.make("students", only_header, [], tmp_path / "s")
    assert not (tmp_path / "s.csv").exists()


def test_no_table_and_figure_share_a_name():
    """`report --name` looks in the tables first: a figure named like a table could never be drawn."""
    assert not set(TABLES.names()) & set(FIGURES.names())
