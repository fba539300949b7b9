"""The split-directory contract (docs/architecture.md, "Data rows"): which files `prepare-data` writes,
which fields each may carry, and who may read it. One reader per file kind, so the gold rules live here:

- weak_train, val (`read_split`): experts train on weak_train and select on val; the ceiling selects on val;
- val's questions (`read_val_questions`): pseudo-labels, the ensemble answering val, never seeing its answers;
- val, test_id, test_ood (`read_task_rows`): evaluate's lm-eval tasks;
- student_pool (`read_pool`, no answers in it): pseudo-labels, students and the ceiling;
- gold/student_pool.jsonl (`read_gold`): the ceiling alone.
Every other loader of rows a model learns from passes its path through `refuse_gold`.

Torch-free: the workflow, the tables and the figures import it.
"""
from __future__ import annotations

from pathlib import Path

from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import read_json, read_jsonl

SPLITS = ("weak_train", "val", "test_id", "student_pool", "test_ood")
EVAL_SPLITS = ("val", "test_id", "test_ood")  # scored by `ensemw2s evaluate` (evaluation.splits picks of these)
TRAIN_SPLITS = ("weak_train", "val")  # with gold answers, and read to train or select an epoch on
STOP = ("\n", "Question:")  # the prompt format: an answer is one line, then the next question may follow

TRAIN_FIELDS = ("uid", "prompt", "answer")  # what training and epoch selection read of a row
TASK_FIELDS = ("uid", "prompt", "answer", "choices", "gold")  # what an lm-eval task reads of a row
QUESTION_FIELDS = ("uid", "prompt", "choices")  # what a question to answer needs, and all that is kept of it
GOLD_DIR = "gold"
GOLD_FILE = f"{GOLD_DIR}/student_pool.jsonl"
GOLD_FIELDS = ("uid", "answer", "gold")  # a row of GOLD_FILE
# The default allow-list of student_pool fields (a split directory's manifest.json may name its own in
# `pool_fields`). Anything else may reveal gold (answer, gold, SciQ's distractors, ARC's answerKey) or hint
# at it (SciQ's `support` passage, which usually contains the answer; `difficulty`, the rater's loss on the
# gold answer or the answer's length; the synthetic task's `rarity`), so the pool is written from this
# list, not by deleting known fields.
POOL_FIELDS = ("uid", "prompt", "choices", "source")
NEVER_IN_POOL = ("answer", "gold")  # no allow-list may name these


def _rows_with(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The rows of a split file, each checked to carry `fields` (a row without them: older or edited splits)."""
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        missing = [k for k in fields if k not in row]
        if missing:
            raise DataFileError(f"{path} line {lineno}: missing field(s) {', '.join(missing)}; rerun "
                                f"`ensemw2s prepare-data` (split files: docs/architecture.md, \"Data rows\")")
    return rows


def _in_gold_dir(path: Path) -> bool:
    return path.resolve().parent.name == GOLD_DIR


def refuse_gold(path: str | Path) -> Path:
    """Raise unless `path` lies outside a split directory's gold/ folder; return it."""
    path = Path(path)
    if _in_gold_dir(path):
        raise UserError(
            f"{path}: the gold answers of student_pool are read only by the ceiling "
            f"(`ensemw2s train-student --gold`); experts and students must not see them"
        )
    return path


def read_split(data: str | Path, split: str) -> list[dict]:
    """Rows a model trains or selects its epoch on (TRAIN_SPLITS), with their gold answers: an expert's
    weak_train and val, the ceiling's val. student_pool and gold/ are refused."""
    if split not in TRAIN_SPLITS:
        raise UserError(f"models train and select only on {', '.join(TRAIN_SPLITS)}, not {split!r} "
                        f"(student_pool is read through read_pool, its gold answers by the ceiling alone)")
    path = refuse_gold(Path(data) / f"{split}.jsonl")
    rows = _rows_with(path, TRAIN_FIELDS)
    for lineno, row in enumerate(rows, 1):
        if not isinstance(row["answer"], str) or not row["answer"].strip():
            raise DataFileError(f"{path} line {lineno}: empty answer; every training row needs one "
                                f"(fix or drop the row, or rerun `ensemw2s prepare-data`)")
    return rows


def read_val_questions(data: str | Path) -> list[dict]:
    """The val questions of a split directory without their gold answers (QUESTION_FIELDS only)."""
    rows = _rows_with(refuse_gold(Path(data) / "val.jsonl"), QUESTION_FIELDS)
    return [{k: row[k] for k in QUESTION_FIELDS} for row in rows]


def read_task_rows(data: str | Path, split: str, limit: int | None) -> list[dict]:
    """The first `limit` rows (all: None) of an eval split, projected on TASK_FIELDS (an lm-eval task's rows)."""
    if split not in EVAL_SPLITS:
        raise UserError(f"evaluation scores only {', '.join(EVAL_SPLITS)}, not {split!r}")
    path = Path(data) / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: split file not found; run `ensemw2s prepare-data` for this dataset and seed")
    rows = _rows_with(path, TASK_FIELDS)[:limit]
    if not rows:
        raise DataFileError(f"{path}: no rows to evaluate")
    return [{f: row[f] for f in TASK_FIELDS} for row in rows]


def read_split_field(data: str | Path, split: str, fields: tuple[str, ...]) -> dict[str, dict]:
    """uid -> {field: value} of an eval split's rows (e.g. the partition control's key and choices, which
    read_task_rows projects away); the rows keep every field of the dataset's rows but student_pool's."""
    if split not in EVAL_SPLITS:
        raise UserError(f"read_split_field reads {', '.join(EVAL_SPLITS)}, not {split!r}")
    path = Path(data) / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: split file not found; run `ensemw2s prepare-data` for this dataset and seed")
    return {row["uid"]: {f: row[f] for f in fields} for row in _rows_with(path, ("uid", *fields))}


def pool_row(row: dict, fields: tuple[str, ...] = POOL_FIELDS) -> dict:
    """A student_pool row as written: the allow-listed `fields` only."""
    return {k: row[k] for k in fields if k in row}


def _allow_list(data: str | Path) -> tuple[str, ...]:
    """The student_pool allow-list of a split directory: its manifest's `pool_fields`, else POOL_FIELDS."""
    manifest = Path(data) / "manifest.json"
    fields = read_json(manifest).get("pool_fields") if manifest.is_file() else None
    if fields is None:
        return POOL_FIELDS
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise DataFileError(f"{manifest}: pool_fields must be a list of field names; rerun `ensemw2s prepare-data`")
    revealing = [f for f in fields if f in NEVER_IN_POOL]
    if revealing:
        raise UserError(f"{manifest}: pool_fields names {', '.join(revealing)}, the gold answer; student_pool must "
                        f"not carry it. Drop it from the dataset's pool fields and rerun `ensemw2s prepare-data`")
    return tuple(fields)


def read_pool(data: str | Path, required: tuple[str, ...] = ("uid", "prompt")) -> list[dict]:
    """student_pool rows of a split directory, each checked to carry only its allow-list (the manifest's
    `pool_fields`, else POOL_FIELDS) and `required`.

    The one reader of student_pool (pseudo-labels, students, the ceiling): a field outside the
    allow-list means the splits were written by older code or edited, and may leak gold.
    """
    path = Path(data) / "student_pool.jsonl"
    if _in_gold_dir(path):
        raise UserError(f"{path}: a reader of student_pool must not read the gold answers (only "
                        f"`train-student --gold` does); pass the split directory (the parent of gold/) as --data")
    allowed = _allow_list(data)
    rows = _rows_with(path, required)
    for lineno, row in enumerate(rows, 1):
        extra = [k for k in row if k not in allowed]
        if extra:
            raise UserError(f"{path} row {lineno}: field(s) {', '.join(extra)} are not in the student_pool "
                            f"allow-list ({', '.join(allowed)}); other fields may reveal or hint at the gold "
                            f"answer. Regenerate the splits with `ensemw2s prepare-data`")
    return rows


def read_gold(data: str | Path, role: str) -> list[dict]:
    """Gold rows (GOLD_FIELDS) of student_pool: for the ceiling, and for nothing else."""
    if role != "ceiling":
        raise UserError(f"role {role!r} asked for the gold answers of student_pool; only the ceiling may read them")
    return _rows_with(Path(data) / GOLD_FILE, GOLD_FIELDS)
