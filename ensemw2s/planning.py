"""The pre-registered plan of a real run (`ensemw2s power-plan`): test-split sizes and the second variant,
decided from committed runs before the run starts.

Size. A paired comparison of two models on n questions (one seed) has variance (p10 + p01 - d^2) / n <= p_d / n
(McNemar; p_d = p10 + p01, the share of questions on which they disagree). The seed-stratified estimator
averages S seeds, so its SE is at most sqrt(p_d / (S n)), and an effect delta is detectable at 80% power
(5% two-sided) when n >= (z_0.975 + z_0.8)^2 p_d / (S delta^2) questions per seed and split. p_d is planned
as the largest discordance between an ensemble and h_1 seen in a committed run, never below a floor.

Go / no-go. W2S needs room above the weak supervisor: a pair qualifies on a dataset when, on seed 0,
its ceiling (the strong model trained on gold student_pool) beats h_1 (the single weak expert) beyond
noise on every test split: the paired (McNemar) 95% CI of ceiling - h_1 lies above 0. `go_no_go` decides
it from four score files (bases, h_1, ceiling), before the run pays for boosting and students.

Second variant. Beside the method (variants.METHOD), a real run carries the one variant with the best mean
`val` gain of its ensemble over h_1 (at its last round) in a committed ablation, controls excluded: chosen on
`val` of another run, so the real run's test splits play no part in the choice.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ensemw2s import metrics as M
from ensemw2s.controls import CONTROL_KINDS
from ensemw2s.errors import UserError
from ensemw2s.scores import PRIMARY_SCORE, load_score
from ensemw2s.variants import METHOD

TEST_SPLITS = ("test_id", "test_ood")


def planned_test_size(discordance: float, delta: float, seeds: int) -> int:
    """Questions per seed and split for an effect `delta` (a fraction) to be detectable (see the module doc)."""
    if not 0 < discordance <= 1 or not 0 < delta < 1 or seeds < 1:
        raise ValueError(f"discordance {discordance} and delta {delta} must be in (0, 1], seeds {seeds} >= 1")
    return math.ceil((M.Z_LEVEL + M.Z_POWER) ** 2 * discordance / (seeds * delta ** 2))


def _by_uid(score: dict, split: str) -> dict[str, float]:
    block = score["splits"].get(split, {})
    return dict(zip(block.get("uids", []), block.get("per_example", {}).get(PRIMARY_SCORE, [])))


REFERENCES = {"ensemble": "expert", "student": "student"}  # role compared -> the role of its r = 1 reference


def discordances(run: Path) -> dict[tuple[str, str], float]:
    """(dataset, test split) -> the largest share of questions on which a primary comparison's two models
    disagree (acc) in the run's score files: an ensemble (any variant, round >= 2) and h_1 of its seed and weak
    model, or its student and the student of h_1 (same strong model)."""
    references, compared = {}, defaultdict(list)
    for path in sorted((run / "scores").rglob("*.json")):
        if path.name.endswith(".provenance.json"):
            continue
        score = load_score(path)
        m = score["meta"]
        strong = m["strong_model"] if m["role"] == "student" else ""
        if m["role"] in REFERENCES.values() and m["round"] == 1 and m["ensemble"] == METHOD:
            references[(m["role"], m["dataset"], m["seed"], m["weak_model"], strong)] = score
        if m["role"] in REFERENCES and m["round"] >= 2:
            compared[(REFERENCES[m["role"]], m["dataset"], m["seed"], m["weak_model"], strong)].append(score)
    out: dict[tuple[str, str], float] = {}
    for key, scores in compared.items():
        if key not in references:
            continue
        for split in TEST_SPLITS:
            ref = _by_uid(references[key], split)
            for score in scores:
                other = _by_uid(score, split)
                shared = sorted(set(ref) & set(other))
                if shared:
                    d = float(np.mean([ref[u] != other[u] for u in shared]))
                    out[(key[1], split)] = max(out.get((key[1], split), 0.0), d)
    if not out:
        raise UserError(f"{run}/scores: no ensemble or student scored beside its r = 1 reference on "
                        f"{' or '.join(TEST_SPLITS)}; plan from a run that scored both")
    return out


GATE_ROLES = {"weak_base": "weak base, zero-shot", "strong_base": "strong base, zero-shot",
              "expert": "h_1 (one weak expert)", "ceiling": "ceiling (strong on gold student_pool)"}


def go_no_go(score_files: list[Path]) -> dict:
    """The gate of one dataset, seed and pair (module doc): each test split's accuracies (points), the
    difference ceiling - h_1 with its paired 95% CI, and `go` = that CI above 0 on every test split."""
    found: dict[str, dict] = {}
    for path in score_files:
        score = load_score(Path(path))
        role = score["meta"]["role"]
        if role not in GATE_ROLES or role in found:
            raise UserError(f"go-no-go: {path} is a second {role!r} score, or not one of {', '.join(GATE_ROLES)}; "
                            f"pass one score file of each")
        found[role] = score
    missing = [r for r in GATE_ROLES if r not in found]
    if missing:
        raise UserError(f"go-no-go: no score file of {', '.join(missing)}; pass one of each of {', '.join(GATE_ROLES)}")
    meta = {k: found["expert"]["meta"][k] for k in ("dataset", "seed", "weak_model")}
    out = {**meta, "strong_model": found["ceiling"]["meta"]["strong_model"], "score": PRIMARY_SCORE,
           "rule": "go when the paired 95% CI of ceiling - h_1 is above 0 on every test split", "splits": {}}
    for split in TEST_SPLITS:
        blocks = {role: score["splits"].get(split, {}) for role, score in found.items()}
        uids = blocks["expert"].get("uids")
        if not uids or any(b.get("uids") != uids for b in blocks.values()):
            raise UserError(f"go-no-go: the score files do not all score the same {split} rows; rescore them "
                            f"on one split directory")
        acc = {role: np.asarray(b["per_example"][PRIMARY_SCORE], dtype=float) for role, b in blocks.items()}
        mean, cov, n = M.paired_moments(acc["ceiling"] - acc["expert"])
        diff, se = 100 * float(mean[0]), 100 * math.sqrt(max(float(cov[0, 0]), 0.0))
        low, high = M.normal_ci(diff, se)
        out["splits"][split] = {**{role: 100 * float(acc[role].mean()) for role in GATE_ROLES},
                                "ceiling_minus_h1": diff, "ci_low": low, "ci_high": high, "n": n}
    out["go"] = all(s["ci_low"] > 0 for s in out["splits"].values())
    return out


def gate_scores(run: Path, cfg) -> dict[tuple[str, str, str], list[Path]]:
    """(dataset, weak, strong) -> the four score files of its gate in a run's scores/, found by their meta:
    the first seed's bases, METHOD's h_1 and the ceiling (pairs and datasets of the run's config)."""
    seed = cfg.seeds[0]
    found: dict[tuple, Path] = {}
    for path in sorted((run / "scores").glob(f"*/s{seed}/**/*.json")):
        if path.name.endswith(".provenance.json"):
            continue
        m = load_score(path)["meta"]
        if m["role"] == "expert" and (m["ensemble"], m["round"]) != (METHOD, 1):
            continue
        found[(m["dataset"], m["role"], m["weak_model"] or m["strong_model"])] = path
    out = {}
    for d in cfg.datasets:
        for p in cfg.pairs:
            keys = [(d.name, "weak_base", p.weak), (d.name, "strong_base", p.strong), (d.name, "expert", p.weak),
                    (d.name, "ceiling", p.strong)]
            if all(k in found for k in keys):
                out[(d.name, p.weak, p.strong)] = [found[k] for k in keys]
    return out


def render_go_no_go(gate: dict) -> str:
    """The gate as a Markdown table and its verdict line."""
    head = "| split | " + " | ".join(GATE_ROLES.values()) + " | ceiling - h_1 [95% CI] | n |"
    lines = [head, "|" + "---|" * (len(GATE_ROLES) + 3)]
    for split, s in gate["splits"].items():
        lines.append(f"| {split} | " + " | ".join(f"{s[r]:.1f}" for r in GATE_ROLES)
                     + f" | {s['ceiling_minus_h1']:+.1f} [{s['ci_low']:+.1f}, {s['ci_high']:+.1f}] | {s['n']} |")
    verdict = "GO" if gate["go"] else "NO-GO"
    lines.append(f"\n{gate['dataset']}, seed {gate['seed']}, {gate['weak_model']} -> {gate['strong_model']}: "
                 f"{verdict} ({gate['rule']}).")
    return "\n".join(lines)


def second_variant(ablation: Path) -> tuple[str, float]:
    """(variant, its mean val gain over h_1 in points) with the best such gain in the ablation's metrics.csv."""
    from ensemw2s import config as config_mod
    from ensemw2s.selections import load_metrics

    cfg = config_mod.load(ablation / "config.yaml")
    eligible = {n for n, v in cfg.boosting.variants.items() if n != METHOD and v.kind not in CONTROL_KINDS}
    frame = load_metrics(ablation / "metrics.csv")
    rows = frame[(frame["role"] == "ensemble") & (frame["metric"] == "improvement_vs_expert1")
                 & (frame["eval_split"] == "val") & (frame["score"] == PRIMARY_SCORE) & (frame["seed"] == "all")
                 & frame["ensemble"].isin(eligible)]
    if rows.empty:
        raise UserError(f"{ablation}/metrics.csv: no seed-pooled val gains over h_1 of a variant other than "
                        f"{METHOD!r} and the controls; commit an ablation of several seeds first")
    last = rows.groupby("ensemble")["round"].transform("max")
    best = rows[rows["round"] == last].sort_values(["value", "ensemble"], ascending=[False, True]).iloc[0]
    return str(best["ensemble"]), float(best["value"])


def plan(cfg, committed: Path, ablation: Path, delta_points: float, floor: float) -> str:
    """The plan as comment lines for the config's header."""
    seeds = len(cfg.seeds)
    lines = [f"# Pre-registered plan (ensemw2s power-plan --config ... --committed {committed} --ablation {ablation}"
             f" --delta {delta_points:g} --floor {floor:g}):",
             f"#   primary metric: multiple-choice acc; comparisons: the ensemble at r* (chosen on val) vs h_1, and "
             f"its student vs the student of h_1, on test_id and test_ood; {seeds} seeds.",
             f"#   test size per seed and split: n >= (z_0.975 + z_0.8)^2 p_d / (S delta^2), S = {seeds}, "
             f"delta = {delta_points:g} points, p_d = max(discordance seen in {committed}, {floor:g}):"]
    planned = {d.name for d in cfg.datasets}
    for (dataset, split), seen in sorted(discordances(committed).items()):
        if dataset not in planned:
            continue
        p_d = max(seen, floor)
        lines.append(f"#     {dataset} {split}: discordance seen {seen:.3f} -> p_d {p_d:.3f} -> "
                     f"n >= {planned_test_size(p_d, delta_points / 100, seeds)}")
    name, gain = second_variant(ablation)
    lines.append(f"#   second variant: {name} (best mean val gain of its ensemble over h_1 in {ablation}, "
                 f"{gain:+.1f} points; controls and {METHOD} excluded)")
    return "\n".join(lines)
