"""Weighted expert training (training.fit with resample multipliers) against plain Trainer fine-tuning.

The same model (fresh copy of one random initialisation per run), rows, batches, optimizer and schedule.
Weighted: `ensemw2s.training.fit` with one resample multiplier per answer token (as a boosting round
makes them: counts drawn from a random D). Plain: transformers' Trainer with the model's own causal-LM
loss on the same padded batches (the collator's token_weights column dropped).

Steady state. A run this short (a dozen optimizer steps) spends as long on set-up and on the final
checkpoint as on several steps, so a whole-call ratio says more about those fixed costs than about the
weighting: one checkpoint write moved it by a quarter (1.13 against a plain run that writes one, 0.87
against one that does not). The targeted ratio therefore times optimizer steps: a TrainerCallback
(`StepClock`, passed to fit through its `callbacks` keyword) marks process-CPU and wall time at the end
of every step, with Trainer's count of non-padding input tokens. A step's time is from the end of the
step before (from the start of training for the first) to its own end: fetching and collating its
batch, forward, backward, optimizer and schedule. The first `warmup_steps` steps are dropped (the
optimizer's state is created on the first step, allocator pools fill); the final checkpoint is written
after the last step's end, so no timed step contains a save, and no save happens before (save_steps is
above the step count). Ratio = weighted tokens/s / plain tokens/s over the timed steps, non-padding
tokens over their summed seconds, median over interleaved repeats (common.py). Totals rather than
medians of per-step rates: a step's time follows its batch's padded shape, so per-step rates spread with
the batches, not with noise, and a total weighs them as a long run does; the two sides train the same
batches (checked: the same tokens per step), and the median over repeats absorbs a slow phase of the
machine. Target >= 0.95.

Lengths (full run), short-answer QA as the suite trains it: prompts "Question: ...\\nAnswer:" of SciQ's
length, 17 to 34 tokens (its questions: 7 to 19 words from the 10th to the 90th percentile of the train
split, about 11 to 29 BPE tokens, plus about 5 for the template; bench_ensemble_score.py counts about 24
SmolLM2 tokens for the median); answers of 3 to 12 tokens including EOS (SciQ's correct answers: 1 to 2
words, 3 to 4 tokens with EOS; ARC's: about 5 tokens at the median, 12 at the 90th percentile). One
token per word of the benchmark tokenizer, lengths uniform over those ranges; batch size 8 and max_length
128 as config/cpu-real.yaml's experts.

Second row: the whole fit call against the whole plain call (set-up, steps and a final checkpoint on
both sides, as fit always writes one so it can resume), untargeted: what one short run costs end to
end; the seconds of each final checkpoint write are in its details. Third row: peak memory (VmHWM) of
each side, read in a fresh process that runs it once.

    python benchmarks/bench_expert_training.py [--quick] [--json PATH] [--threads 1]
"""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# rows = steps x batch_size (full batches); prompt, answer: the longest prompt and answer in words (make_rows)
FULL = dict(rows=96, prompt=34, answer=11, batch_size=8, epochs=1, warmup_steps=2, repeats=3)
QUICK = dict(rows=16, prompt=8, answer=3, batch_size=4, epochs=1, warmup_steps=1, repeats=2)
MAX_LENGTH = 128
SIDES = ("weighted", "plain")


def make_rows(cfg: dict, vocab_size: int) -> list[dict]:
    """Prompt/answer rows of random words (one token each): prompts of prompt // 2 to prompt words and
    answers of max(1, answer // 4) to answer words, uniformly (so batches are padded as real ones are)."""
    g = torch.Generator().manual_seed(0)
    words = lambda n: " ".join(f"t{i}" for i in torch.randint(4, vocab_size, (n,), generator=g).tolist())  # noqa: E731
    length = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    return [{"prompt": words(length(cfg["prompt"] // 2, cfg["prompt"])),
             "answer": words(length(max(1, cfg["answer"] // 4), cfg["answer"]))} for _ in range(cfg["rows"])]


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


class StepClock(TrainerCallback):
    """(process CPU s, wall s, non-padding input tokens seen) when training begins and at the end of every
    optimizer step (`steps`: [0] the start, [k] the end of step k), and after each checkpoint write (`saves`).

    on_step_end comes after the optimizer and schedule step and before Trainer's log/save/evaluate of that
    step; on_save after the checkpoint is on disk.
    """

    def __init__(self):
        self.steps: list[tuple[float, float, int]] = []
        self.saves: list[tuple[float, float, int]] = []

    @staticmethod
    def _mark(state) -> tuple[float, float, int]:
        return time.process_time(), time.perf_counter(), int(state.num_input_tokens_seen)

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps.append(self._mark(state))

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(self._mark(state))

    def on_save(self, args, state, control, **kwargs):
        self.saves.append(self._mark(state))


def weighted_run(model, tokenizer, rows, multipliers, cfg, clocks: list[StepClock]):
    from ensemw2s.training import fit

    def run():
        clock = StepClock()
        with tempfile.TemporaryDirectory(prefix="ensemw2s-fit-") as out:
            fit(copy.deepcopy(model), tokenizer, rows, spec(cfg), seed=0, out_dir=out, token_weights=multipliers,
                callbacks=[clock])
        clocks.append(clock)

    return run


def plain_run(model, tokenizer, rows, cfg, clocks: list[StepClock]):
    """transformers' Trainer, its default loss, the same batches (WeightedCollator without token_weights),
    fit's checkpoint settings (the final checkpoint is written) and token count (non-padding)."""
    from transformers import Trainer, TrainingArguments

    from ensemw2s.training import WeightedCollator

    collate = WeightedCollator(tokenizer, MAX_LENGTH)

    def plain_collate(batch):
        out = collate(batch)
        del out["token_weights"]
        return out

    def run():
        clock = StepClock()
        with tempfile.TemporaryDirectory(prefix="ensemw2s-plain-") as out:
            args = TrainingArguments(
                output_dir=out, num_train_epochs=cfg["epochs"], per_device_train_batch_size=cfg["batch_size"],
                learning_rate=1e-4, weight_decay=0.0, lr_scheduler_type="linear", use_cpu=True, seed=0, data_seed=0,
                save_strategy="steps", save_steps=spec(cfg).save_steps, save_total_limit=1,
                include_num_input_tokens_seen="non_padding", remove_unused_columns=False, report_to=[],
                disable_tqdm=True, dataloader_num_workers=0, logging_steps=10**6)
            Trainer(model=copy.deepcopy(model), args=args, train_dataset=rows, data_collator=plain_collate,
                    callbacks=[clock]).train()
        clocks.append(clock)

    return run


def steady_state(clocks: dict[str, list[StepClock]], steps: int, warmup: int) -> dict:
    """Per side and repeat, the CPU and wall seconds of steps warmup+1..steps (summed), each step's CPU
    seconds, and the final checkpoint's seconds; the tokens per step, the same on both sides."""
    step_tokens = None
    out = {"timed": {}, "checkpoint": {}, "step_cpu_s": {}}
    for side, runs in clocks.items():
        out["timed"][side] = {"cpu": [], "wall": []}
        out["checkpoint"][side] = {"cpu": [], "wall": []}
        out["step_cpu_s"][side] = []
        for clock in runs:
            if len(clock.steps) != steps + 1 or len(clock.saves) != 1:
                raise RuntimeError(f"{side}: {len(clock.steps) - 1} optimizer steps and {len(clock.saves)} "
                                   f"checkpoints seen, {steps} and 1 expected; StepClock no longer sees Trainer's "
                                   f"events (check its callbacks against transformers' trainer_callback.py)")
            cpu, wall, seen = zip(*clock.steps)
            tokens = [b - a for a, b in zip(seen, seen[1:])]
            if step_tokens is not None and tokens != step_tokens:
                raise RuntimeError(f"{side} trained other batches (tokens per step {tokens}, not {step_tokens}); "
                                   f"both sides need the same rows, batch size, seed and data_seed")
            step_tokens = tokens
            out["timed"][side]["cpu"].append(cpu[steps] - cpu[warmup])
            out["timed"][side]["wall"].append(wall[steps] - wall[warmup])
            out["checkpoint"][side]["cpu"].append(clock.saves[0][0] - cpu[steps])
            out["checkpoint"][side]["wall"].append(clock.saves[0][1] - wall[steps])
            out["step_cpu_s"][side].append([round(b - a, 3) for a, b in zip(cpu, cpu[1:])])
    out["step_tokens"] = step_tokens
    return out


def worker(cfg: dict) -> dict:
    from ensemw2s.training import count_tokens

    dims = common.shape(cfg["quick"])
    tokenizer = common.word_tokenizer(dims["vocab_size"])
    rows = make_rows(cfg, dims["vocab_size"])
    model = common.llama(dims, seed=0).train()
    clocks: dict[str, list[StepClock]] = {side: [] for side in SIDES}
    runs = {"weighted": weighted_run(model, tokenizer, rows, resample_multipliers(tokenizer, rows), cfg,
                                     clocks["weighted"]),
            "plain": plain_run(model, tokenizer, rows, cfg, clocks["plain"])}
    if cfg["kind"] != "timing":  # one run of one of them: its peak memory
        runs[cfg["kind"]]()
        return {"peak_rss_mb": common.peak_rss_mb()}
    whole, _ = common.interleaved(runs, cfg["repeats"])
    steps = -(-cfg["rows"] // cfg["batch_size"]) * cfg["epochs"]
    return {"whole": whole, "tokens": count_tokens(tokenizer, rows, MAX_LENGTH) * cfg["epochs"], "steps": steps,
            **steady_state(clocks, steps, cfg["warmup_steps"])}


def run(args) -> tuple[dict, list[dict]]:
    cfg = {**(QUICK if args.quick else FULL), "quick": args.quick}
    dims = common.shape(args.quick)
    mach = common.machine(args.threads, {"model": dims, "training": cfg, "max_length": MAX_LENGTH})
    script = str(Path(__file__).resolve())
    w = common.run_worker(script, {**cfg, "kind": "timing"}, args.threads)
    peak = {k: common.run_worker(script, {**cfg, "kind": k}, args.threads)["peak_rss_mb"] for k in SIDES}
    timed_tokens = sum(w["step_tokens"][cfg["warmup_steps"]:])
    # tokens/s ratio = inverse time ratio (the same tokens on both sides)
    steady = common.ratios(w["timed"], "plain", "weighted")
    whole = common.ratios(w["whole"], "plain", "weighted")
    tps = {f"{k}_tokens_per_cpu_s": round(timed_tokens / common.median(v["cpu"]), 1) for k, v in w["timed"].items()}
    results = [
        common.result("training steady state: weighted fit / plain Trainer tokens/s", steady["ratio"],
                      None if args.quick else 0.95, "higher", steady["wall_ratio"], steps=w["steps"],
                      warmup_steps=cfg["warmup_steps"], timed_tokens=timed_tokens, step_tokens=w["step_tokens"],
                      **tps, **common.seconds({f"{k}_timed_steps": v for k, v in w["timed"].items()}),
                      **{f"{k}_step_cpu_s": v for k, v in w["step_cpu_s"].items()}),
        common.result("training whole call (set-up, final checkpoint): weighted fit / plain Trainer tokens/s",
                      whole["ratio"], None, "higher", whole["wall_ratio"], tokens=w["tokens"],
                      **common.seconds({f"{k}_call": v for k, v in w["whole"].items()}),
                      **common.seconds({f"{k}_checkpoint": v for k, v in w["checkpoint"].items()})),
        common.result("training memory: weighted / plain peak", peak["weighted"] / peak["plain"], None, "lower",
                      weighted_peak_rss_mb=round(peak["weighted"]), plain_peak_rss_mb=round(peak["plain"])),
    ]
    return mach, results


if __name__ == "__main__":
    common.main(__doc__, worker, run)
