"""Why an ensemble helps or not: metrics.csv rows from the experts' `answer_misses.json` and the score files'
per-question picks (`ensemw2s metrics` adds them; the row format is collect.py's).

- Fix rates (eval_split weak_train and val, role expert, ensemble = the training variant, round t > 1):
  `fix_rate_tokens`, the share of the answer tokens h_{t-1} missed that h_t gets right (n = those tokens), and
  `fix_rate_questions`, the share of the questions with a token missed by h_{t-1} that h_t gets fully right
  (n = those questions); `miss_rate_tokens`, h_t's own share of missed answer tokens, for every t >= 1.
  Boosting can only help where a later expert fixes what an earlier one missed. A round is skipped where
  h_{t-1} missed nothing (nothing to fix) or a file is absent (a stopped round has no answer_misses.json).
- Ensemble ceilings (role ensemble, r >= 2, every scored split, score acc): `oracle_acc`, the share of
  questions that ANY of the ensemble's experts h_1..h_r (those scored; a stopped round has no expert) gets
  right: what the best possible combination of them could reach; `expert_disagreement`, the mean over expert
  pairs of the share of questions whose picks differ: experts that agree everywhere are one expert. Both
  with the percentile bootstrap CI of the accuracies (the same resamples, so paired with them).
- Prediction sanity (every scored model and split, score acc): `pick_top_share`, the share of questions whose
  pick is the model's most frequent answer position (0-based choice index), and `gold_top_share`, how often
  gold sits at that position. From `DEGENERATE_SHARE` on, `note` flags a degenerate predictor: a tiny model
  that always picks one position scores exactly that position's gold share, which looks like a result.

Torch-free like collect.py. collect imports this module for the metric names (its row order), so these
functions import collect's row helpers when they are called.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ensemw2s import metrics as M
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import read_json

MISSES_FILE = "answer_misses.json"  # beside each round's boosting.json (docs/architecture.md)
MISS_SPLITS = ("weak_train", "val")
FIX_METRICS = ("fix_rate_tokens", "fix_rate_questions", "miss_rate_tokens")
ENSEMBLE_METRICS = ("oracle_acc", "expert_disagreement")
PICK_METRICS = ("pick_top_share", "gold_top_share")
DIAGNOSTIC_METRICS = (*FIX_METRICS, *ENSEMBLE_METRICS, *PICK_METRICS)  # collect.METRICS splices these in
DEGENERATE_SHARE = 0.9  # pick_top_share from which a predictor is flagged: it answers by position, not content
PICK_SCORE = "acc"  # `pick` is the choice `acc` scores; every score-file diagnostic is read from it
NO_CI = (math.nan, math.nan)


# ---------------------------------------------------------------------------------------------
# pure math: per-row 0/1 lists or per-question arrays in, numbers out


def miss_rate(missed: list[list[int]]) -> tuple[float, int]:
    """(share of missed answer tokens, number of answer tokens)."""
    flat = np.concatenate([np.asarray(m, dtype=float) for m in missed]) if missed else np.zeros(0)
    return (float(flat.mean()) if flat.size else math.nan), int(flat.size)


def fix_rates(prev: list[list[int]], this: list[list[int]]) -> tuple[float, int, float, int]:
    """(fix_rate_tokens, tokens h_{t-1} missed, fix_rate_questions, questions h_{t-1} missed a token of) for
    the same rows in the same order; a rate is NaN where its count is 0."""
    fixed_tokens = missed_tokens = fixed_rows = missed_rows = 0
    for p, t in zip(prev, this):
        p, t = np.asarray(p, dtype=bool), np.asarray(t, dtype=bool)
        missed_tokens += int(p.sum())
        fixed_tokens += int((p & ~t).sum())
        if p.any():
            missed_rows += 1
            fixed_rows += int(not t.any())
    tok = fixed_tokens / missed_tokens if missed_tokens else math.nan
    rows = fixed_rows / missed_rows if missed_rows else math.nan
    return tok, missed_tokens, rows, missed_rows


def oracle(correct: list[np.ndarray]) -> np.ndarray:
    """Per question: 1 where any of the experts is right (their acc arrays, same questions)."""
    return np.max(np.vstack(correct), axis=0)


def disagreement(picks: list[np.ndarray]) -> np.ndarray:
    """Per question: the share of expert pairs (i < j) whose picks differ; its mean is the mean over pairs of
    each pair's share of questions they disagree on. Needs two or more experts."""
    pairs = list(combinations(range(len(picks)), 2))
    if not pairs:
        raise ValueError("disagreement needs two or more experts")
    return np.mean([picks[i] != picks[j] for i, j in pairs], axis=0).astype(float)


def top_position(picks: np.ndarray) -> tuple[int, float]:
    """(the most frequent pick, its share of questions); ties go to the smaller position."""
    values, counts = np.unique(np.asarray(picks, dtype=int), return_counts=True)
    best = int(np.argmax(counts))  # np.unique sorts values: the first maximum is the smallest position
    return int(values[best]), float(counts[best] / counts.sum())


def degenerate_note(position: int | None, share: float) -> str:
    """The `note` of a pick_top_share row: the flag from DEGENERATE_SHARE on, else ''. position None: the
    seeds' top positions differ (a seed-pooled row)."""
    if not share >= DEGENERATE_SHARE:
        return ""
    where = f"position {position}" if position is not None else "one position"
    return f"degenerate: picks {where} on {100 * share:.1f}% of questions"


# ---------------------------------------------------------------------------------------------
# answer_misses.json -> fix rates


def read_misses(path: Path) -> dict[str, tuple[list[str], list[list[int]]]]:
    """{split: (uids, missed)} of one expert's answer_misses.json, checked."""
    rec = read_json(path)
    out = {}
    for split in MISS_SPLITS:
        block = rec.get(split) if isinstance(rec, dict) else None
        if block is None:
            continue
        uids, missed = block.get("uids"), block.get("missed")
        if not isinstance(uids, list) or not isinstance(missed, list) or len(uids) != len(missed):
            raise DataFileError(f"{path}: {split} needs 'uids' and 'missed' lists of equal length (one 0/1 list of "
                                f"answer tokens per row); rerun `ensemw2s train-expert`")
        if len(set(uids)) != len(uids):
            raise DataFileError(f"{path}: {split} lists a uid twice; rerun `ensemw2s train-expert`")
        out[split] = (uids, missed)
    return out


def _aligned(prev_path: Path, prev: tuple, this_path: Path, this: tuple, split: str) -> list[list[int]]:
    """h_t's misses in h_{t-1}'s row order: the same uids and the same answer tokens per row, or an error."""
    (prev_uids, prev_missed), (uids, missed) = prev, this
    if set(prev_uids) != set(uids):
        raise UserError(f"{prev_path} and {this_path} list different {split} rows ({len(set(prev_uids) ^ set(uids))} "
                        f"uids in one only): both rounds must be trained on the same split files; rerun "
                        f"`ensemw2s train-expert` for both")
    at = {u: i for i, u in enumerate(uids)}
    out = [missed[at[u]] for u in prev_uids]
    for u, p, t in zip(prev_uids, prev_missed, out):
        if len(p) != len(t):
            raise DataFileError(f"{prev_path} and {this_path}: {split} row {u} has {len(p)} and {len(t)} answer "
                                f"tokens: the experts were trained with different tokenizers or max_length")
    return out


def fix_rows(boosting_files: Iterable[Path]) -> list[dict]:
    """Fix-rate and miss-rate rows of every variant's rounds, from the answer_misses.json beside each
    boosting.json given (labels from the boosting.json, as collect.boosting_rows reads them)."""
    from ensemw2s.collect import _row, _weak_model

    rounds: dict[tuple, dict[int, Path]] = defaultdict(dict)
    for path in sorted(Path(p) for p in boosting_files):
        misses = path.with_name(MISSES_FILE)
        if misses.is_file():
            rec = read_json(path)
            family = (_weak_model(path, rec), rec["dataset"], int(rec["seed"]), rec["variant"])
            rounds[family][int(rec["round"])] = misses
    rows = []
    for (weak, dataset, seed, variant), paths in sorted(rounds.items()):
        read = {t: read_misses(p) for t, p in paths.items()}
        for t in sorted(read):
            ident = {"weak_model": weak, "strong_model": "", "dataset": dataset, "role": "expert",
                     "ensemble": variant, "round": t, "seed": seed}
            for split, block in read[t].items():
                rate, n = miss_rate(block[1])
                if n:
                    rows.append(_row(ident, split, "", "miss_rate_tokens", rate, NO_CI, n))
                if split not in read.get(t - 1, {}):
                    continue
                this = _aligned(paths[t - 1], read[t - 1][split], paths[t], block, split)
                tok, n_tok, qs, n_qs = fix_rates(read[t - 1][split][1], this)
                if n_tok:  # h_{t-1} missed nothing: nothing to fix, no rate
                    rows.append(_row(ident, split, "", "fix_rate_tokens", tok, NO_CI, n_tok))
                    rows.append(_row(ident, split, "", "fix_rate_questions", qs, NO_CI, n_qs))
    return rows


# ---------------------------------------------------------------------------------------------
# score files -> ensemble ceilings and pick distributions


def ensemble_rows(scores: Any, n_boot: int) -> list[dict]:
    """oracle_acc and expert_disagreement of every ensemble scored at r >= 2 (`scores`: a collect.Scores), on
    the splits its experts were scored on."""
    from ensemw2s.collect import Resamples, _identity, _paired, _row

    rows, resamples = [], Resamples(n_boot)
    for _, (score, _) in sorted(scores.by_key.items()):
        ident = _identity(score["meta"])
        if ident["role"] != "ensemble" or ident["round"] < 2:
            continue
        ds, seed, weak = ident["dataset"], ident["seed"], ident["weak_model"]
        experts = [scores.get("expert", ds, seed, weak, ensemble=scores.experts_of[ident["ensemble"]], round=k)
                   for k in range(1, ident["round"] + 1)]
        experts = [e for e in experts if e is not None]
        if not experts:
            continue
        for split in score["splits"]:
            for metric, key, per_question in (("oracle_acc", PICK_SCORE, oracle),
                                              ("expert_disagreement", "pick", disagreement)):
                arrays = _paired(experts, split, key)
                if arrays is None or (metric == "expert_disagreement" and len(arrays) < 2):
                    continue  # not scored on this split, or picks missing (older score files)
                x = per_question(arrays)
                ci = M.bootstrap_ci(x, resamples.weights(ds, seed, split, len(x)))
                rows.append(_row(ident, split, PICK_SCORE, metric, float(x.mean()), ci, len(x)))
    return rows


@dataclass(frozen=True)
class Picks:
    """One model's pick distribution on one split."""

    ident: dict
    split: str
    position: int  # its most frequent pick
    share: float  # pick_top_share
    gold_share: float  # gold_top_share (NaN without gold)
    n: int


def pick_summaries(scores: Any) -> list[Picks]:
    """The pick distribution of every scored model (not round-1 aliases: those are h_1's) and split with picks."""
    from ensemw2s.collect import _identity

    out = []
    for _, (score, _) in sorted(scores.by_key.items()):
        if score.get("alias"):
            continue
        for split, block in score["splits"].items():
            per = block["per_example"]
            if "pick" not in per or not per["pick"]:
                continue
            position, share = top_position(per["pick"])
            gold = np.asarray(per["gold"], dtype=int) if "gold" in per else None
            gold_share = float(np.mean(gold == position)) if gold is not None else math.nan
            out.append(Picks(_identity(score["meta"]), split, position, share, gold_share, len(per["pick"])))
    return out


def pick_rows(picks: list[Picks]) -> list[dict]:
    """pick_top_share (flagged from DEGENERATE_SHARE on) and gold_top_share per model and split."""
    from ensemw2s.collect import _row

    rows = []
    for p in picks:
        rows.append(_row(p.ident, p.split, PICK_SCORE, "pick_top_share", p.share, NO_CI, p.n,
                         degenerate_note(p.position, p.share)))
        if math.isfinite(p.gold_share):
            rows.append(_row(p.ident, p.split, PICK_SCORE, "gold_top_share", p.gold_share, NO_CI, p.n))
    return rows


def pooled_pick_rows(picks: list[Picks]) -> list[dict]:
    """seed = all rows of the pick metrics: the mean over seeds with a t-interval (as collect._seed_rows),
    flagged when the mean is degenerate. They are pooled here because the flag, which names a position,
    differs between seeds and collect groups rows by their note."""
    from ensemw2s.collect import _row

    groups: dict[tuple, list[Picks]] = defaultdict(list)
    for p in picks:
        groups[(p.split, *sorted((k, v) for k, v in p.ident.items() if k != "seed"))].append(p)
    rows = []
    for (split, *_), members in groups.items():
        if len({p.ident["seed"] for p in members}) < 2:
            continue
        ident = {**members[0].ident, "seed": "all"}
        positions = {p.position for p in members}
        mean, lo, hi, k = M.seed_ci([p.share for p in members])
        note = degenerate_note(positions.pop() if len(positions) == 1 else None, mean)
        rows.append(_row(ident, split, PICK_SCORE, "pick_top_share", mean, (lo, hi), k, note))
        mean, lo, hi, k = M.seed_ci([p.gold_share for p in members])
        if k:
            rows.append(_row(ident, split, PICK_SCORE, "gold_top_share", mean, (lo, hi), k))
    return rows
