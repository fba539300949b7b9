"""Difficulty strategies: each gives every example a score (larger = harder) and an easy/hard flag.

Each strategy is declared once in `STRATEGIES`, with the difficulty key it needs (a rater panel, or a
file of human annotations): the config checks names and keys through it, and the workflow asks it
whether prepare-data waits for prepared raters. A strategy may leave rows out (`select`: an annotation
strategy cannot rate a row nobody annotated); prepare-data counts them, by reason, in manifest.json.
Rows sharing a uid (one question) stay together: in one tier, and in one fold of a cross-fitted rater.

Torch-free: the one rater that trains (splits.model_rater) is built by the caller and passed in.
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ensemw2s.errors import UserError
from ensemw2s.registry import Registry, unknown_name_message

if TYPE_CHECKING:  # config imports this module (to check strategy names)
    from ensemw2s.config import AnnotationSpec, DifficultySpec

Rater = Callable[[list[dict], list[dict]], list[float]]  # (train rows, rows to score) -> difficulty per row


@dataclass(frozen=True)
class Context:
    """What a strategy may use besides the examples."""

    hard_sources: frozenset[str]  # the dataset's, for the source strategy
    difficulty: DifficultySpec
    seed: int
    rater: Callable[[str], Rater]  # model name -> its rater, built on first use (only a strategy that needs_rater calls it)
    data_dir: str | Path  # where a relative annotation file is found


Rate = Callable[[list[dict], Context], tuple[list[float], list[bool]]]  # -> (difficulty, hard) per row
Select = Callable[[list[dict], Context], tuple[list[dict], dict[str, int]]]  # -> (rows it rates, left out by reason)


@dataclass(frozen=True)
class Strategy:
    rate: Rate
    needs: str | None = None  # the datasets[].difficulty key it needs (config.STRATEGY_NEEDS says what goes there)
    select: Select | None = None  # the rows it can rate; None: every row

    @property
    def needs_rater(self) -> bool:
        """Whether difficulty.rater names models that are prepared before the splits."""
        return self.needs == "rater"


def group_by_uid(rows: list[dict]) -> dict[str, list[int]]:
    """uid -> row indices, in row order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["uid"]].append(i)
    return dict(groups)


def _question_means(rows: list[dict], scores: list[float]) -> dict[str, float]:
    return {uid: sum(scores[i] for i in idx) / len(idx) for uid, idx in group_by_uid(rows).items()}


def top_fraction(rows: list[dict], scores: list[float], fraction: float) -> list[bool]:
    """Hard = the highest-scoring questions (mean score of a uid's rows) up to `fraction` of the rows."""
    groups = group_by_uid(rows)
    mean = _question_means(rows, scores)
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


def question_ranks(rows: list[dict], scores: list[float]) -> list[float]:
    """Each row's question rank scaled to [0, 1]: questions ordered by the mean score of their rows
    (0 = the lowest, 1 = the highest), tied questions sharing their average rank. Ranking questions, not
    rows, keeps the order top_fraction sees: a panel of one calls the same questions hard as its losses."""
    mean = _question_means(rows, scores)
    order = sorted(mean, key=mean.__getitem__)
    last = max(len(order) - 1, 1)
    rank: dict[str, float] = {}
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and mean[order[end + 1]] == mean[order[start]]:
            end += 1
        for uid in order[start:end + 1]:
            rank[uid] = (start + end) / 2 / last
        start = end + 1
    return [rank[r["uid"]] for r in rows]


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
    """A panel of raters: each rater's cross-fitted loss on the gold answer becomes question ranks in
    [0, 1]; the score is the mean rank over the panel; the highest `hard_fraction` are hard."""
    panel = [question_ranks(rows, cross_fit(rows, ctx.rater(name), ctx.difficulty.folds, ctx.seed))
             for name in ctx.difficulty.raters]
    scores = [sum(ranks) / len(panel) for ranks in zip(*panel)]
    return scores, top_fraction(rows, scores, ctx.difficulty.hard_fraction)


# ---------------------------------------------------------------------------------------------
# human annotations

NOT_ANNOTATED = "not_annotated"  # why `annotated` leaves a row out: the file has no value of the field for it
UNLISTED = "neither_easy_nor_hard"  # ... or its value is in neither difficulty.annotation.easy nor .hard


def annotation_file(spec: AnnotationSpec, data_dir: str | Path) -> Path:
    """The annotation file: a relative path is taken from data_dir, as the datasets' local folders are."""
    return Path(data_dir) / spec.file


def _read_annotations(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise UserError(f"difficulty.annotation.file: {path} not found; a relative path is taken from data_dir: "
                        f"point data_dir (or --data-dir) at the directory that holds it, or give an absolute path")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"difficulty.annotation.file: {path} is not valid JSON ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise UserError(f"difficulty.annotation.file: {path} must be one JSON object of key -> "
                        f"{{field: value, ...}} objects")
    return table


def _row_key(template: str | dict[str, str], row: dict) -> str:
    """The row's key in the annotation file (difficulty.annotation.key)."""
    if isinstance(template, dict):
        if row["source"] not in template:
            raise UserError(f"difficulty.annotation.key: no template for source {row['source']!r}; add "
                            f"{row['source']}: TEMPLATE (it has {', '.join(template)})")
        template = template[row["source"]]
    try:
        return template.format_map(row)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"difficulty.annotation.key: template {template!r} cannot be filled from a "
                        f"row of source {row['source']!r} ({type(exc).__name__}: {exc}); name its fields in braces, "
                        f"one of {', '.join(sorted(row))}") from None


def _annotation_values(rows: list[dict], ctx: Context) -> list[Any]:
    """Each row's annotated value of difficulty.annotation.field, None where it has none."""
    spec = ctx.difficulty.annotation
    path = annotation_file(spec, ctx.data_dir)
    table = _read_annotations(path)
    fields = {f for entry in table.values() for f in entry}
    if spec.field not in fields:
        raise UserError(f"difficulty.annotation.field: {unknown_name_message('annotation field', spec.field, fields)}"
                        f" (the fields of {path})")
    return [table.get(_row_key(spec.key, row), {}).get(spec.field) for row in rows]


def annotated(rows: list[dict], ctx: Context) -> tuple[list[dict], dict[str, int]]:
    """The rows whose annotated value is easy or hard; the others are left out, counted by reason."""
    spec = ctx.difficulty.annotation
    listed = (*spec.easy, *spec.hard)
    values = _annotation_values(rows, ctx)
    left_out = {NOT_ANNOTATED: 0, UNLISTED: 0}
    kept = []
    for row, value in zip(rows, values):
        if value is None:
            left_out[NOT_ANNOTATED] += 1
        elif value not in listed:
            left_out[UNLISTED] += 1
        else:
            kept.append(row)
    path = annotation_file(spec, ctx.data_dir)
    if not kept and left_out[UNLISTED] == 0:
        example = _row_key(spec.key, rows[0]) if rows else "(no rows)"
        raise UserError(f"difficulty.annotation: no row is annotated in {path} (the first row's key is "
                        f"{example!r}); fix difficulty.annotation.key so that it forms the file's keys")
    if not kept:
        found = sorted({str(v) for v in values if v is not None})
        raise UserError(f"difficulty.annotation: no annotated row has a {spec.field} in easy or hard; the rows' "
                        f"values are {', '.join(found)}: list some of them in difficulty.annotation.easy / .hard")
    return kept, left_out


def by_annotation(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """Human judgement: hard when the row's annotated value is one of difficulty.annotation.hard; the
    score is the value's position in easy + hard (the order the config lists them), so tables order rows."""
    spec = ctx.difficulty.annotation
    order = [*spec.easy, *spec.hard]
    values = _annotation_values(rows, ctx)
    return [float(order.index(v)) for v in values], [v in spec.hard for v in values]


STRATEGIES: Registry[Strategy] = Registry("difficulty strategy")
STRATEGIES.add("source", Strategy(by_source))
STRATEGIES.add("length", Strategy(by_length))
STRATEGIES.add("model", Strategy(by_model, needs="rater"))
STRATEGIES.add("annotation", Strategy(by_annotation, needs="annotation", select=annotated))
