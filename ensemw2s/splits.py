"""Difficulty ratings, seeded disjoint splits and the leak check: `prepare_data` writes one dataset's splits.

A difficulty strategy gives every example a score (larger = harder) and an easy/hard flag. Easy rows
fill weak_train, val, test_id; hard rows fill test_ood; student_pool comes from the tier the dataset's
`student_pool` names (easy by default: the W2S protocol, where the weak supervisor labels held-out
questions of its own training distribution). Rows sharing a uid (the same question text) always move
together, in the folds of the model rater as in the splits, so a question never sits on both sides of a
train/test or rater-train/rated boundary. The gold answers of student_pool are written apart (`gold/`),
for the ceiling alone; its public rows keep only the fields of `POOL_FIELDS`, and `read_pool` (the one
reader of student_pool) refuses any other. Same inputs, same bytes.

Trains nothing itself: the `model` strategy's rater fine-tunes through ensemw2s.training.
"""
from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ensemw2s import provenance
from ensemw2s.config import SPLITS, Config, DifficultySpec, as_dict, stable_hash
from ensemw2s.data import DATASETS, DatasetEntry
from ensemw2s.errors import UserError
from ensemw2s.io import atomic_dir, read_jsonl, sha256_file, write_json, write_jsonl
from ensemw2s.registry import Registry

# datasets[].student_pool -> the splits each difficulty tier fills, in fill order (weak_train, val and
# test_id come first, so they are the same rows whichever tier the pool is drawn from)
TIERS = {
    "easy": {"easy": ("weak_train", "val", "test_id", "student_pool"), "hard": ("test_ood",)},
    "hard": {"easy": ("weak_train", "val", "test_id"), "hard": ("student_pool", "test_ood")},
}
HELD_OUT = ("student_pool", "test_id", "test_ood")  # must share no question with weak_train or val
GOLD_DIR = "gold"
GOLD_FILE = f"{GOLD_DIR}/student_pool.jsonl"
# The only fields a student_pool row may carry. Anything else may reveal gold (answer, gold, SciQ's
# distractors, ARC's answerKey) or hint at it (SciQ's `support` passage, which usually contains the
# answer; `difficulty`, the rater's loss on the gold answer or the answer's length; the synthetic
# task's `rarity`), so the pool is written from this list, not by deleting known fields.
POOL_FIELDS = ("uid", "prompt", "choices", "source")

Rater = Callable[[list[dict], list[dict]], list[float]]  # (train rows, rows to score) -> difficulty per row


class LeakError(AssertionError):
    """Two splits share a question: a bug in the split logic, never bad input."""


@dataclass(frozen=True)
class Context:
    """What a strategy may use besides the examples."""

    entry: DatasetEntry
    difficulty: DifficultySpec
    seed: int
    rater: Callable[[], Rater]  # built on first use: only the model strategy needs one


Strategy = Callable[[list[dict], Context], tuple[list[float], list[bool]]]  # -> (difficulty, hard) per row
STRATEGIES: Registry[Strategy] = Registry("difficulty strategy")


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


@STRATEGIES.register("source")
def by_source(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """The dataset's own labels: hard when the row's source is one of the entry's hard sources."""
    hard = [r["source"] in ctx.entry.hard_sources for r in rows]
    return [float(h) for h in hard], hard


@STRATEGIES.register("length")
def by_length(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """A cheap proxy: words in the prompt and the answer; the longest `hard_fraction` are hard."""
    scores = [float(len(r["prompt"].split()) + len(r["answer"].split())) for r in rows]
    return scores, top_fraction(rows, scores, ctx.difficulty.hard_fraction)


@STRATEGIES.register("model")
def by_model(rows: list[dict], ctx: Context) -> tuple[list[float], list[bool]]:
    """Cross-fitted rater loss on the gold answer; the highest `hard_fraction` are hard."""
    scores = cross_fit(rows, ctx.rater(), ctx.difficulty.folds, ctx.seed)
    return scores, top_fraction(rows, scores, ctx.difficulty.hard_fraction)


def model_rater(cfg: Config, checkpoint: str | Path, rater_name: str, seed: int) -> Rater:
    """Rater: a fresh copy of the checkpoint, fine-tuned on the training folds (expert training
    settings), scores each row by its mean cross-entropy on the gold answer tokens."""
    from ensemw2s import training
    from ensemw2s.models import apply_lora, load_causal_lm, load_tokenizer, resolve_device

    spec = cfg.model(rater_name)
    train_spec = cfg.expert_training
    device = resolve_device(cfg.evaluation.device)

    def score(train_rows: list[dict], score_rows: list[dict]) -> list[float]:
        from transformers import set_seed

        tokenizer = load_tokenizer(checkpoint)
        set_seed(seed)  # LoRA initialisation (Trainer seeds the rest)
        model = apply_lora(load_causal_lm(checkpoint, dtype=spec.dtype, device=device), spec)
        with tempfile.TemporaryDirectory(prefix="rater-") as work:
            model = training.fit(model, tokenizer, train_rows, train_spec, seed, work)
        losses = training.answer_token_losses(model, tokenizer, score_rows, cfg.evaluation.batch_size,
                                              train_spec.max_length)
        return [float(loss.mean()) for loss in losses]

    return score


def _fill(groups: list[list[int]], size: int) -> tuple[list[list[int]], list[list[int]]]:
    """Take groups in order while they fit into `size` rows; the others stay for the next split."""
    taken, rest, n = [], [], 0
    for group in groups:
        if n + len(group) <= size:
            taken.append(group)
            n += len(group)
        else:
            rest.append(group)
    return taken, rest


def assign_splits(rows: list[dict], hard: list[bool], sizes: dict[str, int], seed: int, dataset: str,
                  student_pool: str) -> dict[str, list[int]]:
    """Split name -> row indices. Seeded and uid-grouped: each tier's questions fill its splits of
    `TIERS[student_pool]`; a split too small for its size is a UserError naming both numbers."""
    out: dict[str, list[int]] = {}
    for tier, names in TIERS[student_pool].items():
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (row, h) in enumerate(zip(rows, hard)):
            if h == (tier == "hard"):
                groups[row["uid"]].append(i)
        pending = [groups[uid] for uid in sorted(groups)]
        random.Random(f"splits:{seed}:{tier}").shuffle(pending)
        available = sum(map(len, pending))
        for name in names:
            taken, rest = _fill(pending, sizes[name])
            if sum(map(len, taken)) < sizes[name]:
                raise UserError(
                    f"dataset {dataset!r}: split {name} needs {sizes[name]} {tier} rows but only "
                    f"{sum(map(len, pending))} are left ({available} {tier} rows available, "
                    f"{sum(sizes[n] for n in names)} requested for {' + '.join(names)}, with "
                    f"student_pool: {student_pool}); lower datasets[].sizes.{name}, move "
                    f"difficulty.hard_fraction, or draw the pool from the other tier (datasets[].student_pool)"
                )
            out[name] = [i for group in taken for i in group]
            pending = rest
    return out


def check_no_leak(splits: dict[str, list[dict]]) -> None:
    """Raise LeakError if any question (uid) is in two splits, in particular a held-out one
    (student_pool, test_id, test_ood) in weak_train or val."""
    owner: dict[str, str] = {}
    for name in sorted(splits, key=lambda n: n not in HELD_OUT):  # held-out splits named first in a report
        for row in splits[name]:
            first = owner.setdefault(row["uid"], name)
            if first != name:
                raise LeakError(f"question uid {row['uid']} is in both {first} and {name}")


def refuse_gold(path: str | Path) -> Path:
    """Raise unless `path` lies outside a split directory's gold/ folder; return it."""
    path = Path(path)
    if path.resolve().parent.name == GOLD_DIR:
        raise UserError(
            f"{path}: the gold answers of student_pool are read only by the ceiling "
            f"(`ensemw2s train-student --gold`); experts and students must not see them"
        )
    return path


def pool_row(row: dict) -> dict:
    """A student_pool row as written: the fields of POOL_FIELDS only."""
    return {k: row[k] for k in POOL_FIELDS if k in row}


def read_pool(data: str | Path, required: tuple[str, ...] = ("uid", "prompt")) -> list[dict]:
    """student_pool rows of a split directory, each checked to carry only POOL_FIELDS and `required`.

    The one reader of student_pool (pseudo-labels, students, the ceiling): a field outside the
    allow-list means the splits were written by older code or edited, and may leak gold.
    """
    path = Path(data) / "student_pool.jsonl"
    if path.resolve().parent.name == GOLD_DIR:
        raise UserError(f"{path}: a reader of student_pool must not read the gold answers (only "
                        f"`train-student --gold` does); pass the split directory (the parent of gold/) as --data")
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        extra = [k for k in row if k not in POOL_FIELDS]
        if extra:
            raise UserError(f"{path} row {lineno}: field(s) {', '.join(extra)} are not in the student_pool "
                            f"allow-list ({', '.join(POOL_FIELDS)}); other fields may reveal or hint at the gold "
                            f"answer. Regenerate the splits with `ensemw2s prepare-data`")
        missing = [k for k in required if k not in row]
        if missing:
            raise UserError(f"{path} row {lineno}: missing field(s) {', '.join(missing)}")
    return rows


def rate_examples(examples: list[dict], ctx: Context) -> list[dict]:
    """Examples with `difficulty` and `hard`; all rows of one question take the hardest tier among them."""
    scores, hard = STRATEGIES.get(ctx.difficulty.strategy)(examples, ctx)
    for idx in group_by_uid(examples).values():
        if any(hard[i] for i in idx):
            for i in idx:
                hard[i] = True
    return [{**ex, "difficulty": s, "hard": h} for ex, s, h in zip(examples, scores, hard)]


def subsample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """A seeded sample of about `n` rows, whole questions at a time, in the original row order."""
    if n is None or n >= len(rows):
        return rows
    groups = sorted(group_by_uid(rows).items())
    random.Random(f"subsample:{seed}").shuffle(groups)
    keep, total = set(), 0
    for _, idx in groups:
        if total >= n:
            break
        keep.update(idx)
        total += len(idx)
    return [row for i, row in enumerate(rows) if i in keep]


def prepare_data(cfg: Config, dataset: str, seed: int, out: str | Path, rater_model: str | Path | None = None,
                 rater: Rater | None = None) -> None:
    """Write `out`/{split}.jsonl, gold/student_pool.jsonl and manifest.json for one dataset and seed.

    rater_model: the prepared checkpoint of the config's difficulty.rater, for the `model` strategy
    (ignored by the others); `rater` injects a ready rater instead (tests).
    """
    start = time.perf_counter()
    spec = cfg.dataset(dataset)
    entry = DATASETS.get(dataset)

    def make_rater() -> Rater:
        if rater is not None:
            return rater
        if rater_model is None:
            raise UserError(f"dataset {dataset!r}: difficulty strategy 'model' needs the rater's checkpoint; "
                            f"pass --rater-model (the prepare-model output of models.{spec.difficulty.rater})")
        return model_rater(cfg, rater_model, spec.difficulty.rater, seed)

    examples = subsample(entry.examples(spec, cfg.data_dir), spec.subsample, seed)
    rows = rate_examples(examples, Context(entry, spec.difficulty, seed, make_rater))
    index = assign_splits(rows, [r["hard"] for r in rows], spec.sizes, seed, dataset, spec.student_pool)
    splits = {name: [rows[i] for i in index[name]] for name in SPLITS}
    check_no_leak(splits)
    pool = splits["student_pool"]
    with atomic_dir(out) as tmp:
        for name in SPLITS:
            write_jsonl(tmp / f"{name}.jsonl", [pool_row(r) for r in pool] if name == "student_pool" else splits[name])
        write_jsonl(tmp / GOLD_FILE, [{"uid": r["uid"], "answer": r["answer"], "gold": r["gold"]} for r in pool])
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*.jsonl"))}
        write_json(tmp / "manifest.json", {
            "dataset": dataset,
            "seed": seed,
            "strategy": as_dict(spec.difficulty),
            "student_pool": spec.student_pool,
            "sizes": {name: len(splits[name]) for name in SPLITS},
            "rows": {"all": len(rows), "hard": sum(r["hard"] for r in rows)},
            "config_hash": stable_hash(as_dict(spec)),
            "files": files,
        })
    keys, inputs = ["datasets"], []
    if spec.load_from == "local" and entry.parts:  # local copies; generated and hub rows have no files here
        keys.append("data_dir")
        inputs += [Path(cfg.data_dir) / part.folder for part in entry.parts]
    if spec.difficulty.strategy == "model":  # the rater: fine-tuned with the expert settings, scored in batches
        keys += [f"models.{spec.difficulty.rater}", "training.expert", "evaluation.batch_size"]
        inputs += [rater_model] if rater_model is not None else []
    provenance.record(out, cfg, keys, inputs, {
        "step": "prepare_data", "dataset": dataset, "seed": seed, "load_from": spec.load_from,
        "student_pool": spec.student_pool,
        "sizes": {name: len(splits[name]) for name in SPLITS}, "wall_time_s": time.perf_counter() - start,
    })
