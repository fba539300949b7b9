"""Fine-tuning with per-answer-token loss multipliers on transformers' Trainer; teacher-forced probes.

Training text is `prompt + " " + answer + eos` (docs/architecture.md): answer tokens are the tokens of
`" " + answer` plus EOS, and only they carry labels. This module knows nothing about boosting rounds:
callers hand `fit` one loss multiplier per answer token (resample counts, n * D, bootstrap counts),
or None for plain SFT. Loss = sum(multiplier * CE) / (answer tokens in the batch).

Test hook: with the environment variable ENSEMW2S_KILL_AFTER_FIRST_SAVE=1, `fit` SIGKILLs its own process
right after its first checkpoint is complete on disk, as a preemption would at that point
(tests/test_end_to_end.py kills a real `train-expert` this way, at a defined step, not after a sleep).

Trainer's `compute_loss_func` receives only (outputs, labels, num_items_in_batch) (transformers
5.24), so a token_weights column can never reach it; `_WeightedTrainer.compute_loss`, the seam
Trainer documents for losses that need other inputs, is the one method overridden.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ensemw2s.config import TrainingSpec, as_dict, stable_hash
from ensemw2s.errors import UserError
from ensemw2s.io import read_json, write_json

IGNORE = -100  # label of prompt and padding positions (no loss)
FIT_STATS = "fit.json"  # written into fit's out_dir: tokens_processed, steps, val losses
FIT_KEY = "fit_inputs.json"  # identity of the inputs a checkpoint directory belongs to
KILL_AFTER_FIRST_SAVE = "ENSEMW2S_KILL_AFTER_FIRST_SAVE"  # test hook (module docstring)


# ---------------------------------------------------------------------------------------------
# encoding


def _pad_id(tokenizer) -> int:
    """GPT-2 style tokenizers have no pad token: pad with EOS (padding is masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _row_name(row: dict, i: int) -> str:
    return f"row {i}" + (f" (uid {row['uid']})" if "uid" in row else "")


def encode_row(tokenizer, row: dict, max_length: int, i: int = 0) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one row; answer ids = tokens of " " + answer, then EOS.

    Prompt and answer are encoded apart so the boundary is exact. A row longer than max_length
    loses prompt tokens from the left (one prompt token always stays as context); an answer longer
    than max_length - 1 loses its tail. Weights must be aligned with `answer_token_ids`, which applies
    the same rule.
    """
    for key in ("prompt", "answer"):
        if not isinstance(row.get(key), str):
            raise UserError(f"{_row_name(row, i)}: field {key!r} must be a string; training rows need prompt and answer")
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; answers must end with EOS (set tokenizer.eos_token)")
    prompt = tokenizer(row["prompt"]).input_ids
    answer = tokenizer(" " + row["answer"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    if not prompt:
        raise UserError(f"{_row_name(row, i)}: empty prompt; the first answer token needs context to be predicted")
    answer = answer[: max_length - 1]
    prompt = prompt[-(max_length - len(answer)):]
    return prompt, answer


def answer_token_ids(tokenizer, rows: list[dict], max_length: int) -> list[Tensor]:
    """Per row, the answer token ids (incl. EOS) that carry loss and weight: the weights' layout."""
    return [torch.tensor(encode_row(tokenizer, r, max_length, i)[1]) for i, r in enumerate(rows)]


class WeightedCollator:
    """Rows {prompt, answer, token_weights?} -> left-padded batch tensors.

    Output: input_ids, attention_mask, position_ids (0 at each row's first real token), labels (IGNORE
    on prompt and padding), token_weights (0 on prompt and padding; 1 per answer token when the row has
    none), all (B, T). Padding is always on the left whatever tokenizer.padding_side says, so every
    answer ends at the last column: the loss then needs logits only for the last `answer_span` positions
    (`logits_to_keep`), not for the prompts, and the output layer (for Gemma-3, 262k words: most of a
    small model's compute) runs on a few positions per row. Explicit position ids keep GPT-2's absolute
    and Llama's rotary positions what they would be without padding.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, rows: list[dict]) -> dict[str, Tensor]:
        enc = [encode_row(self.tokenizer, r, self.max_length, i) for i, r in enumerate(rows)]
        T = max(len(p) + len(a) for p, a in enc)
        B = len(rows)
        input_ids = torch.full((B, T), _pad_id(self.tokenizer), dtype=torch.long)
        attention_mask = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        weights = torch.zeros((B, T), dtype=torch.float32)
        for b, (row, (prompt, answer)) in enumerate(zip(rows, enc)):
            L = len(answer)
            start = T - len(prompt) - L  # padding before it
            w = row.get("token_weights")
            w = torch.ones(L) if w is None else torch.as_tensor(w, dtype=torch.float32)
            if w.shape != (L,):
                raise UserError(
                    f"{_row_name(row, b)}: {w.numel()} token weights for {L} answer tokens; build the weights "
                    f"with training.answer_token_ids and the same max_length"
                )
            input_ids[b, start:] = torch.tensor(prompt + answer)
            attention_mask[b, start:] = 1
            labels[b, T - L:] = torch.tensor(answer)
            weights[b, T - L:] = w
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                "labels": labels, "token_weights": weights}


def answer_span(labels: Tensor) -> int:
    """How many trailing positions of a left-padded batch predict an answer token (or follow one):
    from the position before the earliest label to the end. labels (B, T)."""
    labelled = (labels != IGNORE).any(0).nonzero()
    return labels.shape[1] - int(labelled[0]) + 1 if len(labelled) else 1


def predicted_by_last(x: Tensor, k: int, fill: float | int) -> Tensor:
    """Of a (B, T) per-token tensor (labels, weights), the entries of the tokens that the last k positions
    predict: position t predicts token t+1, and the last position predicts nothing (`fill`). (B, k)."""
    return F.pad(x, (0, 1), value=fill)[:, 1:][:, -k:]


def answer_logits(model, batch: dict[str, Tensor]) -> Tensor:
    """The model's logits at the last `answer_span(labels)` positions: (B, k, V)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"], logits_to_keep=answer_span(batch["labels"])).logits


# ---------------------------------------------------------------------------------------------
# loss


def weighted_lm_loss(logits: Tensor, labels: Tensor, weights: Tensor, num_items: Tensor | int | None = None) -> Tensor:
    """sum(weight * CE) over answer tokens / number of answer tokens (of the accumulated batch).

    logits (B, k, V) of the last k positions (k <= T; k = T for all of them); labels, weights (B, T).
    Labels and weights are shifted to the positions that predict them (`predicted_by_last`), never the
    logits: a slice of the logits would be copied by reshape, and its gradient too, on every step. With
    weight 1 on every answer token this is the plain SFT loss (transformers' causal-LM loss) exactly.
    """
    k, V = logits.shape[1], logits.shape[-1]
    targets = predicted_by_last(labels, k, IGNORE)  # (B, k)
    ce = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE,
                         reduction="none").view_as(targets)  # (B, k), 0 where ignored
    n = (targets != IGNORE).sum() if num_items is None else num_items
    return (ce * predicted_by_last(weights, k, 0.0)).sum() / n


class _WeightedTrainer(Trainer):
    """Trainer whose loss sees the per-token weights."""

    loss_is_scaled_for_ga = True  # normalised by the answer tokens of the whole accumulated batch

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # makes Trainer count the answer tokens of each accumulated batch (num_items_in_batch); our
        # compute_loss never forwards that count to the model
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = answer_logits(model, inputs)
        loss = weighted_lm_loss(logits, inputs["labels"], inputs["token_weights"], num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size  # the count spans all processes, and DDP averages their gradients
        if model.training and not torch.isfinite(loss):
            raise UserError(
                f"training loss is {loss.item()} at step {self.state.global_step + 1} (epoch {self.state.epoch:.2f}); "
                f"lower training.learning_rate or use precision fp32/bf16 instead of fp16"
            )
        return (loss, {"logits": logits}) if return_outputs else loss


class _SaveEvery(TrainerCallback):
    """Checkpoint every `steps` steps while save_strategy='best' keeps the best epoch (resume after a kill)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps == 0:
            control.should_save = True
        return control


class _KillAfterFirstSave(TrainerCallback):
    """SIGKILL this process once the first checkpoint is written: Trainer calls on_save after the
    checkpoint, trainer_state.json included, is on disk and older ones are rotated away."""

    def on_save(self, args, state, control, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# fit


def _items(tokenizer, rows: list[dict], max_length: int, token_weights: list[Tensor] | None) -> list[dict]:
    if not rows:
        raise UserError("no training rows: the split is empty")
    if token_weights is None:
        return [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]
    if len(token_weights) != len(rows):
        raise UserError(f"{len(token_weights)} token-weight tensors for {len(rows)} rows; pass one per row")
    ids = answer_token_ids(tokenizer, rows, max_length)
    items = []
    for i, (r, w, a) in enumerate(zip(rows, token_weights, ids)):
        if w.shape != a.shape:
            raise UserError(f"{_row_name(r, i)}: {w.numel()} token weights for {a.numel()} answer tokens; "
                            f"align weights with training.answer_token_ids(tokenizer, rows, {max_length})")
        items.append({"prompt": r["prompt"], "answer": r["answer"], "token_weights": w.float()})
    return items


def count_tokens(tokenizer, rows: list[dict], max_length: int) -> int:
    """Non-padding tokens of the rows' training texts (compute accounting)."""
    return sum(len(p) + len(a) for p, a in (encode_row(tokenizer, r, max_length, i) for i, r in enumerate(rows)))


def _drop_partial_checkpoints(out_dir: Path) -> None:
    """Delete checkpoints a kill interrupted while they were written: Trainer writes trainer_state.json last."""
    for ckpt in out_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        if ckpt.is_dir() and not (ckpt / TRAINER_STATE_NAME).is_file():
            shutil.rmtree(ckpt)


def _resume_point(out_dir: Path, key: str) -> str | None:
    """The last complete checkpoint in out_dir if it belongs to the same inputs; refuse a stale one."""
    if out_dir.is_dir():
        _drop_partial_checkpoints(out_dir)
    last = get_last_checkpoint(out_dir) if out_dir.is_dir() else None
    if last is not None:
        saved = read_json(out_dir / FIT_KEY)["key"] if (out_dir / FIT_KEY).is_file() else None
        if saved != key:
            raise UserError(
                f"{out_dir} holds checkpoints of a different training run (other rows, weights, seed or "
                f"settings); delete {out_dir} to start afresh"
            )
    return last


def world_size() -> int:
    """Processes training together: torchrun's WORLD_SIZE (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Process 0 of a torchrun launch (or the only process): the one that writes outputs."""
    return os.environ.get("RANK", "0") == "0"


def _per_device_batch(spec: TrainingSpec) -> int:
    """batch_size is the global batch, split over the processes, so N GPUs train what one would."""
    n = world_size()
    if spec.batch_size % n:
        raise UserError(f"training batch_size {spec.batch_size} does not split over {n} processes; "
                        f"set batch_size to a multiple of resources.train_student.gpu ({n})")
    return spec.batch_size // n


def _warmup_steps(spec: TrainingSpec, n_rows: int) -> int:
    """warmup_ratio as steps, with Trainer's count of optimizer steps."""
    per_epoch = max(math.ceil(math.ceil(n_rows / spec.batch_size) / spec.grad_accum), 1)
    return math.ceil(spec.warmup_ratio * math.ceil(spec.epochs * per_epoch))


def fit(model, tokenizer, rows: list[dict], spec: TrainingSpec, seed: int, out_dir: str | Path,
        token_weights: list[Tensor] | None = None, val_rows: list[dict] | None = None,
        callbacks: list[TrainerCallback] | None = None):
    """Fine-tune `model` on rows (prompt -> answer) and return it.

    token_weights: per row, one loss multiplier per answer token incl. EOS (`answer_token_ids`
    layout); None = 1 everywhere = plain SFT. Checkpoints go to out_dir every spec.save_steps steps; a
    rerun with the same inputs resumes from the last one (SLURM requeue). With spec.select_on_val and
    val_rows, the epoch with the lowest val loss is kept (val_rows only; without them, the last).
    callbacks: more TrainerCallbacks, to observe training (benchmarks/bench_expert_training.py times
    optimizer steps with one); they are not part of the resume key, so they must not change what is trained.
    Writes out_dir/fit.json (tokens_processed, global_step, val_losses, best_val_loss, resumed_from).
    """
    out_dir = Path(out_dir)
    if spec.precision == "fp16" and not torch.cuda.is_available():
        raise UserError("training precision fp16 needs a CUDA GPU; use precision fp32 or bf16 on CPU")
    per_device = _per_device_batch(spec)
    train = _items(tokenizer, rows, spec.max_length, token_weights)
    val = _items(tokenizer, val_rows, spec.max_length, None) if val_rows else None
    select = spec.select_on_val and val is not None
    key = stable_hash({
        "spec": as_dict(spec), "seed": seed, "rows": [(r["prompt"], r["answer"]) for r in train],
        "weights": [w.tolist() for w in token_weights] if token_weights is not None else None, "val": val,
    })
    args = TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=_warmup_steps(spec, len(train)),
        lr_scheduler_type="linear",
        bf16=spec.precision == "bf16",
        fp16=spec.precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        # select: save the best epoch ('best') plus every save_steps (_SaveEvery) for resume
        save_strategy="best" if select else "steps",
        save_steps=spec.save_steps,
        save_total_limit=1,  # with load_best_model_at_end Trainer keeps the best and the latest
        eval_strategy="epoch" if select else "no",
        metric_for_best_model="eval_loss" if select else None,
        greater_is_better=False,
        load_best_model_at_end=select,
        remove_unused_columns=False,  # keep the prompt/answer/token_weights columns for the collator
        prediction_loss_only=True,
        include_num_input_tokens_seen="non_padding",
        logging_steps=max(1, spec.save_steps // 4),
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        fsdp=(spec.fsdp or "") if world_size() > 1 else "",  # untested here (no GPUs): docs/architecture.md
    )
    with args.main_process_first(local=False, desc="resume point"):  # one process tidies checkpoints
        resume = _resume_point(out_dir, key)
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.process_index == 0:
            write_json(out_dir / FIT_KEY, {"key": key})
    trainer = _WeightedTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=WeightedCollator(tokenizer, spec.max_length),
        processing_class=tokenizer,
        callbacks=([_SaveEvery(spec.save_steps)] if select else [])
                  + ([_KillAfterFirstSave()] if os.environ.get(KILL_AFTER_FIRST_SAVE) == "1" else [])
                  + list(callbacks or []),
    )
    trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    val_losses = [log["eval_loss"] for log in state.log_history if "eval_loss" in log]  # one per epoch
    bad = [epoch for epoch, loss in enumerate(val_losses, 1) if not math.isfinite(loss)]
    if bad:
        raise UserError(f"val loss is {val_losses[bad[0] - 1]} after epoch {bad[0]}; lower training.learning_rate "
                        f"or use precision fp32/bf16 instead of fp16")
    val_tokens = count_tokens(tokenizer, val_rows, spec.max_length) if val else 0
    if not trainer.is_world_process_zero():
        return trainer.model
    write_json(out_dir / FIT_STATS, {
        "tokens_processed": int(state.num_input_tokens_seen) + len(val_losses) * val_tokens,
        "global_step": state.global_step,
        "val_losses": val_losses,
        "best_val_loss": state.best_metric if select else None,
        "resumed_from": resume,
    })
    return trainer.model


# ---------------------------------------------------------------------------------------------
# teacher-forced probes


@torch.no_grad()
def _teacher_forced(model, tokenizer, rows: list[dict], batch_size: int, max_length: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Per row: (logits predicting each answer token (L, V) float32, answer ids (L,)), on CPU."""
    collate = WeightedCollator(tokenizer, max_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start : start + batch_size]).items()}
            logits = answer_logits(model, batch)  # (B, k, V)
            targets = predicted_by_last(batch["labels"], logits.shape[1], IGNORE)  # (B, k)
            for b in range(len(targets)):
                mask = targets[b] != IGNORE  # (k,)
                yield logits[b][mask].float().cpu(), targets[b][mask].cpu()
    finally:
        model.train(was_training)


def answer_token_losses(model, tokenizer, rows: list[dict], batch_size: int, max_length: int) -> list[Tensor]:
    """Per row, the teacher-forced cross-entropy of each answer token (incl. EOS). (L_i,) each."""
    return [F.cross_entropy(lg, y, reduction="none") for lg, y in _teacher_forced(model, tokenizer, rows, batch_size, max_length)]


def answer_token_misses(model, tokenizer, rows: list[dict], batch_size: int, max_length: int) -> list[Tensor]:
    """Per row, True where the teacher-forced greedy token (argmax) differs from the gold token. (L_i,) each."""
    return [lg.argmax(-1) != y for lg, y in _teacher_forced(model, tokenizer, rows, batch_size, max_length)]


def answer_token_predictions(model, tokenizer, rows: list[dict], batch_size: int,
                             max_length: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per row, the hard misses (argmax differs from gold) and the probabilities of the gold tokens, from
    one teacher-forced pass. (L_i,) each."""
    misses, gold_probs = [], []
    for lg, y in _teacher_forced(model, tokenizer, rows, batch_size, max_length):
        misses.append(lg.argmax(-1) != y)
        gold_probs.append(lg.softmax(-1).gather(-1, y[:, None])[:, 0])
    return misses, gold_probs


def read_fit_stats(out_dir: str | Path) -> dict:
    """The fit.json that `fit` wrote into out_dir."""
    return read_json(Path(out_dir) / FIT_STATS)
