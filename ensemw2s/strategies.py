"""Difficulty strategies: each gives every example a score (larger = harder) and an easy/hard flag.

Each strategy is declared once in `STRATEGIES`, with whether it needs a rater model: the config checks
names and raters through it, and the workflow asks it whether prepare-data waits for a prepared rater.
Rows sharing a uid (one question) stay together: in one tier, and in one fold of a cross-fitted rater.

Torch-free: the one rater that trains (splits.model_rater) is built by the caller and passed in.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ensemw2s.errors import UserError
from ensemw2s.registry import Registry

if TYPE_CHECKING:  # config imports this module (to check strategy names)
    from ensemw2s.config import DifficultySpec

Rater = Callable[[list[dict], list[dict]], list[float]]  # (train rows, rows to score) -> difficulty per row


@dataclass(frozen=True)
class Context:
    """What a strategy may use besides the examples."""

    hard_sources: frozenset[str]  # the dataset's, for the source strategy
    difficulty: DifficultySpec
    seed: int
    rater: Callable[[], Rater]  # built on first use: only a strategy that needs_rater calls it


Rate = Callable[[list[dict], Context], tuple[list[float], list[bool]]]  # -> (difficulty, hard) per row


@dataclass(frozen=True)
class Strategy:
    rate: Rate
    needs_rater: bool = False  # datasets[].difficulty.rater must name a model, prepared before the splits


def group_by_uid(rows: list[dict]) -> dict[str, list[int]]:
    """uid -> row indices, in row order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["uid"]].append(i)
    return dict(groups)


def top_fraction(rows: list[dict], scores: list[float], fraction: float) -> list[bool]:
    """Hard = the highest-scoring questions (mean score of a uid's rows) up to `fraction` of the rows."""
    groups = group_by_uid(rows)
    mean = {uid: sum(scores[i] for i in idx) / len(idx) for uid, idx in groups.items()}
    target = round(fraction * len(rows))
    hard = [False] * len(rows)
    n_hard = 0
    for uid in sorted(groups, key=lambda u: (-mean[u], u)):
        if n_hard >= target:
            break
        for i in groups[uid]:
            hard[i] = True
        n_hard += len(groups[uid])
    return hard


def cross_fit(rows: list[dict], rater: Rater, folds: int, seed: int) -> list[float]:
    """Score each row with a rater trained on the other folds only; a question's rows share one fold."""
    uids = sorted(group_by_uid(rows))
    if len(uids) < folds:
        raise UserError(f"difficulty.folds={folds} but only {len(uids)} distinct questions; lower folds")
    random.Random(f"folds:{seed}").shuffle(uids)
    fold_of = {uid: k % folds for k, uid in enumerate(uids)}
    scores: list[float] = [0.0] * len(rows)
    for k in range(folds):
        held = [i for i, r in enumerate(rows) if fold_of[r["uid"]] == k]
        train = [r for r in rows if fold_of[r["uid"]] != k]
        got = rater(train, [rows[i] for i in held])
        if len(got) != len(held):
            raise ValueError(f"rater returned {len(got)} scores for {len(held)} rows")
        for i, s in zip(held, got):
            scores[i] = float(s)
    return scores


def by_source(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """The dataset's own labels: hard when the row's source is one of the dataset's hard sources."""
    hard = [r["source"] in ctx.hard_sources for r in rows]
    return [float(h) for h in hard], hard


def by_length(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """A cheap proxy: words in the prompt and the answer; the longest `hard_fraction` are hard."""
    scores = [float(len(r["prompt"].split()) + len(r["answer"].split())) for r in rows]
    return scores, top_fraction(rows, scores, ctx.difficulty.hard_fraction)


def by_model(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """Cross-fitted rater loss on the gold answer; the highest `hard_fraction` are hard."""
    scores = cross_fit(rows, ctx.rater(), ctx.difficulty.folds, ctx.seed)
    return scores, top_fraction(rows, scores, ctx.difficulty.hard_fraction)


STRATEGIES: Registry[Strategy] = Registry("difficulty strategy")
STRATEGIES.add("source", Strategy(by_source))
STRATEGIES.add("length", Strategy(by_length))
STRATEGIES.add("model", Strategy(by_model, needs_rater=True))
