"""Weighted expert training (training.fit with resample multipliers) against plain Trainer fine-tuning.

The same model (fresh copy of one random initialisation per run), rows, batch size, optimizer and
schedule. Weighted: `ensemw2s.training.fit` with one resample multiplier per answer token (as a boosting
round makes them: counts drawn from a random D). Plain: transformers' Trainer with the model's own
causal-LM loss on the same padded batches (the collator's token_weights column dropped). Ratio =
weighted tokens/s / plain tokens/s (non-padding tokens per second of the whole call, Trainer set-up
included). Target >= 0.95.

Checkpoints: fit keeps Trainer's save_strategy "steps" (its default; fit resumes from checkpoints), and
with it Trainer writes a checkpoint (model and optimizer state) when training ends. The plain run with
the target does the same, so the ratio is the price of the weighting; a second plain run writes no
checkpoint (save_strategy "no"), and its ratio shows what that final write costs a run this short.

Timing runs interleave the two in one process; the peak memory (ru_maxrss) of each is read in a fresh
process that runs it once.

    python benchmarks/bench_expert_training.py [--quick] [--json PATH] [--threads 1]
"""
from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FULL = dict(rows=32, prompt=32, answer=6, batch_size=8, epochs=1, repeats=5)
QUICK = dict(rows=8, prompt=8, answer=3, batch_size=4, epochs=1, repeats=2)
MAX_LENGTH = 128


def make_rows(cfg: dict, vocab_size: int) -> list[dict]:
    """Prompt/answer rows of random words, prompts of several lengths (so batches are padded)."""
    g = torch.Generator().manual_seed(0)
    words = lambda n: " ".join(f"t{i}" for i in torch.randint(4, vocab_size, (n,), generator=g).tolist())  # noqa: E731
    return [{"prompt": words(cfg["prompt"] - i % 8), "answer": words(cfg["answer"] - i % 3)} for i in range(cfg["rows"])]


def spec(cfg: dict):
    from ensemw2s.config import TrainingSpec

    return TrainingSpec(epochs=cfg["epochs"], learning_rate=1e-4, batch_size=cfg["batch_size"], grad_accum=1,
                        max_length=MAX_LENGTH, weight_decay=0.0, warmup_ratio=0.0, precision="fp32",
                        save_steps=10**6, select_on_val=False)  # no checkpoint is written during the run


def resample_multipliers(tokenizer, rows: list[dict]) -> list[torch.Tensor]:
    """Per row, one loss multiplier per answer token: resample counts from a random D over all answer tokens."""
    from ensemw2s.kinds import TOKEN_WEIGHTINGS
    from ensemw2s.training import answer_token_ids

    lengths = [len(a) for a in answer_token_ids(tokenizer, rows, MAX_LENGTH)]
    g = torch.Generator().manual_seed(1)
    D = torch.rand(sum(lengths), generator=g, dtype=torch.float64)
    return list(TOKEN_WEIGHTINGS.get("resample")(D / D.sum(), g).split(lengths))


def weighted_run(model, tokenizer, rows, multipliers, cfg):
    from ensemw2s.training import fit

    def run():
        with tempfile.TemporaryDirectory(prefix="ensemw2s-fit-") as out:
            fit(copy.deepcopy(model), tokenizer, rows, spec(cfg), seed=0, out_dir=out, token_weights=multipliers)

    return run


def plain_run(model, tokenizer, rows, cfg, save: bool):
    """transformers' Trainer, its default loss, the same batches (WeightedCollator without token_weights);
    with `save`, fit's checkpoint settings (the final checkpoint is written), else none."""
    from transformers import Trainer, TrainingArguments

    from ensemw2s.training import WeightedCollator

    collate = WeightedCollator(tokenizer, MAX_LENGTH)

    def plain_collate(batch):
        out = collate(batch)
        del out["token_weights"]
        return out

    def run():
        with tempfile.TemporaryDirectory(prefix="ensemw2s-plain-") as out:
            args = TrainingArguments(
                output_dir=out, num_train_epochs=cfg["epochs"], per_device_train_batch_size=cfg["batch_size"],
                learning_rate=1e-4, weight_decay=0.0, lr_scheduler_type="linear", use_cpu=True, seed=0, data_seed=0,
                save_strategy="steps" if save else "no", save_steps=spec(cfg).save_steps, save_total_limit=1,
                remove_unused_columns=False, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
                logging_steps=10**6)
            Trainer(model=copy.deepcopy(model), args=args, train_dataset=rows, data_collator=plain_collate).train()

    return run


def worker(cfg: dict) -> dict:
    from ensemw2s.training import count_tokens

    dims = common.shape(cfg["quick"])
    tokenizer = common.word_tokenizer(dims["vocab_size"])
    rows = make_rows(cfg, dims["vocab_size"])
    model = common.llama(dims, seed=0).train()
    runs = {"weighted": weighted_run(model, tokenizer, rows, resample_multipliers(tokenizer, rows), cfg),
            "plain": plain_run(model, tokenizer, rows, cfg, save=True),
            "plain_no_checkpoint": plain_run(model, tokenizer, rows, cfg, save=False)}
    if cfg["kind"] != "timing":  # one run of one of them: its peak memory
        runs[cfg["kind"]]()
        return {"peak_rss_mb": common.peak_rss_mb()}
    times, _ = common.interleaved(runs, cfg["repeats"])
    return {"times": times, "tokens": count_tokens(tokenizer, rows, MAX_LENGTH) * cfg["epochs"]}


def run(args) -> tuple[dict, list[dict]]:
    cfg = {**(QUICK if args.quick else FULL), "quick": args.quick}
    dims = common.shape(args.quick)
    mach = common.machine(args.threads, {"model": dims, "training": cfg, "max_length": MAX_LENGTH})
    script = str(Path(__file__).resolve())
    w = common.run_worker(script, {**cfg, "kind": "timing"}, args.threads)
    peak = {k: common.run_worker(script, {**cfg, "kind": k}, args.threads)["peak_rss_mb"] for k in ("weighted", "plain")}
    tps = {f"{k}_tokens_per_cpu_s": round(w["tokens"] / common.median(v["cpu"]), 1) for k, v in w["times"].items()}
    details = dict(tokens=w["tokens"], **tps, **common.seconds(w["times"]))
    r = common.ratios(w["times"], "plain", "weighted")  # tokens/s ratio = inverse time ratio (same tokens)
    r_bare = common.ratios(w["times"], "plain_no_checkpoint", "weighted")
    results = [
        common.result("training: weighted fit / plain Trainer tokens/s", r["ratio"], None if args.quick else 0.95,
                      "higher", r["wall_ratio"], **details),
        common.result("training: weighted fit / plain Trainer without checkpoint, tokens/s", r_bare["ratio"], None,
                      "higher", r_bare["wall_ratio"], **details),
        common.result("training memory: weighted / plain peak", peak["weighted"] / peak["plain"], None, "lower",
                      weighted_peak_rss_mb=round(peak["weighted"]), plain_peak_rss_mb=round(peak["plain"])),
    ]
    return mach, results


if __name__ == "__main__":
    common.main(__doc__, worker, run)
