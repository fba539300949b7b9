"""The score-file contract (docs/architecture.md, "Score files"): what `ensemw2s evaluate` writes and
`collect.py`, `report.py` and the workflow read.

A split block holds `n`, the mean of each of `SCORES`, `uids` and `per_example`: per uid, the 0/1 result
of each of `SCORES` and (`PICKS`) the multiple-choice `pick` (index of the choice of largest
loglikelihood, what `acc` scores: acc == (pick == gold)) and `gold` (the gold choice's index). Files
written before picks were recorded lack `pick` and `gold`: their consumers skip them.

Roles (`ROLES`): `replicate` is the A/A control, a second student of the METHOD variant's round-1
supervisor trained with another seed (`train-student --replicate N`); it is compared with that student.

Torch-free on purpose: reading score files (metrics, tables, figures, the DAG) must not load a model stack.
Writing them is evaluate.py's job; this module only says what a valid one holds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import read_json
from ensemw2s.registry import unknown_name_message

ROLES = ("weak_base", "strong_base", "expert", "ensemble", "student", "replicate", "ceiling")
# every meta key of a score file, with the value `--meta` leaves it at when not given (None: required)
META_DEFAULTS: dict[str, Any] = {"role": None, "weak_model": "", "strong_model": "", "dataset": None,
                                 "seed": None, "round": 0, "ensemble": ""}
INT_META = ("seed", "round")
SCORES = ("acc", "acc_norm", "exact_match")  # per-example keys of a score file, in this order
PRIMARY_SCORE = "acc"  # the pre-specified primary metric: multiple-choice accuracy
PICKS = ("pick", "gold")  # per-example multiple-choice pick and gold index (ints; absent in older files)


def parse_meta(meta: dict[str, str], dataset: str) -> dict[str, Any]:
    """--meta KEY=VALUE labels -> the score file's meta (round and seed as ints, role checked)."""
    unknown = [k for k in meta if k not in META_DEFAULTS]
    if unknown:
        raise UserError(f"--meta: {unknown_name_message('key', unknown[0], META_DEFAULTS)}")
    out = {**META_DEFAULTS, "dataset": dataset, **meta}
    if out["dataset"] != dataset:
        raise UserError(f"--meta dataset={out['dataset']} disagrees with --dataset {dataset}")
    if out["role"] not in ROLES:
        raise UserError(f"--meta role={out['role']}: {unknown_name_message('role', str(out['role']), ROLES)}")
    for key in INT_META:
        if out[key] is None:
            raise UserError(f"--meta {key}=N is required (e.g. --meta role=expert {key}=0)")
        try:
            out[key] = int(out[key])
        except (TypeError, ValueError):
            raise UserError(f"--meta {key}={out[key]}: expected an integer") from None
    return out


def load_score(path: Path) -> dict[str, Any]:
    """Read a score file and check the fields every consumer relies on."""
    score = read_json(path)
    meta = score.get("meta") if isinstance(score, dict) else None
    if not isinstance(meta, dict) or "splits" not in score:
        raise DataFileError(f"{path}: not a score file (needs 'meta' and 'splits'; see docs/architecture.md)")
    missing = [k for k in META_DEFAULTS if k not in meta]
    if missing:
        raise DataFileError(f"{path}: meta lacks {', '.join(missing)}; rescore it with `ensemw2s evaluate`")
    if meta["role"] not in ROLES:
        raise DataFileError(f"{path}: meta.role {meta['role']!r} is not one of {', '.join(ROLES)}; "
                            f"rescore it with `ensemw2s evaluate --meta role=...`")
    for split, block in score["splits"].items():
        n = len(block.get("uids", []))
        for metric, values in block.get("per_example", {}).items():
            if len(values) != n:
                raise DataFileError(f"{path}: splits.{split}.per_example.{metric} has {len(values)} values "
                                    f"for {n} uids; the file is truncated or edited, rescore it")
    return score
