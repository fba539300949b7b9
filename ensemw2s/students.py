"""Strong students on pseudo-answers, and the ceiling on gold answers (`ensemw2s train-student`).

The ceiling is the one reader of the gold answers of student_pool (`splitdir.read_gold`); the label
files a student is given pass through `splitdir.refuse_gold`.

A student sees only what its supervisor gives it: the ensemble's answers for student_pool and, to
choose its epoch (`select_on_val`), the same ensemble's answers for val (`--val-labels`); it never
reads val.jsonl, whose answers are gold. Only the ceiling selects on gold val.

A replicate (`--replicate N`, N >= 1) is the same student trained with another seed (`replicate_seed`):
the A/A control, whose difference from replicate 0 (the student) measures seed noise alone.
"""
from __future__ import annotations

import shutil
import time
from collections import defaultdict, deque
from pathlib import Path

from transformers import set_seed

from ensemw2s import provenance, steps
from ensemw2s.config import Config, stable_hash
from ensemw2s.errors import UserError
from ensemw2s.io import atomic_dir, read_jsonl, write_json
from ensemw2s.models import apply_lora, load_causal_lm, load_tokenizer
from ensemw2s.splitdir import GOLD_DIR, GOLD_FILE, read_gold, read_pool, read_split, refuse_gold
from ensemw2s.training import FIT_STATS, fit, is_main_process, read_fit_stats


def answer_pool(pool: list[dict], answers: list[dict], source: str, complete: bool) -> list[dict]:
    """student_pool rows (uid, prompt) joined with answer rows by uid, in pool order.

    Rows that share a uid (same question) take that uid's answers in file order. Every answer needs
    a pool row (else the labels belong to other data); with `complete`, every pool row needs an
    answer too. Pseudo-labels may skip rows (pseudolabel.py drops empty answers): those rows are
    left out of training.
    """
    by_uid: dict[str, deque] = defaultdict(deque)
    for a in answers:
        by_uid[a.get("uid")].append(a)
    rows = []
    for i, row in enumerate(pool):
        if not by_uid[row["uid"]]:
            if complete:
                raise UserError(f"{source}: no answer for student_pool row {i} (uid {row['uid']}); "
                                f"the answers must come from this split directory's student_pool")
            continue
        a = by_uid[row["uid"]].popleft()
        if not isinstance(a.get("answer"), str) or not a["answer"].strip():
            raise UserError(f"{source}: the answer of uid {row['uid']} is empty or not a string; a label file holds "
                            f"one non-empty answer per row (`ensemw2s pseudo-label` drops empty generations)")
        if "prompt" in a and a["prompt"] != row["prompt"]:
            raise UserError(f"{source}: the prompt of uid {row['uid']} differs from student_pool's; "
                            f"the labels were made from other splits or another prompt format")
        rows.append({"uid": row["uid"], "prompt": row["prompt"], "answer": a["answer"]})
    extra = sum(len(q) for q in by_uid.values())
    if extra:
        raise UserError(f"{source}: {extra} answers for uids that student_pool does not have; "
                        f"the labels must come from this split directory's student_pool")
    if not rows:
        raise UserError(f"{source}: no student_pool row has an answer; nothing to train on")
    return rows


def training_rows(data: str | Path, labels: str | Path | None, gold: bool) -> tuple[str, list[dict]]:
    """(role, rows): student_pool answered by the pseudo-label file (student) or gold (ceiling)."""
    if gold == (labels is not None):
        raise UserError("train-student needs exactly one of --labels (a student) and --gold (the ceiling)")
    pool = read_pool(data)
    if gold:
        return "ceiling", answer_pool(pool, read_gold(data, role="ceiling"), f"{Path(data) / GOLD_DIR}", complete=True)
    return "student", answer_pool(pool, read_jsonl(refuse_gold(labels)), str(labels), complete=False)


def selection_rows(data: str | Path, role: str, val_labels: str | Path | None,
                   select_on_val: bool) -> tuple[Path | None, list[dict] | None]:
    """(file, rows) the epoch is selected on: the supervisor's val answers for a student, gold val for
    the ceiling; (None, None) without select_on_val (a fixed number of epochs)."""
    if not select_on_val:
        if val_labels is not None:
            raise UserError("--val-labels given but training.student.select_on_val is false (students train a "
                            "fixed number of epochs); drop --val-labels or set select_on_val: true")
        return None, None
    if role == "ceiling":
        if val_labels is not None:
            raise UserError("the ceiling selects its epoch on val's gold answers; drop --val-labels")
        return Path(data) / "val.jsonl", read_split(data, "val")
    if val_labels is None:
        raise UserError("a student selects its epoch only on its supervisor's answers for val: pass --val-labels "
                        "(the file `ensemw2s pseudo-label --val-out` writes), or set "
                        "training.student.select_on_val: false to train a fixed number of epochs")
    path = refuse_gold(val_labels)
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        if "gold" in row:
            raise UserError(f"{path} row {lineno}: carries `gold`, so it is a split with gold answers, not the "
                            f"supervisor's; a student selects only on `ensemw2s pseudo-label --val-out` answers")
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("answer"), str) or not row["answer"].strip():
            raise UserError(f"{path} row {lineno}: a val label row needs a prompt and a non-empty answer "
                            f"(as `ensemw2s pseudo-label --val-out` writes them)")
    if not rows:
        raise UserError(f"{path}: no val answers to select on (the supervisor's answers were all empty); set "
                        f"training.student.select_on_val: false to train a fixed number of epochs")
    return path, rows


def replicate_seed(seed: int, replicate: int) -> int:
    """The training seed of replicate `replicate` of the student of replicate seed `seed`: 0 is the student
    itself (`seed`); N >= 1 a distinct seed per N, fixed by (seed, N) alone (as rounds.round_seed)."""
    if replicate < 0:
        raise UserError(f"--replicate must be 0 (the student) or more, got {replicate}")
    return seed if replicate == 0 else int(stable_hash([seed, "replicate", replicate]), 16) % 2**31


def train_student(cfg: Config, strong: str, seed: int, data: str | Path, base: str | Path,
                  labels: str | Path | None, gold: bool, out: str | Path,
                  val_labels: str | Path | None = None, replicate: int = 0) -> None:
    """Fine-tune the strong base on student_pool (pseudo or gold answers); write out/model + out/train.json.

    val_labels: the supervisor's answers for val, which a student selects its epoch on (select_on_val).
    replicate: N >= 1 trains the same student with the seed `replicate_seed(seed, N)`, all else equal.
    """
    start = time.perf_counter()
    data, out = Path(data), Path(out)
    spec, mspec = cfg.student_training, cfg.model(strong)
    if replicate and gold:
        raise UserError("--replicate is the A/A control of a student (--labels); the ceiling has no replicates")
    train_seed = replicate_seed(seed, replicate)
    role, rows = training_rows(data, labels, gold)
    selected_on, val = selection_rows(data, role, val_labels, spec.select_on_val)
    base = Path(base).resolve() if Path(base).exists() else base  # adapters record their base: keep it absolute
    tokenizer = load_tokenizer(base)
    set_seed(train_seed)  # LoRA initialisation
    model = apply_lora(load_causal_lm(base, dtype=mspec.dtype), mspec)
    ckpt = out.parent / (out.name + ".ckpt")  # outside the atomic temp dir, so a requeued job resumes
    try:
        model = fit(model, tokenizer, rows, spec, train_seed, ckpt, val_rows=val)
    except UserError as exc:  # e.g. a non-finite loss: name the step
        raise UserError(f"train-student ({role} {strong}, seed {seed}, replicate {replicate}): {exc}") from None
    if not is_main_process():  # under torchrun, process 0 writes the outputs
        return
    fit_stats = read_fit_stats(ckpt)
    summary = {"role": role, "n_rows": len(rows), "seed": seed, "replicate": replicate, "train_seed": train_seed,
               "tokens_processed": fit_stats["tokens_processed"],
               "selected_on": None if selected_on is None else str(selected_on),
               "wall_time_s": time.perf_counter() - start}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_json(tmp / "train.json", summary)
        write_json(tmp / FIT_STATS, fit_stats)  # kept after the checkpoints go: e.g. whether training resumed
    shutil.rmtree(ckpt)
    answers = data / GOLD_FILE if gold else Path(labels)
    inputs = [answers, data / "student_pool.jsonl", *([selected_on] if selected_on is not None else []),
              *([base] if isinstance(base, Path) else [])]
    provenance.record(out, cfg, steps.keys(cfg, "train_student", strong=strong), inputs,
                      {"step": "train_student", **summary, "resumed_from": fit_stats["resumed_from"]})
