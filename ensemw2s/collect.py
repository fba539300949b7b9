"""`ensemw2s metrics`: score files + boosting.json files -> one tidy `metrics.csv`.

One row per measurement (columns in `COLUMNS`):
- accuracy rows: `metric` is acc, acc_norm or exact_match, with a percentile bootstrap 95% CI over
  examples (`evaluation.bootstrap` resamples; one set of resamples per dataset, seed and split, shared
  by every model, so all CIs on a split are paired);
- derived rows, each computed from per-example results of the SAME rows (paired bootstrap CIs):
  `pgr_vs_weak`, `pgr_vs_ensemble`, `gap_ceiling_minus_weak`, `gap_ceiling_minus_ensemble` (on student
  rows), `improvement_vs_expert1` (ensemble rows, accuracy points), `improvement_vs_student1` (student
  rows, accuracy points), `best_round` (val, value = r*, round 0);
- boosting rows (eval_split `weak_train`, role expert, ensemble = variant): eps, alpha, weight_entropy,
  weight_top10_share per round;
- `tokens_processed` of every score file (eval_split `all`).
`score` names the accuracy measure a derived row is computed from (empty for boosting/compute rows).
With two or more seeds every aggregable row also gets a `seed = all` row: the mean over seeds with a
Student-t 95% interval, n = number of seeds (`metrics.seed_ci`); `best_round` for `all` is the argmax
of the seed-mean val accuracy.

Reference models: the weak model of PGR is the single expert h_1 of the `boost` variant (plain SFT:
round 1 has uniform weights); without a `boost` variant, round 1 of the student's own variant. The
supervisor of `pgr_vs_ensemble` is the ensemble of the same name and r (for r = 1, its round-1 expert
if the one-expert ensemble was not scored). A derived row is written when its inputs were scored.

Rows are sorted and floats formatted deterministically: the same inputs give the same bytes.
"""
from __future__ import annotations

import csv
import math
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ensemw2s import metrics as M
from ensemw2s import provenance
from ensemw2s.config import Config, stable_hash
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.evaluate import ROLES, SCORES, load_score
from ensemw2s.io import atomic_path, read_json

COLUMNS = ["weak_model", "strong_model", "dataset", "eval_split", "role", "ensemble", "round", "seed", "score",
           "metric", "value", "ci_low", "ci_high", "n"]
SPLITS = ("weak_train", "val", "test_id", "test_ood", "all")
BOOSTING_METRICS = ("eps", "alpha", "weight_entropy", "weight_top10_share")
DERIVED = ("pgr_vs_weak", "pgr_vs_ensemble", "gap_ceiling_minus_weak", "gap_ceiling_minus_ensemble",
           "improvement_vs_expert1", "improvement_vs_student1")
METRICS = (*SCORES, *DERIVED, "best_round", *BOOSTING_METRICS, "tokens_processed")
NOT_AGGREGATED = ("best_round", "tokens_processed")  # best_round gets its own seed-'all' rule
REFERENCE_VARIANT = "boost"  # its round-1 expert is plain SFT: the single weak supervisor
VARIANT_OF = {"boost-uniform": "boost"}  # ensemble name -> the training variant of its experts
# the meta fields that identify a model of each role; the others are blanked in keys and rows
IDENTITY = {
    "weak_base": ("weak_model",),
    "strong_base": ("strong_model",),
    "expert": ("weak_model", "ensemble", "round"),
    "ensemble": ("weak_model", "ensemble", "round"),
    "student": ("weak_model", "strong_model", "ensemble", "round"),
    "ceiling": ("strong_model",),
}


# ---------------------------------------------------------------------------------------------
# inputs


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    keep = IDENTITY[meta["role"]]
    blank = {"weak_model": "", "strong_model": "", "ensemble": "", "round": 0}
    return {"role": meta["role"], "dataset": meta["dataset"], "seed": int(meta["seed"]),
            **{k: (meta[k] if k in keep else v) for k, v in blank.items()}}


def _key(ident: dict[str, Any]) -> tuple:
    """Model identity, (dataset, seed) first: sorted keys visit one (dataset, seed) after the other."""
    return tuple(ident[k] for k in ("dataset", "seed", "role", "weak_model", "strong_model", "ensemble", "round"))


class Scores:
    """Score files indexed by model identity, with paired per-example lookups."""

    def __init__(self, paths: Iterable[Path]):
        self.by_key: dict[tuple, tuple[dict, Path]] = {}
        for path in sorted(Path(p) for p in paths):
            score = load_score(path)
            ident = _identity(score["meta"])
            key = _key(ident)
            if key in self.by_key:
                raise UserError(f"score files {self.by_key[key][1]} and {path} describe the same model {ident}")
            self.by_key[key] = (score, path)

    def get(self, role: str, dataset: str, seed: int, weak: str = "", strong: str = "", ensemble: str = "",
            round: int = 0) -> tuple[dict, Path] | None:
        ident = _identity({"role": role, "dataset": dataset, "seed": seed, "weak_model": weak,
                           "strong_model": strong, "ensemble": ensemble, "round": round})
        return self.by_key.get(_key(ident))

    def has_variant(self, dataset: str, seed: int, weak: str, variant: str) -> bool:
        return self.get("expert", dataset, seed, weak, ensemble=variant, round=1) is not None


def _paired(items: list[tuple[dict, Path]], split: str, score: str) -> list[np.ndarray] | None:
    """Per-example arrays of `score` on `split` for several models, or None if one lacks them.

    Pairing is positional, so every model must have been scored on the same uids in the same order.
    """
    blocks = [(s["splits"].get(split), p) for s, p in items]
    if any(b is None or score not in b["per_example"] for b, _ in blocks):
        return None
    first, first_path = blocks[0]
    for block, path in blocks[1:]:
        if block["uids"] != first["uids"]:
            raise UserError(f"{path} and {first_path} scored different rows of {split}; rerun `ensemw2s evaluate` "
                            f"on the same split files (and evaluation.limit) to compare them")
    return [np.asarray(b["per_example"][score], dtype=float) for b, _ in blocks]


def boosting_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of one `experts/<weak>/<dataset>/s<seed>/<variant>/r<t>/boosting.json` (labels from the path)."""
    path = Path(path)
    parts = path.parts
    if len(parts) < 6 or not re.fullmatch(r"s\d+", parts[-4]) or not re.fullmatch(r"r\d+", parts[-2]):
        raise DataFileError(f"{path}: expected a path like "
                            f"experts/<weak>/<dataset>/s<seed>/<variant>/r<t>/boosting.json")
    rec = read_json(path)
    weak, dataset, seed = parts[-6], parts[-5], int(parts[-4][1:])
    base = {"weak_model": weak, "strong_model": "", "dataset": dataset, "eval_split": "weak_train", "role": "expert",
            "ensemble": rec.get("variant", parts[-3]), "round": int(rec.get("round", parts[-2][1:])), "seed": seed,
            "score": "", "ci_low": math.nan, "ci_high": math.nan, "n": rec.get("n_tokens")}
    return [{**base, "metric": m, "value": float(rec[m])} for m in BOOSTING_METRICS if rec.get(m) is not None]


# ---------------------------------------------------------------------------------------------
# rows


def _row(ident: dict[str, Any], split: str, score: str, metric: str, value: float, ci: tuple[float, float], n) -> dict:
    return {**{k: ident[k] for k in ("weak_model", "strong_model", "dataset", "role", "ensemble", "round", "seed")},
            "eval_split": split, "score": score, "metric": metric, "value": value, "ci_low": ci[0], "ci_high": ci[1],
            "n": n}


class Resamples:
    """Bootstrap weights per split of one (dataset, seed): every model scored on a split is resampled
    with the same draws, so all its CIs are paired. The seed comes from (dataset, seed, split, n) alone:
    a CI does not depend on which other files were given. Only one (dataset, seed) is held at a time."""

    def __init__(self, n_boot: int):
        self.n_boot = n_boot
        self.group: tuple | None = None
        self.cache: dict[tuple, np.ndarray] = {}

    def weights(self, dataset: str, seed: int, split: str, n: int) -> np.ndarray:
        if self.group != (dataset, seed):
            self.group, self.cache = (dataset, seed), {}
        key = (split, n)
        if key not in self.cache:
            self.cache[key] = M.resample_weights(n, self.n_boot, int(stable_hash([dataset, seed, split, n]), 16))
        return self.cache[key]


def _accuracy_rows(scores: Scores, n_boot: int) -> list[dict]:
    rows, resamples = [], Resamples(n_boot)
    for _, (score, _) in sorted(scores.by_key.items()):
        ident = _identity(score["meta"])
        for split, block in score["splits"].items():
            for m in SCORES:
                if m in block["per_example"]:
                    x = block["per_example"][m]
                    ci = M.bootstrap_ci(x, resamples.weights(ident["dataset"], ident["seed"], split, len(x)))
                    rows.append(_row(ident, split, m, m, float(block[m]), ci, len(x)))
        rows.append(_row(ident, "all", "", "tokens_processed", float(score["tokens_processed"]), (math.nan, math.nan),
                         None))
    return rows


def _reference_variant(scores: Scores, dataset: str, seed: int, weak: str, ensemble: str) -> str:
    if scores.has_variant(dataset, seed, weak, REFERENCE_VARIANT):
        return REFERENCE_VARIANT
    return VARIANT_OF.get(ensemble, ensemble)


# derived statistics: f(this, *references, bootstrap weights) on per-example arrays -> (value, paired CI)
def _gain(this, base, weights):
    return M.improvement(M.accuracy(this), M.accuracy(base)), M.difference_ci(this, base, weights, scale=100.0)


def _pgr(student, lower, ceiling, weights):
    value = M.pgr(M.accuracy(student), M.accuracy(lower), M.accuracy(ceiling))
    return value, M.pgr_ci(student, lower, ceiling, weights)


def _gap(_, lower, ceiling, weights):
    return M.accuracy(ceiling) - M.accuracy(lower), M.difference_ci(ceiling, lower, weights)


def _references(scores: Scores, ident: dict[str, Any]) -> list[tuple[str, list, Any]]:
    """(metric, reference scores, statistic) for one ensemble or student; references may be None."""
    role, ds, seed, weak, strong, ens, r = (ident[k] for k in ("role", "dataset", "seed", "weak_model",
                                                              "strong_model", "ensemble", "round"))
    expert1 = scores.get("expert", ds, seed, weak, ensemble=_reference_variant(scores, ds, seed, weak, ens), round=1)
    if role == "ensemble":
        return [("improvement_vs_expert1", [expert1], _gain)]
    ceiling = scores.get("ceiling", ds, seed, strong=strong)
    supervisor = scores.get("ensemble", ds, seed, weak, ensemble=ens, round=r)
    if supervisor is None and r == 1:  # the one-expert ensemble is its expert
        supervisor = scores.get("expert", ds, seed, weak, ensemble=VARIANT_OF.get(ens, ens), round=1)
    student1 = (scores.get("student", ds, seed, weak, strong, REFERENCE_VARIANT, 1)
                or scores.get("student", ds, seed, weak, strong, ens, 1))
    return [
        ("pgr_vs_weak", [expert1, ceiling], _pgr),
        ("gap_ceiling_minus_weak", [expert1, ceiling], _gap),
        ("pgr_vs_ensemble", [supervisor, ceiling], _pgr),
        ("gap_ceiling_minus_ensemble", [supervisor, ceiling], _gap),
        ("improvement_vs_student1", [student1], _gain),
    ]


def _derived_rows(scores: Scores, n_boot: int) -> list[dict]:
    rows, resamples = [], Resamples(n_boot)
    for _, this in sorted(scores.by_key.items()):
        ident = _identity(this[0]["meta"])
        if ident["role"] not in ("ensemble", "student"):
            continue
        for metric, refs, stat in _references(scores, ident):
            if any(ref is None for ref in refs):
                continue
            for split in this[0]["splits"]:
                for m in SCORES:
                    arrays = _paired([this, *refs], split, m)
                    if arrays is not None:
                        weights = resamples.weights(ident["dataset"], ident["seed"], split, len(arrays[0]))
                        value, ci = stat(*arrays, weights)
                        rows.append(_row(ident, split, m, metric, value, ci, len(arrays[0])))
    return rows


def _best_round_rows(rows: list[dict]) -> list[dict]:
    """r* per (model family, score): argmax of val accuracy over rounds (ties -> smaller r)."""
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row["role"] in ("ensemble", "student") and row["eval_split"] == "val" and row["metric"] in SCORES:
            fam = tuple(row[k] for k in ("weak_model", "strong_model", "dataset", "role", "ensemble", "seed", "score"))
            groups[fam][row["round"]] = row["value"]
    out = []
    for fam, by_round in groups.items():
        weak, strong, ds, role, ens, seed, score = fam
        ident = {"weak_model": weak, "strong_model": strong, "dataset": ds, "role": role, "ensemble": ens,
                 "round": 0, "seed": seed}
        if any(np.isfinite(v) for v in by_round.values()):
            out.append(_row(ident, "val", score, "best_round", float(M.best_round(by_round)), (math.nan, math.nan),
                            len(by_round)))
    return out


def _seed_rows(rows: list[dict]) -> list[dict]:
    """Mean over seeds with a t-interval, for every measurement scored under two or more seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["metric"] not in NOT_AGGREGATED:
            groups[tuple(row[k] for k in COLUMNS if k not in ("seed", "value", "ci_low", "ci_high", "n"))].append(row)
    out = []
    for members in groups.values():
        if len({r["seed"] for r in members}) < 2:
            continue
        mean, lo, hi, k = M.seed_ci([r["value"] for r in members])
        out.append({**members[0], "seed": "all", "value": mean, "ci_low": lo, "ci_high": hi, "n": k})
    return out


# ---------------------------------------------------------------------------------------------
# output


def _order(values: Iterable[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


_ROLE, _SPLIT, _METRIC = _order(ROLES), _order(SPLITS), _order(METRICS)


def _sort_key(row: dict) -> tuple:
    seed = (1, 0) if row["seed"] == "all" else (0, int(row["seed"]))
    return (row["dataset"], row["weak_model"], row["strong_model"], _ROLE[row["role"]], row["ensemble"], row["round"],
            seed, _SPLIT.get(row["eval_split"], len(_SPLIT)), row["eval_split"], row["score"], _METRIC[row["metric"]])


def format_value(value: Any) -> str:
    """Deterministic text of a number: '' for NaN/None, integers without a point, else 10 significant digits."""
    if value is None:
        return ""
    v = float(value)
    if not math.isfinite(v):
        return ""
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.10g}"


def metric_rows(cfg: Config, score_files: Iterable[Path], boosting_files: Iterable[Path]) -> list[dict]:
    """All rows of metrics.csv, sorted, values still numbers."""
    n_boot = cfg.evaluation.bootstrap
    scores = Scores(score_files)
    rows = _accuracy_rows(scores, n_boot)
    rows += _derived_rows(scores, n_boot)
    rows += [r for path in sorted(Path(p) for p in boosting_files) for r in boosting_rows(path)]
    rows += _best_round_rows(rows)
    pooled = _seed_rows(rows)
    rows += pooled + _best_round_rows(pooled)
    return sorted(rows, key=_sort_key)


def write_metrics(cfg: Config, score_files: Iterable[Path], boosting_files: Iterable[Path], out: Path) -> Path:
    """Write the tidy metrics.csv (atomically; byte-identical for identical inputs) and its provenance record
    (a separate file: it carries the time)."""
    start = time.perf_counter()
    score_files, boosting_files = list(score_files), list(boosting_files)
    if not score_files:
        raise UserError("metrics: no score files given (--scores)")
    rows = metric_rows(cfg, score_files, boosting_files)
    numeric = ("value", "ci_low", "ci_high", "n")
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(row[k]) if k in numeric else row[k] for k in COLUMNS})
    provenance.record(out, cfg, ["evaluation.bootstrap"], [*score_files, *boosting_files],
                      {"step": "metrics", "rows": len(rows), "wall_time_s": time.perf_counter() - start})
    return Path(out)
