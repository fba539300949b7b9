"""Difficulty ratings, seeded disjoint splits and the leak check: `rate_data` rates one dataset once,
`prepare_data` writes its splits for one seed.

A difficulty strategy (ensemw2s/strategies.py) gives every example a score (larger = harder) and an
easy/hard flag, or leaves it out (no annotation: counted by reason in manifest.json). The rating is one
measurement of the dataset, shared by every seed of a run (RATING_SEED: its subsample, its raters'
folds and training), so seeds vary the splits and the training, not which questions are hard; a
cross-fitted rater panel costs one rating per dataset instead of one per seed.
Easy rows fill weak_train, val, test_id; hard rows fill test_ood; student_pool comes from the tier the
dataset's `student_pool` names (easy by default: the W2S protocol, where the weak supervisor labels
held-out questions of its own training distribution). Rows sharing a uid (the same question text) always
move together, in the folds of the model rater as in the splits, so a question never sits on both sides
of a train/test or rater-train/rated boundary. The gold answers of student_pool are written apart (`gold/`),
for the ceiling alone; its public rows keep only allow-listed fields (ensemw2s/splitdir.py, the contract
of a split directory, whose `read_pool` refuses any other). Same inputs, same bytes.

Trains nothing itself: each rater of the `model` strategy's panel fine-tunes through ensemw2s.training.
"""
from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from ensemw2s import catalog, data, provenance, steps
from ensemw2s.config import Config, as_dict, stable_hash
from ensemw2s.errors import UserError
from ensemw2s.io import atomic_dir, read_json, read_jsonl, sha256_file, write_json, write_jsonl
from ensemw2s.splitdir import GOLD_FILE, SPLITS, pool_row
from ensemw2s.strategies import STRATEGIES, Context, Rater, annotation_file, group_by_uid

# datasets[].student_pool -> the splits each difficulty tier fills, in fill order (weak_train, val and
# test_id come first, so they are the same rows whichever tier the pool is drawn from)
TIERS = {
    "easy": {"easy": ("weak_train", "val", "test_id", "student_pool"), "hard": ("test_ood",)},
    "hard": {"easy": ("weak_train", "val", "test_id"), "hard": ("student_pool", "test_ood")},
}
HELD_OUT = ("student_pool", "test_id", "test_ood")  # must share no question with weak_train or val
RATING_SEED = 0  # the seed of a dataset's one rating (subsample, rater folds and training), whatever the run's seeds
RATED_FILE = "rated.jsonl"  # rate_data's rows: the examples the strategy rated, with difficulty and hard


class LeakError(AssertionError):
    """Two splits share a question: a bug in the split logic, never bad input."""


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


def rate_examples(examples: list[dict], ctx: Context) -> tuple[list[dict], dict[str, int]]:
    """The examples the strategy rates, with `difficulty` and `hard` (all rows of one question take the
    hardest tier among them), and how many it left out, by reason."""
    strategy = STRATEGIES.get(ctx.difficulty.strategy)
    rated, left_out = strategy.select(examples, ctx) if strategy.select else (examples, {})
    scores, hard = strategy.rate(rated, ctx)
    for idx in group_by_uid(rated).values():
        if any(hard[i] for i in idx):
            for i in idx:
                hard[i] = True
    return [{**ex, "difficulty": s, "hard": h} for ex, s, h in zip(rated, scores, hard)], left_out


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


def _rate(cfg: Config, dataset: str, rater_models: dict[str, str | Path] | None, raters: dict[str, Rater] | None,
          fetched: str | Path | None) -> tuple[list[dict], dict, list[Path | str]]:
    """The dataset's rated rows, what its manifest records of them (examples considered, hard, left out),
    and the files the rating read (the definition, local rows, the raters' checkpoints, the annotations)."""
    spec = cfg.dataset(dataset)
    definition = catalog.definition(dataset, spec.definition)
    strategy = STRATEGIES.get(spec.difficulty.strategy)
    panel = spec.difficulty.raters if strategy.needs_rater else ()
    rater_models = dict(rater_models or {}) if strategy.needs_rater else {}
    if raters is None:
        _check_rater_models(dataset, spec.difficulty.strategy, panel, rater_models)

    def make_rater(name: str) -> Rater:
        return raters[name] if raters is not None else model_rater(cfg, rater_models[name], name, RATING_SEED)

    examples = subsample(data.examples(spec, cfg.data_dir, fetched), spec.subsample, RATING_SEED)
    context = Context(definition.hard_sources, spec.difficulty, RATING_SEED, make_rater, cfg.data_dir)
    rows, left_out = rate_examples(examples, context)
    # all = the examples considered; left_out = those the strategy could not rate, by reason
    counts = {"all": len(examples), "hard": sum(r["hard"] for r in rows), "left_out": left_out}
    inputs: list[Path | str] = [definition.path]
    if spec.load_from == "local":  # local copies; generated and hub rows have no files here
        inputs += [Path(cfg.data_dir) / part.folder for part in definition.parts]
    inputs += [rater_models[name] for name in panel if name in rater_models]
    if strategy.needs == "annotation":
        inputs.append(annotation_file(spec.difficulty.annotation, cfg.data_dir))
    inputs += [fetched] if fetched is not None else []
    return rows, {"dataset": dataset, "strategy": as_dict(spec.difficulty), "raters": list(panel),
                  "rating_seed": RATING_SEED, "rows": counts, "config_hash": stable_hash(as_dict(spec))}, inputs


def rate_data(cfg: Config, dataset: str, out: str | Path, rater_models: dict[str, str | Path] | None = None,
              raters: dict[str, Rater] | None = None, fetched: str | Path | None = None) -> None:
    """Write `out`/rated.jsonl and manifest.json: the dataset's one rating, read by prepare_data for every seed.

    rater_models: model name -> prepared checkpoint, one per rater of difficulty.rater, for a strategy that
    needs raters (ignored by the others); `raters` injects ready raters by name instead (tests).
    """
    start = time.perf_counter()
    rows, record, inputs = _rate(cfg, dataset, rater_models, raters, fetched)
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / RATED_FILE, rows)
        write_json(tmp / "manifest.json", {**record, "files": {RATED_FILE: sha256_file(tmp / RATED_FILE)}})
    provenance.record(out, cfg, steps.keys(cfg, "rate_data", dataset=dataset), inputs, {
        "step": "rate_data", "dataset": dataset, "raters": record["raters"], "rows": record["rows"],
        "wall_time_s": time.perf_counter() - start})


def read_ratings(cfg: Config, dataset: str, ratings: str | Path) -> tuple[list[dict], dict]:
    """rate_data's rows and manifest; a UserError when they rate another dataset or config entry."""
    ratings = Path(ratings)
    manifest = ratings / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{ratings}: no manifest.json; write the ratings with `ensemw2s rate-data --dataset {dataset}`")
    record = read_json(manifest)
    expected = stable_hash(as_dict(cfg.dataset(dataset)))
    if record.get("dataset") != dataset or record.get("config_hash") != expected:
        raise UserError(f"{ratings}: rates dataset {record.get('dataset')!r} with another config entry than this "
                        f"config's {dataset!r}; rerun `ensemw2s rate-data --dataset {dataset}` with this config")
    return read_jsonl(ratings / RATED_FILE), record


def prepare_data(cfg: Config, dataset: str, seed: int, out: str | Path, ratings: str | Path | None = None,
                 rater_models: dict[str, str | Path] | None = None, raters: dict[str, Rater] | None = None,
                 fetched: str | Path | None = None) -> None:
    """Write `out`/{split}.jsonl, gold/student_pool.jsonl and manifest.json for one dataset and seed.

    ratings: rate_data's output (the workflow's way: one rating for every seed); without it the dataset
    is rated here, as rate_data would rate it (rater_models / raters / fetched as there), to check a new
    dataset by hand. student_pool keeps the definition's `pool_fields`, recorded in the manifest for its
    reader (splitdir.read_pool). The manifest records the raters that rated and the rows the strategy left out.
    """
    start = time.perf_counter()
    spec = cfg.dataset(dataset)
    definition = catalog.definition(dataset, spec.definition)
    if ratings is None:
        rows, rating, inputs = _rate(cfg, dataset, rater_models, raters, fetched)
    else:
        rows, rating = read_ratings(cfg, dataset, ratings)
        inputs = [definition.path, ratings]
    index = assign_splits(rows, [r["hard"] for r in rows], spec.sizes, seed, dataset, spec.student_pool)
    splits = {name: [rows[i] for i in index[name]] for name in SPLITS}
    check_no_leak(splits)
    pool = splits["student_pool"]
    with atomic_dir(out) as tmp:
        for name in SPLITS:
            write_jsonl(tmp / f"{name}.jsonl",
                        [pool_row(r, definition.pool_fields) for r in pool] if name == "student_pool" else splits[name])
        write_jsonl(tmp / GOLD_FILE, [{"uid": r["uid"], "answer": r["answer"], "gold": r["gold"]} for r in pool])
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*.jsonl"))}
        write_json(tmp / "manifest.json", {
            "dataset": dataset,
            "seed": seed,
            "strategy": rating["strategy"],
            "raters": rating["raters"],
            "rating_seed": rating["rating_seed"],
            "student_pool": spec.student_pool,
            "pool_fields": list(definition.pool_fields),
            "sizes": {name: len(splits[name]) for name in SPLITS},
            "rows": rating["rows"],
            "config_hash": rating["config_hash"],
            "files": files,
        })
    provenance.record(out, cfg, steps.keys(cfg, "prepare_data", dataset=dataset), inputs, {
        "step": "prepare_data", "dataset": dataset, "seed": seed, "load_from": spec.load_from,
        "student_pool": spec.student_pool, "raters": rating["raters"], "left_out": rating["rows"]["left_out"],
        "sizes": {name: len(splits[name]) for name in SPLITS}, "wall_time_s": time.perf_counter() - start,
    })


def _check_rater_models(dataset: str, strategy: str, panel: tuple[str, ...], rater_models: dict) -> None:
    """One prepared checkpoint per rater of the panel, and none of a model outside it."""
    missing = [name for name in panel if name not in rater_models]
    if missing:
        raise UserError(f"dataset {dataset!r}: difficulty strategy {strategy!r} needs the checkpoint of each rater "
                        f"({', '.join(panel)}); pass " + " ".join(f"--rater-model {n}=PATH" for n in missing)
                        + " (PATH: the prepare-model output of that model)")
    extra = [name for name in rater_models if name not in panel]
    if extra:
        raise UserError(f"dataset {dataset!r}: --rater-model {extra[0]}=...: {extra[0]!r} is not a rater of "
                        f"difficulty.rater ({', '.join(panel)}); drop it, or add it to the panel")
