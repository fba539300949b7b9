"""figures.py: every figure renders to PNG and PDF from a small collected metrics.csv."""
from __future__ import annotations

import pytest
from PIL import Image

from ensemw2s import figures
from ensemw2s.figures import FIGURES, save_figure
from ensemw2s.selections import load_metrics
from tests.test_report import collected_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return collected_run(tmp_path_factory.mktemp("figures"))


def _draw(name, metrics, boosting, out):
    save_figure(FIGURES.get(name)(load_metrics(metrics), boosting), out)


def test_registry_names_every_figure():
    assert FIGURES.names() == sorted(["acc_vs_rounds", "pgr", "acc_by_difficulty", "eps_alpha",
                                      "weight_concentration"])


@pytest.mark.parametrize("name", ["acc_vs_rounds", "pgr", "acc_by_difficulty", "eps_alpha", "weight_concentration"])
def test_figures_are_written_as_png_and_pdf(run, tmp_path, name):
    metrics, boosting = run
    _draw(name, metrics, boosting, tmp_path / name)
    with Image.open(tmp_path / f"{name}.png") as img:
        assert img.format == "PNG" and min(img.size) > 300
    assert (tmp_path / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_boosting_figures_fall_back_to_metrics_rows(run, tmp_path):
    metrics, _ = run
    _draw("weight_concentration", metrics, [], tmp_path / "w")
    assert (tmp_path / "w.png").stat().st_size > 0


def test_palette_colours_follow_the_run_order_not_the_panel():
    """Slot i of the run's ensemble order gets colour i, whichever names a panel shows; others come after."""
    _, sns = figures._pyplot()
    colors = sns.color_palette("colorblind", 10)
    order = ["bagging", "boost", "boost-uniform"]
    assert figures._palette(["boost-uniform"], order) == {"boost-uniform": colors[1]}  # slot 2 -> pick[2] = 1
    assert figures._palette(["extra", "boost"], order) == {"boost": colors[2], "extra": colors[4]}  # slot 3
