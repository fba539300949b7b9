"""`ensemw2s metrics`: score files + boosting.json files -> one tidy `metrics.csv`.

One row per measurement (columns in `COLUMNS`; `note` says why a value is missing):
- accuracy rows: `metric` is acc, acc_norm or exact_match, with a percentile bootstrap 95% CI over
  examples (`evaluation.bootstrap` resamples; one set of resamples per dataset, seed and split);
- the ensemble of one expert is h_1: every ensemble scored at r >= 2 gets round-1 rows, its experts' h_1;
- comparison rows, all from ONE estimator (metrics.py: the seed-stratified paired difference of the
  per-question results of the SAME rows, normal CI, conditional on the trained models):
  `improvement_vs_expert1` (ensembles), `improvement_vs_student1`, `improvement_vs_strong_base` (students;
  accuracy points) each with `<metric>_mde` (minimum detectable effect, 80% power, 5% two-sided), and
  `gap_ceiling_minus_weak` / `gap_ceiling_minus_ensemble` (fractions) on student rows;
- PGR rows on student rows, a ratio of two paired differences with a Fieller CI: `pgr_vs_weak` (lower =
  h_1), `pgr_vs_ensemble` (lower = the supervising ensemble), `pgr_strong_base_vs_weak` (the untaught
  strong base in the student's place: what supervision must beat). Missing (empty, with `note`
  `gap <= 0` or `gap CI includes 0`) wherever the ceiling-minus-lower gap's CI does not exclude 0; the
  ratio itself is kept as `<metric>_raw`;
- `aa_difference` on replicate rows (the A/A control, points, with MDE): the replicate (the student of
  METHOD's h_1 trained with another seed) minus that student; note `A/A CI excludes 0: the CIs are too
  narrow` where its CI excludes 0;
- `best_round` (ensemble rows on val, value = r* over rounds 1..T; students are read at their
  supervisor's r*);
- boosting rows (eval_split `weak_train`, role expert, ensemble = variant): eps, alpha (the ensemble weight),
  alpha_update (the exponent applied to D), weight_entropy, weight_top10_share, missed_mass_after_update,
  missed_token_share, effective_sample_size, prior_term, e_ref and training_tokens (boosting.json's
  tokens_processed: the round's training) per round, each where its record has it;
- diagnostics (diagnostics.py) of why an ensemble helps or not: `fix_rate_tokens`, `fix_rate_questions`
  (t > 1) and `miss_rate_tokens` (role expert, weak_train and val, from answer_misses.json); `oracle_acc` and
  `expert_disagreement` (role ensemble, r >= 2, every scored split); `pick_top_share` (note flags a
  degenerate predictor) and `gold_top_share` of every scored model and split (from the picks of score files);
- pseudo-label rows (eval_split `student_pool`, role ensemble): shares of pseudo-answers truncated,
  matching a choice, empty, and their mean length in tokens;
- `tokens_processed` of every score file (eval_split `all`).
`score` names the accuracy measure a derived row is computed from (empty for boosting/compute rows).
With two or more seeds every measurement also gets a `seed = all` row: accuracies and other single
numbers as the mean over seeds with a Student-t 95% interval (n = number of seeds); comparisons and PGR
from the seed-stratified estimator over the seeds (PGR from seed-pooled differences, never a mean of
per-seed PGRs), comparisons with `<metric>_seed_sd`, the between-seed SD of the per-seed estimates;
`best_round` for `all` is the argmax of the seed-mean val accuracy.

Reference models: the weak model of PGR is the single expert h_1 of the `boost` variant (plain SFT:
round 1 has uniform weights); without a `boost` variant, round 1 of the student's own variant. The
supervisor of `pgr_vs_ensemble` is the ensemble of the same name and r. A derived row is written when
its inputs were scored.

Rows are sorted and floats formatted deterministically: the same inputs give the same bytes.
Torch-free (the score-file contract is scores.py), so the tables, figures and `make rereport` load no model stack.
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

from ensemw2s import controls, diagnostics
from ensemw2s import metrics as M
from ensemw2s import provenance, steps
from ensemw2s.config import Config, stable_hash
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import atomic_path, read_json
from ensemw2s.scores import ROLES, SCORES, load_score
from ensemw2s.splitdir import SPLITS
from ensemw2s.variants import METHOD

COLUMNS = ["weak_model", "strong_model", "dataset", "eval_split", "role", "ensemble", "round", "seed", "score",
           "metric", "value", "ci_low", "ci_high", "n", "note"]
SPLIT_ORDER = (*SPLITS, "all")  # eval_split order of the rows (`all`: tokens_processed)
BOOSTING_LABELS = ("dataset", "seed", "variant", "round")  # what every boosting.json says of itself
BOOSTING_METRICS = ("eps", "alpha", "alpha_update", "weight_entropy", "weight_top10_share", "missed_mass_after_update",
                    "missed_token_share", "effective_sample_size", "prior_term", "e_ref", "training_tokens")
BOOSTING_KEYS = {"training_tokens": "tokens_processed"}  # metric -> its boosting.json key, where they differ
# pseudo-label sidecar (`<labels>.meta.json`) -> rows of the ensemble that wrote them, eval_split student_pool
PSEUDO_METRICS = {"pseudo_truncated_share": "truncated", "pseudo_choice_match_share": "matches_choice",
                  "pseudo_empty_share": "empty_answers"}
PSEUDO_MEAN_TOKENS = "pseudo_mean_answer_tokens"
# the meta fields that identify a model of each role; the others are blanked in keys and rows
IDENTITY = {
    "weak_base": ("weak_model",),
    "strong_base": ("strong_model",),
    "expert": ("weak_model", "ensemble", "round"),
    "ensemble": ("weak_model", "ensemble", "round"),
    "student": ("weak_model", "strong_model", "ensemble", "round"),
    "replicate": ("weak_model", "strong_model", "ensemble", "round"),  # the A/A control of that student
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

    def __init__(self, paths: Iterable[Path], experts_of: dict[str, str]):
        self.experts_of = experts_of  # ensemble (variant) name -> the variant that trained its experts
        self.by_key: dict[tuple, tuple[dict, Path]] = {}
        for path in sorted(Path(p) for p in paths):
            score = load_score(path)
            ident = _identity(score["meta"])
            if ident["role"] in ("expert", "ensemble", "student", "replicate") and ident["ensemble"] not in experts_of:
                raise UserError(f"{path}: scores of variant {ident['ensemble']!r}, which the config's "
                                f"boosting.variants does not declare ({', '.join(experts_of)}); pass the run's own "
                                f"config (<run>/config.yaml)")
            key = _key(ident)
            if key in self.by_key:
                raise UserError(f"score files {self.by_key[key][1]} and {path} describe the same model {ident}")
            self.by_key[key] = (score, path)

    def alias_round_one(self, variants: Iterable[str]) -> None:
        """The ensemble of one expert is h_1: for each of `variants` (those whose ensembles start at r = 1,
        not the partition control's), its round-1 entry, where not scored itself, is its experts' round-1
        score (marked `alias`, so its tokens are not counted twice)."""
        experts = [_identity(score["meta"]) for score, _ in self.by_key.values()]
        places = sorted({(i["dataset"], i["seed"], i["weak_model"]) for i in experts if i["role"] == "expert"})
        for ens in variants:
            for ds, seed, weak in places:
                if self.get("ensemble", ds, seed, weak, ensemble=ens, round=1) is not None:
                    continue
                expert = self.get("expert", ds, seed, weak, ensemble=self.experts_of[ens], round=1)
                if expert is not None:
                    meta = {**expert[0]["meta"], "role": "ensemble", "ensemble": ens, "round": 1}
                    alias = {**expert[0], "meta": meta, "alias": True}
                    self.by_key[_key(_identity(meta))] = (alias, expert[1])

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
    """Rows of one round's `boosting.json`, labelled by the record itself (weak model, dataset, seed,
    variant, round)."""
    path = Path(path)
    rec = read_json(path)
    missing = [k for k in BOOSTING_LABELS if k not in rec]
    if missing:
        raise DataFileError(f"{path}: not a boosting.json of `ensemw2s train-expert` (lacks {', '.join(missing)}); "
                            f"pass the experts' boosting.json files as --boosting")
    base = {"weak_model": _weak_model(path, rec), "strong_model": "", "dataset": rec["dataset"],
            "eval_split": "weak_train", "role": "expert", "ensemble": rec["variant"], "round": int(rec["round"]),
            "seed": int(rec["seed"]), "score": "", "ci_low": math.nan, "ci_high": math.nan, "n": rec.get("n_tokens"),
            "note": ""}
    return [{**base, "metric": m, "value": float(rec[BOOSTING_KEYS.get(m, m)])} for m in BOOSTING_METRICS
            if rec.get(BOOSTING_KEYS.get(m, m)) is not None]


def _weak_model(path: Path, rec: dict[str, Any]) -> str:
    """The record's weak model. Records written before boosting.json carried it (the committed
    results/cpu-real-pilot) name it only in their path, experts/<weak>/<dataset>/s<seed>/<variant>/r<t>/."""
    if "weak_model" in rec:
        return rec["weak_model"]
    parts = path.parts
    if len(parts) < 6 or not re.fullmatch(r"s\d+", parts[-4]) or not re.fullmatch(r"r\d+", parts[-2]):
        raise DataFileError(f"{path}: names no weak_model and its path is not experts/<weak>/<dataset>/s<seed>/"
                            f"<variant>/r<t>/boosting.json; rerun `ensemw2s train-expert`")
    return parts[-6]


def pseudo_rows(path: str | Path) -> list[dict[str, Any]]:
    """Sanity rows of one `pseudo/<weak>/<dataset>/s<seed>/<ensemble>/r<r>.jsonl.meta.json` (the sidecar of
    the ensemble's pseudo-answers for student_pool): shares of pool rows truncated at max_new_tokens,
    matching one of the question's choices after normalisation, and empty; mean answer length."""
    path = Path(path)
    parts = path.parts
    m = re.fullmatch(r"r(\d+)\.jsonl\.meta\.json", parts[-1]) if parts else None
    if len(parts) < 5 or m is None or not re.fullmatch(r"s\d+", parts[-3]):
        raise DataFileError(f"{path}: expected a path like pseudo/<weak>/<dataset>/s<seed>/<ensemble>/r<r>.jsonl.meta.json")
    rec = read_json(path)
    n_pool = rec.get("n_pool")
    if not isinstance(n_pool, int) or n_pool <= 0:
        raise DataFileError(f"{path}: n_pool must be a positive count of student_pool rows; rerun `ensemw2s pseudo-label`")
    ident = {"weak_model": parts[-5], "strong_model": "", "dataset": parts[-4], "role": "ensemble",
             "ensemble": parts[-2], "round": int(m.group(1)), "seed": int(parts[-3][1:])}
    rows = [_row(ident, "student_pool", "", metric, rec[key] / n_pool, (math.nan, math.nan), n_pool)
            for metric, key in PSEUDO_METRICS.items() if rec.get(key) is not None]
    if rec.get("mean_answer_tokens") is not None:
        rows.append(_row(ident, "student_pool", "", PSEUDO_MEAN_TOKENS, float(rec["mean_answer_tokens"]),
                         (math.nan, math.nan), n_pool))
    return rows


# ---------------------------------------------------------------------------------------------
# rows


def _row(ident: dict[str, Any], split: str, score: str, metric: str, value: float, ci: tuple[float, float], n,
         note: str = "") -> dict:
    return {**{k: ident[k] for k in ("weak_model", "strong_model", "dataset", "role", "ensemble", "round", "seed")},
            "eval_split": split, "score": score, "metric": metric, "value": value, "ci_low": ci[0], "ci_high": ci[1],
            "n": n, "note": note}


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
        if not score.get("alias"):
                rows.append(_row(ident, "all", "", "tokens_processed", float(score["tokens_processed"]),
                             (math.nan, math.nan), None))
    return rows


def _reference_variant(scores: Scores, dataset: str, seed: int, weak: str, ensemble: str) -> str:
    """The variant whose h_1 is the single weak supervisor: METHOD's round-1 expert (plain SFT) where
    it was trained, else the ensemble's own experts' h_1."""
    if scores.has_variant(dataset, seed, weak, METHOD):
        return METHOD
    return scores.experts_of[ensemble]


# derived rows: paired comparisons of a model with its references, one estimator for all of them
# (metrics.paired_moments per seed, metrics.stratified over seeds). metric -> scale of the difference.
DIFFERENCES = {"improvement_vs_expert1": 100.0, "improvement_vs_student1": 100.0, "improvement_vs_strong_base": 100.0,
               "gap_ceiling_minus_weak": 1.0, "gap_ceiling_minus_ensemble": 1.0,
               "aa_difference": 100.0}  # the A/A control: replicate minus student, points; its CI must include 0
PGRS = ("pgr_vs_weak", "pgr_vs_ensemble", "pgr_strong_base_vs_weak")  # (numerator model, lower, ceiling)
WITH_MDE = ("improvement_vs_expert1", "improvement_vs_student1", "improvement_vs_strong_base", "aa_difference")
AA_TOO_NARROW = "A/A CI excludes 0: the CIs are too narrow"  # the note of an aa_difference row that fails


def _references(scores: Scores, ident: dict[str, Any]) -> list[tuple[str, list]]:
    """(metric, [models]) for one ensemble or student: a difference compares [this, base]; a PGR takes
    [numerator, lower, ceiling]. A reference may be None (not scored): that row is skipped."""
    role, ds, seed, weak, strong, ens, r = (ident[k] for k in ("role", "dataset", "seed", "weak_model",
                                                              "strong_model", "ensemble", "round"))
    this = scores.get(role, ds, seed, weak, strong, ens, r)
    if role == "replicate":  # the same supervisor, another training seed: the difference is seed noise alone
        return [("aa_difference", [this, scores.get("student", ds, seed, weak, strong, ens, r)])]
    expert1 = scores.get("expert", ds, seed, weak, ensemble=_reference_variant(scores, ds, seed, weak, ens), round=1)
    if role == "ensemble":
        return [("improvement_vs_expert1", [this, expert1])]
    ceiling = scores.get("ceiling", ds, seed, strong=strong)
    strong_base = scores.get("strong_base", ds, seed, strong=strong)
    supervisor = scores.get("ensemble", ds, seed, weak, ensemble=ens, round=r)
    student1 = (scores.get("student", ds, seed, weak, strong, METHOD, 1)
                or scores.get("student", ds, seed, weak, strong, ens, 1))
    return [
        ("pgr_vs_weak", [this, expert1, ceiling]),
        ("gap_ceiling_minus_weak", [ceiling, expert1]),
        ("pgr_vs_ensemble", [this, supervisor, ceiling]),
        ("gap_ceiling_minus_ensemble", [ceiling, supervisor]),
        ("pgr_strong_base_vs_weak", [strong_base, expert1, ceiling]),  # what the untaught strong model gets
        ("improvement_vs_strong_base", [this, strong_base]),
        ("improvement_vs_student1", [this, student1]),
    ]


def _moments(metric: str, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-seed moments of the per-question differences a comparison is made of."""
    if metric in PGRS:
        numerator, lower, ceiling = arrays
        return M.paired_moments(numerator - lower, ceiling - lower)
    this, base = arrays
    return M.paired_moments(this - base)


def _comparison_rows(ident: dict[str, Any], split: str, score: str, metric: str, mean: np.ndarray,
                     cov: np.ndarray, n, per_seed: list[float] | None = None) -> list[dict]:
    """Rows of one comparison from its (pooled) moments; per_seed: the seeds' own estimates (pooled rows)."""
    if metric in PGRS:
        a, b = mean
        value, lo, hi, reason = M.pgr_fieller(a, b, cov[0, 0], cov[1, 1], cov[0, 1])
        raw = a / b if b != 0 else math.nan
        return [_row(ident, split, score, metric, value, (lo, hi), n, reason),
                _row(ident, split, score, f"{metric}_raw", raw, (math.nan, math.nan), n)]
    scale = DIFFERENCES[metric]
    value, se = scale * float(mean[0]), scale * math.sqrt(max(float(cov[0, 0]), 0.0))
    ci = M.normal_ci(value, se)
    note = AA_TOO_NARROW if metric == "aa_difference" and (ci[0] > 0 or ci[1] < 0) else ""
    rows = [_row(ident, split, score, metric, value, ci, n, note)]
    if metric in WITH_MDE:
        rows.append(_row(ident, split, score, f"{metric}_mde", M.mde(se), (math.nan, math.nan), n))
    if per_seed is not None:
        sd = M.between_seed_sd([scale * v for v in per_seed])
        rows.append(_row(ident, split, score, f"{metric}_seed_sd", sd, (math.nan, math.nan), n))
    return rows


def _derived_rows(scores: Scores) -> list[dict]:
    """Per-seed comparison rows, and (two or more seeds) the seed-stratified pooled row of each."""
    rows: list[dict] = []
    families: dict[tuple, list[tuple[np.ndarray, np.ndarray, dict]]] = defaultdict(list)
    for _, this in sorted(scores.by_key.items()):
        ident = _identity(this[0]["meta"])
        if ident["role"] not in ("ensemble", "student", "replicate"):
            continue
        for metric, models in _references(scores, ident):
            if any(m is None for m in models):
                continue
            for split in this[0]["splits"]:
                for score in SCORES:
                    arrays = _paired(models, split, score)
                    if arrays is None:
                        continue
                    mean, cov, n = _moments(metric, arrays)
                    rows += _comparison_rows(ident, split, score, metric, mean, cov, n)
                    family = (metric, split, score, *(ident[k] for k in ("weak_model", "strong_model", "dataset",
                                                                          "role", "ensemble", "round")))
                    families[family].append((mean, cov, ident))
    for (metric, split, score, *_), members in families.items():
        if len(members) < 2:
            continue
        mean, cov = M.stratified([(m, c) for m, c, _ in members])
        ident = {**members[0][2], "seed": "all"}
        per_seed = [float(m[0]) for m, _, _ in members] if metric not in PGRS else None
        rows += _comparison_rows(ident, split, score, metric, mean, cov, len(members), per_seed)
    return rows


def _comparison_metrics() -> tuple[str, ...]:
    names = []
    for m in (*PGRS, *DIFFERENCES):
        names += [m, f"{m}_raw"] if m in PGRS else [m, *([f"{m}_mde"] if m in WITH_MDE else []), f"{m}_seed_sd"]
    return tuple(names)


COMPARISON_METRICS = _comparison_metrics()
METRICS = (*SCORES, *COMPARISON_METRICS, "best_round", *BOOSTING_METRICS, *diagnostics.DIAGNOSTIC_METRICS,
           *PSEUDO_METRICS, PSEUDO_MEAN_TOKENS, *controls.METRICS, "tokens_processed")
NOT_AGGREGATED = ("best_round", "tokens_processed", *COMPARISON_METRICS, *controls.PAIRED)  # these have their own seed-'all' rules


def _best_round_rows(rows: list[dict]) -> list[dict]:
    """r* per ensemble family and score: argmax of val accuracy over rounds 1..T (ties -> smaller r;
    round 1 is h_1, the ensemble of one expert). Students are reported at their supervisor's r*: choosing
    a student on its gold val accuracy would hand it gold supervision."""
    groups: dict[tuple, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row["role"] == "ensemble" and row["eval_split"] == "val" and row["metric"] in SCORES:
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


_ROLE, _SPLIT, _METRIC = _order(ROLES), _order(SPLIT_ORDER), _order(METRICS)


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


def metric_rows(cfg: Config, score_files: Iterable[Path], boosting_files: Iterable[Path],
                pseudo_files: Iterable[Path] = ()) -> list[dict]:
    """All rows of metrics.csv, sorted, values still numbers."""
    n_boot, boosting_files = cfg.evaluation.bootstrap, list(boosting_files)  # read twice: boosting.json, misses
    scores = Scores(score_files, {name: v.experts for name, v in cfg.boosting.variants.items()})
    scores.alias_round_one([n for n in cfg.boosting.variants if cfg.boosting.starts_at_one(n)])
    rows = _accuracy_rows(scores, n_boot)
    rows += _derived_rows(scores)
    rows += controls.rows(cfg, scores, boosting_files)  # the partition control and the longer baseline
    rows += [r for path in sorted(Path(p) for p in boosting_files) for r in boosting_rows(path)]
    rows += [r for path in sorted(Path(p) for p in pseudo_files) for r in pseudo_rows(path)]
    rows += diagnostics.fix_rows(boosting_files) + diagnostics.ensemble_rows(scores, n_boot)
    picks = diagnostics.pick_summaries(scores)
    rows += diagnostics.pick_rows(picks)
    rows += _best_round_rows(rows)
    # the pick flag names a position, which differs between seeds: those rows are pooled in diagnostics
    pooled = _seed_rows([r for r in rows if r["metric"] not in diagnostics.PICK_METRICS])
    pooled += diagnostics.pooled_pick_rows(picks)
    rows += pooled + _best_round_rows(pooled)
    return sorted(rows, key=_sort_key)


def write_metrics(cfg: Config, score_files: Iterable[Path], boosting_files: Iterable[Path], out: Path,
                  pseudo_files: Iterable[Path] = ()) -> Path:
    """Write the tidy metrics.csv (atomically; byte-identical for identical inputs) and its provenance record
    (a separate file: it carries the time)."""
    start = time.perf_counter()
    score_files, boosting_files, pseudo_files = list(score_files), list(boosting_files), list(pseudo_files)
    if not score_files:
        raise UserError("metrics: no score files given (--scores)")
    rows = metric_rows(cfg, score_files, boosting_files, pseudo_files)
    numeric = ("value", "ci_low", "ci_high", "n")
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(row[k]) if k in numeric else row[k] for k in COLUMNS})
    provenance.record(out, cfg, steps.keys(cfg, "metrics"), [*score_files, *boosting_files, *pseudo_files],
                      {"step": "metrics", "rows": len(rows), "wall_time_s": time.perf_counter() - start})
    return Path(out)
