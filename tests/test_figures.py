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
                                      "weight_concentration", "diagnostics_rounds"])


@pytest.mark.parametrize("name", ["acc_vs_rounds", "pgr", "acc_by_difficulty", "eps_alpha", "weight_concentration",
                                  "diagnostics_rounds"])
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


def _diagnostic_rows(path):
    """A small metrics.csv of seed-'all' rows: boost over rounds 1-3, boost-uniform (r = 2) without fix rates."""
    import pandas as pd

    from ensemw2s.collect import COLUMNS

    def row(metric, value, r, role="ensemble", ensemble="boost", seed="all", split="val", score="acc"):
        lo, hi = (value - 0.05, value + 0.05) if seed == "all" else ("", "")
        return dict(zip(COLUMNS, ["w", "", "d", split, role, ensemble, r, seed, score, metric, value, lo, hi, 10, ""]))

    rows = [row("fix_rate_tokens", 0.5, 2, role="expert", score=""), row("fix_rate_tokens", 0.25, 3, role="expert",
                                                                          score=""),
            row("fix_rate_tokens", 0.9, 2, role="expert", score="", split="weak_train")]  # not val: not drawn
    for r, (acc, oracle, dis) in {1: (0.5, None, None), 2: (0.55, 0.7, 0.3), 3: (0.6, 0.8, 0.4)}.items():
        rows.append(row("acc", acc, r))
        if oracle is not None:
            rows += [row("oracle_acc", oracle, r), row("expert_disagreement", dis, r)]
    rows += [row("acc", 0.52, 2, ensemble="boost-uniform"), row("oracle_acc", 0.7, 2, ensemble="boost-uniform"),
             row("acc", 0.9, 2, ensemble="bagging")]  # no oracle rows: its accuracy is not drawn here
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_diagnostics_figure_draws_fix_rate_oracle_and_disagreement(tmp_path):
    fig = FIGURES.get("diagnostics_rounds")(load_metrics(_diagnostic_rows(tmp_path / "m.csv")), [])
    axes = fig.axes
    assert len(axes) == 3
    assert [ax.get_ylabel() for ax in axes] == ["fix rate, tokens (%)", "acc (%)", "questions picked differently (%)"]

    def lines(ax):
        return {line.get_label(): (list(line.get_xdata()), [round(y, 9) for y in line.get_ydata()])
                for line in ax.get_lines()}

    assert lines(axes[0]) == {"boost": ([2, 3], [50.0, 25.0])}
    assert lines(axes[1]) == {"boost oracle": ([2, 3], [70.0, 80.0]), "boost-uniform oracle": ([2], [70.0]),
                              "boost ensemble": ([1, 2, 3], [50.0, 55.0, 60.0]),
                              "boost-uniform ensemble": ([2], [52.0])}
    assert lines(axes[2]) == {"boost": ([2, 3], [30.0, 40.0])}
    assert axes[1].get_lines()[0].get_linestyle() == "--"  # the oracle dashed, the ensemble solid
    save_figure(fig, tmp_path / "diagnostics_rounds")
    assert (tmp_path / "diagnostics_rounds.png").stat().st_size > 0


def test_diagnostics_figure_needs_its_rows(tmp_path):
    from ensemw2s.collect import COLUMNS
    from ensemw2s.errors import UserError

    only_header = tmp_path / "empty.csv"
    only_header.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(UserError, match="no rows for diagnostics on val"):
        FIGURES.get("diagnostics_rounds")(load_metrics(only_header), [])
