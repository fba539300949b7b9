"""One boosting round (`ensemw2s train-expert`): I/O around boosting.py and training.py.

Round t reads weak_train and val, loads D_t from round t-1's weights.pt (round 1: uniform), trains
expert h_t from the weak BASE checkpoint (never from h_{t-1}), measures its teacher-forced misses on
weak_train (hard or soft, on its own rows or out of fold: the variant's miss / miss_on) and writes,
atomically, out/boosting.json, out/weights.pt (D_{t+1}), out/answer_misses.json (h_t's own hard misses
on weak_train and val, for the diagnostics) and out/model. alpha <= 0 is an expected outcome: the round is recorded as stopped without a model,
and every later round of that run is recorded as stopped too. A perfect fit (no missed answer token)
ends boosting as well, but keeps its expert: its round is not stopped, it carries the stop reason, and
the rounds after it are stopped.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from torch import Tensor
from transformers import set_seed

from ensemw2s import boosting, provenance, steps
from ensemw2s.config import Config, stable_hash
from ensemw2s.variants import KINDS
from ensemw2s.errors import UserError
from ensemw2s.io import atomic_dir, read_json, write_json
from ensemw2s.models import apply_lora, load_causal_lm, load_tokenizer
from ensemw2s.registry import load_target
from ensemw2s.splitdir import read_split
from ensemw2s.training import (FIT_STATS, answer_token_ids, answer_token_misses, answer_token_predictions,
                                count_tokens, fit, read_fit_stats)

ANSWER_MISSES = "answer_misses.json"  # h_t's own teacher-forced misses on weak_train and val (the diagnostics)


def round_seed(seed: int, round: int) -> int:
    """The seed of round `round` of replicate `seed`: distinct per round, equal across variants."""
    return int(stable_hash([seed, round]), 16) % 2**31


# ---------------------------------------------------------------------------------------------
# I/O


def _offsets(ids: list[Tensor]) -> Tensor:
    return torch.tensor([0] + [len(x) for x in ids]).cumsum(0)  # (N+1,)


def write_weights(path: Path, uids: list[str], offsets: Tensor, D: Tensor) -> None:
    """weights.pt: {"uid": [...], "offsets": LongTensor(N+1), "weights": DoubleTensor(n)} (docs/architecture.md).

    float64, as boosting computes them: float32 flushes a never-missed token's weight to 0 within 8 rounds.
    """
    torch.save({"uid": list(uids), "offsets": offsets.long(), "weights": D.to(torch.float64)}, path)


def _previous(prev: Path | None, round: int, variant: str, uids: list[str], offsets: Tensor) -> tuple[Tensor, str | None]:
    """(D_t as float64 (n,), the reason an earlier round ended boosting, or None)."""
    n = int(offsets[-1])
    if round == 1:
        if prev is not None:
            raise UserError("round 1 starts from uniform weights; drop --prev")
        return boosting.initial_weights(torch.ones(n, dtype=torch.bool)), None
    if prev is None:
        raise UserError(f"round {round} needs --prev, the output directory of round {round - 1} of variant {variant!r}")
    prev = Path(prev)
    record = read_json(prev / "boosting.json")
    if record.get("round") != round - 1 or record.get("variant") != variant:
        raise UserError(f"--prev {prev} holds round {record.get('round')} of variant {record.get('variant')!r}; "
                        f"round {round} of {variant!r} needs round {round - 1} of {variant!r}")
    if not (prev / "weights.pt").is_file():
        raise UserError(f"{prev / 'weights.pt'}: file not found; rerun round {round - 1}")
    saved = torch.load(prev / "weights.pt", weights_only=True)
    if saved["uid"] != list(uids) or not torch.equal(saved["offsets"], offsets):
        raise UserError(f"{prev / 'weights.pt'} was written for other weak_train rows or another tokenizer/max_length; "
                        f"rerun the rounds before {round} with the same data, base and training.expert.max_length")
    D = saved["weights"].to(torch.float64)
    if not torch.isfinite(D).all() or (D < 0).any() or D.sum() <= 0:
        raise UserError(f"{prev / 'weights.pt'}: weights are negative, NaN or inf; rerun round {round - 1}")
    return D / D.sum(), record.get("stop_reason")  # set from the round that ended boosting on


def _save(out: Path, model, tokenizer, uids: list[str], offsets: Tensor, D_next: Tensor, record: dict,
          fit_stats: dict | None = None, files: dict | None = None) -> None:
    with atomic_dir(out) as tmp:
        for name, content in (files or {}).items():  # answer_misses.json; a kind's fit-plan files
            write_json(tmp / name, content)
        if model is not None:
            model.save_pretrained(tmp / "model")  # a LoRA model saves just its adapter
            tokenizer.save_pretrained(tmp / "model")
        write_weights(tmp / "weights.pt", uids, offsets, D_next)
        write_json(tmp / "boosting.json", record)
        if fit_stats is not None:  # kept after the checkpoints go: e.g. whether training resumed
            write_json(tmp / FIT_STATS, fit_stats)


def _record(cfg: Config, out: Path, weak: str, inputs: list, record: dict, fit_stats: dict | None) -> None:
    """The round's provenance record: the config keys an expert depends on, its inputs, time and tokens."""
    provenance.record(out, cfg, steps.keys(cfg, "train_expert", weak=weak, variant=record["variant"]), inputs, {
        "step": "train_expert", **{k: record[k] for k in ("dataset", "seed", "variant", "round", "round_seed",
                                                          "stopped", "stop_reason", "perfect_fit", "eps", "alpha",
                                                          "prior_term", "e_ref")},
        "wall_time_s": record["wall_time_s"], "tokens_processed": record["tokens_processed"],
        "resumed_from": (fit_stats or {}).get("resumed_from"),
    })


# ---------------------------------------------------------------------------------------------


def _base_error(prev: Path | None, round: int, base, tokenizer, rows: list[dict], spec, dtype) -> float:
    """e_ref of `prior: base_error`: the weak base's teacher-forced token error on weak_train (unweighted),
    measured in round 1 and carried in boosting.json to the rounds after it."""
    if round > 1:
        e_ref = read_json(Path(prev) / "boosting.json").get("e_ref")
        if e_ref is None:
            raise UserError(f"{Path(prev) / 'boosting.json'} records no e_ref (prior base_error); rerun round 1")
        return float(e_ref)
    misses = answer_token_misses(load_causal_lm(base, dtype=dtype), tokenizer, rows, spec.batch_size, spec.max_length)
    return float(torch.cat(misses).double().mean())


def _folds(n_rows: int, k: int, seed: int) -> Tensor:
    """The fold (0..k-1) of each weak_train row for miss_on: out_of_fold, a seeded balanced assignment."""
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))
    fold = torch.empty(n_rows, dtype=torch.long)
    fold[perm] = torch.arange(n_rows) % k
    return fold


def train_expert(cfg: Config, weak: str, dataset: str, seed: int, variant: str, round: int,
                 data: str | Path, base: str | Path, prev: str | Path | None, out: str | Path) -> None:
    """Boosting round `round` of `variant` for (weak, dataset, seed): expert, eps, alpha, D_{t+1}."""
    start = time.perf_counter()
    if round < 1:
        raise UserError(f"--round must be 1 or more, got {round}")
    bspec = cfg.boosting.variant(variant)
    if bspec.experts != variant:
        raise UserError(f"variant {variant!r} combines the experts of {bspec.experts!r} (equal training settings); "
                        f"train those: --variant {bspec.experts}")
    kind = KINDS.get(bspec.kind)
    data, out = Path(data), Path(out)
    spec, mspec = cfg.expert_training, cfg.model(weak)
    rows = read_split(data, "weak_train")
    val = read_split(data, "val")  # the diagnostics' misses; model selection too, with select_on_val
    select_val = val if spec.select_on_val else None
    base = Path(base).resolve() if Path(base).exists() else base  # adapters record their base: keep it absolute
    inputs = [data / "weak_train.jsonl", data / "val.jsonl", *([base] if isinstance(base, Path) else []),
              *([Path(prev) / "boosting.json", Path(prev) / "weights.pt"] if prev is not None else [])]
    tokenizer = load_tokenizer(base)
    uids = [r["uid"] for r in rows]
    offsets = _offsets(answer_token_ids(tokenizer, rows, spec.max_length))
    D, stopped = _previous(prev, round, variant, uids, offsets)
    record = {
        "round": round, "variant": variant, "dataset": dataset, "seed": seed, "round_seed": round_seed(seed, round),
        "weak_model": weak, "kind": bspec.kind, "token_weighting": bspec.token_weighting,
        "prior": bspec.prior if kind.boosted else "uniform", "miss": bspec.miss, "miss_on": bspec.miss_on,
        "vocab_size": len(tokenizer), "n_tokens": int(offsets[-1]),
    }
    e_ref = (_base_error(prev, round, base, tokenizer, rows, spec, mspec.dtype)
             if kind.boosted and bspec.prior == "base_error" and stopped is None else None)
    if stopped is not None:  # an earlier round stopped boosting: no expert, weights carried over
        record.update({
            "eps": None, "alpha": None, "alpha_update": None, "prior_term": None, "e_ref": None, "n_missed": None,
            "missed_token_share": None, "stopped": True, "stop_reason": stopped,
            "perfect_fit": False, "missed_mass_after_update": None,
            "weight_entropy": boosting.weight_entropy(D), "weight_top10_share": boosting.top_share(D),
            "effective_sample_size": boosting.effective_sample_size(D), "tokens_processed": 0,
            "wall_time_s": time.perf_counter() - start,
        })
        _save(out, None, None, uids, offsets, D, record)
        _record(cfg, out, weak, inputs, record, None)
        return

    rseed = record["round_seed"]
    multipliers = load_target(kind.multipliers)(D, offsets, round, bspec.token_weighting,
                                                torch.Generator().manual_seed(rseed))
    token_weights = None if multipliers is None else list(multipliers.split((offsets[1:] - offsets[:-1]).tolist()))
    plan = load_target(kind.fit_plan)(cfg, dataset, data, rows, spec, round) if kind.fit_plan else None
    if plan is not None and token_weights is not None:
        raise UserError(f"variant kind {bspec.kind!r} chooses its rows (fit_plan) and weighs tokens: give it "
                        f"ensemw2s.boosting:plain_multipliers")

    def fit_copy(fit_rows, fit_spec, weights, name):
        """h_t (or an out-of-fold copy of it) fit from the weak base; (model, fit.json)."""
        set_seed(rseed)  # LoRA initialisation
        model = apply_lora(load_causal_lm(base, dtype=mspec.dtype), mspec)
        ckpt = out.parent / f"{out.name}{name}.ckpt"  # outside the atomic temp dir, so a requeued job resumes
        try:
            model = fit(model, tokenizer, fit_rows, fit_spec, rseed, ckpt, token_weights=weights, val_rows=select_val)
        except UserError as exc:  # e.g. a non-finite loss: name the step and the round
            raise UserError(f"train-expert {variant} round {round} ({weak}, {dataset}, seed {seed}): {exc}") from None
        checkpoints.append(ckpt)  # removed once the round is saved
        return model, read_fit_stats(ckpt)

    checkpoints: list[Path] = []
    model, fit_stats = fit_copy(plan.rows if plan else rows, plan.spec if plan else spec, token_weights, "")
    hard, gold_prob = answer_token_predictions(model, tokenizer, rows, spec.batch_size, spec.max_length)
    own = {"weak_train": (rows, list(hard)),  # h_t's own misses (answer_misses.json), whatever miss_on says
           "val": (val, answer_token_misses(model, tokenizer, val, spec.batch_size, spec.max_length))}
    extra_tokens = 0
    if bspec.miss_on == "out_of_fold":  # each row's miss by a copy of h_t fit without the row's fold
        fold = _folds(len(rows), bspec.folds, rseed)
        for f in range(bspec.folds):
            keep = [i for i in range(len(rows)) if fold[i] != f]
            held = [i for i in range(len(rows)) if fold[i] == f]
            copy, stats = fit_copy([rows[i] for i in keep], spec,
                                   None if token_weights is None else [token_weights[i] for i in keep], f".fold{f}")
            held_hard, held_prob = answer_token_predictions(copy, tokenizer, [rows[i] for i in held],
                                                            spec.batch_size, spec.max_length)
            for i, h, p in zip(held, held_hard, held_prob):
                hard[i], gold_prob[i] = h, p
            extra_tokens += stats["tokens_processed"]
    token_miss = boosting.soft_misses(torch.cat(gold_prob)) if bspec.miss == "soft" else torch.cat(hard)
    miss = load_target(kind.misses)(token_miss, offsets)
    eps, n_missed = boosting.weighted_error(D, miss, round), int((miss > 0).sum())  # n_missed: tokens that move D
    n_hard = int(torch.cat(hard).sum())
    if kind.boosted:
        prior = boosting.prior_term(bspec.prior, len(tokenizer), e_ref)
        alpha = boosting.alpha(eps, prior)
        stop = boosting.check_stop(alpha, eps, bspec.prior, n_missed)
        D_next = D if stop else boosting.update_weights(D, miss, alpha, round, bspec.learning_rate, bspec.uniform_mix)
    else:  # bagging and the controls: every expert weighs the same, whatever it misses
        prior, alpha, stop, D_next = None, 1.0, None, D
    kept = stop is None or stop.keeps_expert
    record.update({
        "eps": eps, "alpha": alpha, "alpha_update": bspec.learning_rate * alpha if kind.boosted and not stop else 0.0,
        "prior_term": prior, "e_ref": e_ref, "n_missed": n_missed, "missed_token_share": n_hard / int(offsets[-1]),
        "stopped": not kept, "stop_reason": f"round {round}: {stop.reason}" if stop else None,
        "perfect_fit": kind.boosted and n_missed == 0,
        "missed_mass_after_update": float((D_next * miss.to(torch.float64)).sum()),
        "weight_entropy": boosting.weight_entropy(D_next), "weight_top10_share": boosting.top_share(D_next),
        "effective_sample_size": boosting.effective_sample_size(D_next),
        "tokens_processed": fit_stats["tokens_processed"] + extra_tokens + count_tokens(tokenizer, rows, spec.max_length),
        "extra_trainings": bspec.folds if bspec.miss_on == "out_of_fold" else 0,
        **({"fit_plan": plan.record} if plan else {}),
        "wall_time_s": time.perf_counter() - start,
    })
    misses = {split: {"uids": [r["uid"] for r in split_rows], "missed": [m.int().tolist() for m in split_miss]}
              for split, (split_rows, split_miss) in own.items()}
    files = {ANSWER_MISSES: misses, **(plan.files if plan else {})}
    _save(out, model if kept else None, tokenizer, uids, offsets, D_next, record, fit_stats, files)
    for ckpt in checkpoints:
        shutil.rmtree(ckpt)
    _record(cfg, out, weak, inputs, record, fit_stats)
