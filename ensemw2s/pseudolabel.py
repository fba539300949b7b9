"""Pseudo-labels: the ensemble of the first r experts answers `student_pool` (greedy, token level).

Reads only `<data>/student_pool.jsonl`, which carries no gold; a path under `gold/`, or rows that carry
an answer, are refused: gold answers of the student pool are the ceiling's alone (architecture.md).

Output `out` (JSONL, input order): {uid, prompt, answer, choices}, one row per usable answer.
An empty generation (the ensemble stopped at once: EOS, "\n" or "Question:") is dropped, because a
student cannot be trained on an empty answer; the drop is counted in the sidecar `<out>.meta.json`:
{n, n_pool, empty_answers, tokens_generated, finish, wall_time_s}.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ensemw2s import provenance
from ensemw2s.config import Config
from ensemw2s.ensemble import load_ensemble
from ensemw2s.errors import UserError
from ensemw2s.io import read_jsonl, write_json, write_jsonl

STOP = ("\n", "Question:")  # the prompt format: one answer line, then the next question
GOLD_FIELDS = ("answer", "gold")  # must not be in student_pool rows
REQUIRED = ("uid", "prompt", "choices")


def meta_path(out: str | Path) -> Path:
    """The sidecar of a pseudo-label file: `<out>.meta.json`."""
    return Path(f"{out}.meta.json")


def read_pool(data: str | Path) -> list[dict]:
    """student_pool rows of a split directory, checked to carry no gold answer."""
    path = Path(data) / "student_pool.jsonl"
    if path.resolve().parent.name == "gold":
        raise UserError(f"{path}: pseudo-labelling must not read the gold answers; pass the split directory "
                        f"(the parent of gold/) as --data")
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        leaked = [k for k in GOLD_FIELDS if k in row]
        if leaked:
            raise UserError(f"{path} row {lineno}: carries gold field(s) {', '.join(leaked)}; student_pool must "
                            f"not hold answers (regenerate the splits with `ensemw2s prepare-data`)")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise UserError(f"{path} row {lineno}: missing field(s) {', '.join(missing)}")
    return rows


def pseudo_label(cfg: Config, manifest: str | Path, data: str | Path, out: str | Path) -> None:
    """Greedy ensemble answers for every student_pool prompt -> `out` (JSONL) and `<out>.meta.json`."""
    begin = time.perf_counter()
    rows = read_pool(data)
    if not rows:
        raise UserError(f"{Path(data) / 'student_pool.jsonl'} has no rows to label")
    ensemble = load_ensemble(manifest, device=cfg.evaluation.device)
    start = time.perf_counter()
    gens = ensemble.generate([r["prompt"] for r in rows], cfg.evaluation.max_new_tokens, stop=STOP,
                             batch_size=cfg.evaluation.batch_size)
    wall = time.perf_counter() - start
    labelled = [
        {"uid": r["uid"], "prompt": r["prompt"], "answer": g.text.strip(), "choices": r["choices"]}
        for r, g in zip(rows, gens)
    ]
    kept = [r for r in labelled if r["answer"]]
    meta = {
        "n": len(kept),
        "n_pool": len(rows),
        "empty_answers": len(rows) - len(kept),
        "tokens_generated": sum(len(g.token_ids) for g in gens),
        "finish": dict(sorted(Counter(g.finish for g in gens).items())),
        "wall_time_s": round(wall, 3),
    }
    write_jsonl(out, kept)
    write_json(meta_path(out), meta)
    # every expert runs over every prompt and every generated token
    prompt_tokens = sum(len(ensemble.encode(r["prompt"])) for r in rows)
    provenance.record(out, cfg, ["evaluation.max_new_tokens", "evaluation.batch_size", "evaluation.device"],
                      [manifest, Path(data) / "student_pool.jsonl"],
                      {"step": "pseudo_label", **{k: meta[k] for k in ("n", "n_pool", "empty_answers", "finish")},
                       "wall_time_s": time.perf_counter() - begin,
                       "tokens_processed": len(ensemble.experts) * (prompt_tokens + meta["tokens_generated"])})
