"""Figures of `ensemw2s report`: one function per figure, from metrics.csv (and, for the boosting figures,
the boosting.json files), registered by name in `FIGURES`; `save_figure` writes PNG and PDF.

Adding a figure is adding a function. matplotlib and seaborn are imported on the first figure drawn, so
importing this module (the workflow reads the names) stays light.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ensemw2s.collect import BOOSTING_METRICS, boosting_rows
from ensemw2s.io import atomic_path
from ensemw2s.registry import Registry
from ensemw2s.selections import (SCORE_LABEL, SPLIT_LABEL, accuracy_rows, best_rounds, ensemble_order, need,
                                 pair_label, pooled)
from ensemw2s.variants import METHOD

FIGURES: Registry[Callable] = Registry("figure")
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


def _palette(names: Iterable[str], order: list[str]) -> dict[str, tuple]:
    """Fixed colours, well-separated and colourblind-safe: slot i of `order` (`ensemble_order` of the run)
    gets colour i, so an ensemble has one colour in every figure of a run, whichever others a panel shows."""
    _, sns = _pyplot()
    colors = sns.color_palette("colorblind", 10)
    pick = [0, 2, 1, 4, 5, 6, 8, 9, 7, 3]  # blue, green, orange, purple, ...: no two look alike
    names = set(names)
    slots = [*order, *sorted(names - set(order))]
    return {name: colors[pick[i % len(pick)]] for i, name in enumerate(slots) if name in names}


def _rounds_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """A panel over boosting rounds: its labels, and whole-number rounds on x."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _finish(fig, axes, title: str, y: float = 1.01):
    """The figure's title above its panels, one legend right of them."""
    fig.suptitle(title, y=y)
    fig.tight_layout()
    _legend(fig, axes)
    return fig


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


@FIGURES.register("acc_vs_rounds")
def figure_acc_vs_rounds(frame: pd.DataFrame, boosting: list[Path]):
    """Accuracy vs r on ID and OOD: experts h_r alone and ensembles of the first r experts (left of each
    split), students taught by those ensembles and the ceiling (right); 95% CI bands."""
    p = pooled(frame)
    rows = accuracy_rows(p[p["role"].isin(list(ROLE_STYLE)) & p["score"].isin(FIGURE_SCORES)
                           & p["eval_split"].isin(["test_id", "test_ood"])])
    rows = need(rows, "experts, ensembles or students on test_id / test_ood")
    ceiling = accuracy_rows(p[p["role"] == "ceiling"])
    strong_base = accuracy_rows(p[p["role"] == "strong_base"])
    panels = rows[["dataset", "weak_model", "score"]].drop_duplicates().sort_values(["dataset", "weak_model", "score"])
    columns = [(split, group) for split in _present(rows["eval_split"], ["test_id", "test_ood"])
               for group in (("expert", "ensemble"), ("student",))]
    colors = _palette(rows["ensemble"], ensemble_order(frame))
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
            _rounds_axes(ax, f"{ds} / {weak}: {who}\n{SPLIT_LABEL[split]} {SCORE_LABEL[score]}", "round r",
                         f"{SCORE_LABEL[score]} (%)")
    return _finish(fig, axes, "Accuracy vs boosting round r (expert: h_r alone; ensemble / student: first r "
                              "experts; bands: 95% CI)")


@FIGURES.register("pgr")
def figure_pgr(frame: pd.DataFrame, boosting: list[Path]):
    """PGR against the weak expert h_1 per round and ensemble, per pair, dataset and test split, beside the PGR
    of the untaught strong base; withheld PGRs are drawn as "n/a"."""
    p = pooled(frame)
    rows = p[(p["role"] == "student") & (p["metric"] == "pgr_vs_weak") & p["score"].isin(FIGURE_SCORES)
             & p["eval_split"].isin(["test_id", "test_ood"])]
    rows = need(rows, "PGR (students, ceiling and h_1 scored)")
    gaps = p[(p["role"] == "student") & (p["metric"] == "gap_ceiling_minus_weak")]
    panel_keys = ["dataset", "weak_model", "strong_model", "score"]
    panels = rows[panel_keys].drop_duplicates().sort_values(panel_keys)
    splits = _present(rows["eval_split"], ["test_id", "test_ood"])
    order = ensemble_order(frame)
    ensembles = _present(rows["ensemble"], order)
    colors = _palette(ensembles, order)
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
            _rounds_axes(ax, f"{ds} / {pair_label(weak, strong)}\n{SPLIT_LABEL[split]} {SCORE_LABEL[score]}{gap}",
                         "round r of the supervising ensemble", "PGR vs weak expert h_1")
    return _finish(fig, axes, "Performance gap recovered (error bars: 95% Fieller CI; dashed: PGR = 1, the ceiling; "
                              "dotted: the untaught strong base; n/a: gap CI includes 0)")


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
    rows = need(accuracy_rows(p[p["eval_split"].isin(["test_id", "test_ood"]) & p["score"].isin(FIGURE_SCORES)]),
                "test_id / test_ood accuracy")
    best = best_rounds(p)
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
            ax.set_title(f"{ds} / {pair_label(weak, strong)}: {SCORE_LABEL[score]}")
    return _finish(fig, axes, f"Accuracy by question difficulty (ID = easy, OOD = hard; ensemble {METHOD!r}; 95% CI)")


def _boosting_frame(frame: pd.DataFrame, boosting: list[Path]) -> pd.DataFrame:
    """Per-seed boosting rows: from the boosting.json files when given, else from metrics.csv."""
    if boosting:
        rows = pd.DataFrame([r for path in sorted(Path(b) for b in boosting) for r in boosting_rows(path)])
    else:
        rows = frame[frame["metric"].isin(BOOSTING_METRICS) & (frame["seed"] != "all")]
    rows = need(rows, "boosting rounds (boosting.json)")
    several = rows["weak_model"].nunique() > 1
    return rows.assign(variant=rows["ensemble"],
                       dataset=[f"{d} / {w}" if several else d for d, w in zip(rows["dataset"], rows["weak_model"])])


def _boosting_figure(frame: pd.DataFrame, boosting: list[Path], panels: list[tuple[str, str, str]], title: str,
                     reference: dict[str, tuple[float, str]]):
    """One panel per boosting metric: value vs round t, colour = training variant, marker = dataset."""
    _, sns = _pyplot()
    rows = _boosting_frame(frame, boosting)
    colors = _palette(rows["variant"], ensemble_order(frame))
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
        _rounds_axes(ax, what, "boosting round t", symbol)
    return _finish(fig, axes, title + " (bands: 95% CI over seeds)", y=1.02)


def _line_with_band(ax, rows: pd.DataFrame, color, label: str, ls: str = "-", marker: str = "o") -> None:
    """A share (0..1) in percent over rounds, with its 95% CI band where it has one (clipped to [0, 100])."""
    rows = rows.sort_values("round")
    ax.plot(rows["round"], 100 * rows["value"], ls=ls, marker=marker, color=color, label=label)
    if rows["ci_low"].notna().any():
        lo, hi = (100 * rows[c].clip(0.0, 1.0) for c in ("ci_low", "ci_high"))
        ax.fill_between(rows["round"], lo, hi, color=color, alpha=0.12, lw=0)


DIAGNOSTIC_PANELS = [  # (title, y label) of the diagnostics figure's columns, all on val
    ("fix rate of h_t: h_{t-1}'s missed answer tokens h_t gets right", "fix rate, tokens (%)"),
    ("oracle (any of h_1..h_r right) vs the ensemble", "acc (%)"),
    ("disagreement of h_1..h_r (mean over pairs)", "questions picked differently (%)"),
]


@FIGURES.register("diagnostics_rounds")  # the table of the same rows is `diagnostics`
def figure_diagnostics_rounds(frame: pd.DataFrame, boosting: list[Path]):
    """Why an ensemble helps or not, per variant over rounds on val: does h_t fix what h_{t-1} missed, how far
    the ensemble is below the ceiling of its experts (oracle), and how different the experts are."""
    p = pooled(frame)
    val = p[p["eval_split"] == "val"]
    fix = val[(val["role"] == "expert") & (val["metric"] == "fix_rate_tokens")]
    oracle = val[(val["role"] == "ensemble") & (val["metric"] == "oracle_acc")]
    disagree = val[(val["role"] == "ensemble") & (val["metric"] == "expert_disagreement")]
    acc = accuracy_rows(val[(val["role"] == "ensemble") & (val["score"] == "acc")
                            & val["ensemble"].isin(set(oracle["ensemble"]))])
    shown = need(pd.concat([fix, oracle, disagree]), "diagnostics on val (answer_misses.json, scored ensembles)")
    panels = shown[["dataset", "weak_model"]].drop_duplicates().sort_values(["dataset", "weak_model"])
    colors = _palette(pd.concat([shown["ensemble"], acc["ensemble"]]), ensemble_order(frame))
    fig, axes = _grid(len(panels), len(DIAGNOSTIC_PANELS), width=4.6)
    for i, (ds, weak) in enumerate(panels.itertuples(index=False)):
        def here(rows: pd.DataFrame) -> pd.DataFrame:
            return rows[(rows["dataset"] == ds) & (rows["weak_model"] == weak)]

        parts = [[(here(fix), "", "-", "o")],
                 [(here(oracle), " oracle", "--", "^"), (here(acc), " ensemble", "-", "s")],
                 [(here(disagree), "", "-", "o")]]
        for j, ((title, ylabel), lines) in enumerate(zip(DIAGNOSTIC_PANELS, parts)):
            ax = axes[i, j]
            for rows, suffix, ls, marker in lines:
                for ens in _present(rows["ensemble"], colors):
                    _line_with_band(ax, rows[rows["ensemble"] == ens], colors[ens], f"{ens}{suffix}", ls, marker)
            if not ax.get_lines():
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            _rounds_axes(ax, f"{ds} / {weak}\n{title}", "round", ylabel)
    return _finish(fig, axes, "Diagnostics on val per variant (fix rate: round t vs t-1; oracle and disagreement: "
                              "the first r experts; bands: 95% CI)")


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
