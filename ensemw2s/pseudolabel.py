"""Pseudo-labels: the ensemble of the first r experts answers `student_pool` (greedy, token level), and,
with `val_out`, the `val` questions too, which is all a student may select its epoch on.

Reads student_pool through `splitdir.read_pool` (the allow-list of its fields; a path under `gold/` is
refused: gold answers of the student pool are the ceiling's alone, architecture.md) and val through
`splitdir.read_val_questions` (uid, prompt and choices): the answers it writes are the ensemble's, never gold.

Output `out` (JSONL, input order): {uid, prompt, answer, choices}, one row per usable answer; `val_out`
the same for val. An empty generation (the ensemble stopped at once: EOS, "\\n" or "Question:") is
dropped, because a student cannot be trained on an empty answer; the drop is counted in the sidecar
`<out>.meta.json`: {n, n_pool, empty_answers, tokens_generated, finish, truncated, matches_choice,
mean_answer_tokens, wall_time_s}, and, with `val_out`, `val`: the same counts for val (`n_rows` in place
of `n_pool`). Each output file has its own provenance record (its generation's time and tokens).
`truncated`: rows whose generation hit max_new_tokens without EOS or a stop string;
`matches_choice`: rows whose answer equals one of the row's choices after `metrics.normalize_answer`
(an empty answer matches nothing); `mean_answer_tokens`: generated tokens per row, a final EOS included.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ensemw2s import provenance, steps
from ensemw2s.config import Config
from ensemw2s.ensemble import Generation, load_ensemble
from ensemw2s.errors import UserError
from ensemw2s.io import write_json, write_jsonl
from ensemw2s.metrics import normalize_answer
from ensemw2s.splitdir import QUESTION_FIELDS, STOP, read_pool, read_val_questions


def meta_path(out: str | Path) -> Path:
    """The sidecar of a pseudo-label file: `<out>.meta.json`."""
    return Path(f"{out}.meta.json")


def matches_choice(answer: str, choices: list[str]) -> bool:
    """Whether a non-empty answer equals one of the choices, both normalised as exact match scores them."""
    norm = normalize_answer(answer)
    return bool(norm) and any(norm == normalize_answer(c) for c in choices)


def answer_stats(rows: list[dict], gens: list[Generation]) -> dict:
    """Sanity counts of the generations for `rows` (see the module docstring)."""
    answers = [g.text.strip() for g in gens]
    tokens = sum(len(g.token_ids) for g in gens)
    return {
        "empty_answers": sum(not a for a in answers),
        "tokens_generated": tokens,
        "finish": dict(sorted(Counter(g.finish for g in gens).items())),
        "truncated": sum(g.finish == "length" for g in gens),
        "matches_choice": sum(matches_choice(a, r["choices"]) for a, r in zip(answers, rows)),
        "mean_answer_tokens": tokens / len(gens),
    }


def labelled(rows: list[dict], gens: list[Generation]) -> list[dict]:
    """Answer rows for the non-empty generations, in input order."""
    out = [{"uid": r["uid"], "prompt": r["prompt"], "answer": g.text.strip(), "choices": r["choices"]}
           for r, g in zip(rows, gens)]
    return [r for r in out if r["answer"]]


def pseudo_label(cfg: Config, manifest: str | Path, data: str | Path, out: str | Path,
                 val_out: str | Path | None = None) -> None:
    """Greedy ensemble answers for every student_pool prompt -> `out` (JSONL) and `<out>.meta.json`;
    with `val_out`, for every val prompt -> `val_out` (a student's selection file)."""
    begin = time.perf_counter()
    rows = read_pool(data, required=QUESTION_FIELDS)
    if not rows:
        raise UserError(f"{Path(data) / 'student_pool.jsonl'} has no rows to label")
    val = read_val_questions(data) if val_out is not None else []
    if val_out is not None and not val:
        raise UserError(f"{Path(data) / 'val.jsonl'} has no rows to label")
    ensemble = load_ensemble(manifest, device=cfg.evaluation.device)

    def answer(questions: list[dict], path: str | Path, source: Path, started: float) -> dict:
        """Generate for `questions`, write their answers to `path` with its provenance record; the stats."""
        t0 = time.perf_counter()
        gens = ensemble.generate([r["prompt"] for r in questions], cfg.evaluation.max_new_tokens, stop=STOP,
                                 batch_size=cfg.evaluation.batch_size)
        wall = time.perf_counter() - t0
        kept = labelled(questions, gens)
        write_jsonl(path, kept)
        stats = {"n": len(kept), **answer_stats(questions, gens), "wall_time_s": round(wall, 3)}
        # every expert runs over every prompt and every generated token
        prompt_tokens = sum(len(ensemble.encode(r["prompt"])) for r in questions)
        provenance.record(path, cfg, steps.keys(cfg, "pseudo_label"),
                          [manifest, source],
                          {"step": "pseudo_label", "n_rows": len(questions),
                           **{k: stats[k] for k in ("n", "empty_answers", "truncated", "finish")},
                           "wall_time_s": time.perf_counter() - started,
                           "tokens_processed": len(ensemble.experts) * (prompt_tokens + stats["tokens_generated"])})
        return stats

    pool_stats = answer(rows, out, Path(data) / "student_pool.jsonl", begin)
    meta = {"n": pool_stats.pop("n"), "n_pool": len(rows), **pool_stats}
    if val:
        meta["val"] = {"n_rows": len(val), **answer(val, val_out, Path(data) / "val.jsonl", time.perf_counter())}
    write_json(meta_path(out), meta)
