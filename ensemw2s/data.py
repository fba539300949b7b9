"""Dataset rows -> generative-QA examples, as the dataset's definition (ensemw2s/catalog.py) says.

An example keeps the row's own fields and adds (docs/architecture.md): `uid` (sha256 of the
normalised question text, so repeated questions share it), `prompt` ("Question: ...", optionally the
lettered choices, "Answer:"), `answer` (the correct choice's text), `choices`, `gold` (its index) and
`source`. Rows come from the Hugging Face hub, from local JSONL copies
(`<data_dir>/<folder>/<split>.jsonl`, the official splits pooled), or from a generator (synthetic).
Nothing here is particular to one dataset, and nothing knows about difficulty or splits (splits.py).
"""
from __future__ import annotations

import functools
import random
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ensemw2s.catalog import Definition, definition
from ensemw2s.config import DatasetSpec
from ensemw2s.errors import UserError
from ensemw2s.io import read_jsonl, sha256_text

LETTERS = string.ascii_uppercase


class BadRow(ValueError):
    """A row that cannot be formatted; `examples` adds where it came from."""


@dataclass(frozen=True)
class Question:
    text: str
    choices: list[str]
    gold: int


@dataclass(frozen=True)
class RawRow:
    row: dict[str, Any]
    source: str | None  # the part's label; None where the definition names a source field
    where: Callable[[], str]  # names the file and line (or hub split and row) for error messages


def question_uid(text: str) -> str:
    """sha256 of the question text, case- and whitespace-insensitive: one uid per distinct question."""
    return sha256_text(" ".join(unicodedata.normalize("NFKC", text).lower().split()))


def build_prompt(question: str, choices: list[str], show_choices: bool) -> str:
    lines = [f"Question: {question}"]
    if show_choices:
        lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


_MISSING = object()


def _field(row: dict, path: str) -> Any:
    """The value at a field path ("a.b" = field b of the mapping in field a), or _MISSING."""
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def examples(spec: DatasetSpec, data_dir: str, fetched: str | Path | None = None) -> list[dict[str, Any]]:
    """All rows of the dataset as examples, in load order; `fetched`: the run's copy of a hub dataset
    (`ensemw2s fetch --dataset`), read in place of the hub."""
    d = definition(spec.name, spec.definition)
    if d.generator:
        load = _generated
    elif spec.load_from == "hub":
        load = functools.partial(_load_hub, fetched=fetched)
    else:
        load = _load_local
    required = d.fields.required()
    out = []
    for raw in load(d, spec, data_dir):
        missing = [f for f in required if _field(raw.row, f) is _MISSING]
        if missing:
            raise UserError(f"dataset {d.name!r}, {_where(d, raw)}: missing field {missing[0]!r} "
                            f"(a {d.name} row needs {', '.join(required)})")
        source = _field(raw.row, d.fields.source) if d.fields.source else raw.source
        try:
            out.append(example(d, raw.row, source, spec.show_choices))
        except BadRow as exc:
            raise UserError(f"dataset {d.name!r}, {_where(d, raw)}: {exc}") from None
    return out


def _where(d: Definition, raw: RawRow) -> str:
    row_id = _field(raw.row, d.fields.id) if d.fields.id else _MISSING
    return raw.where() + ("" if row_id is _MISSING else f" (id {row_id})")


def example(d: Definition, row: dict[str, Any], source: str, show_choices: bool) -> dict[str, Any]:
    """One row as an example; BadRow if it cannot be one."""
    q = d.function("formatter")(row) if d.formatter else question(d, row)
    choices = [str(c).strip() for c in q.choices]
    if not 0 <= q.gold < len(choices):
        raise BadRow(f"gold index {q.gold} is outside the {len(choices)} choices")
    if len(choices) > len(LETTERS):
        raise BadRow(f"{len(choices)} choices; at most {len(LETTERS)} can be lettered")
    if not choices[q.gold]:
        raise BadRow("the correct choice is empty; fix or drop the row")
    text = q.text.strip()
    return {**row, "uid": question_uid(text), "prompt": build_prompt(text, choices, show_choices),
            "answer": choices[q.gold], "choices": choices, "gold": q.gold, "source": source}


def question(d: Definition, row: dict[str, Any]) -> Question:
    """The question, choices and gold index of a row, read from the definition's fields."""
    f = d.fields
    text = _field(row, f.question)
    if f.correct:  # SciQ: the correct text and the distractors, in an order fixed by the question alone
        texts = [_field(row, f.correct), *(_field(row, k) for k in f.distractors)]
        order = list(range(len(texts)))
        random.Random(question_uid(text)).shuffle(order)
        return Question(text, [texts[i] for i in order], order.index(0))
    if f.choice_list:
        texts = list(_field(row, f.choice_list))
    else:
        labels, texts = list(_field(row, f.choice_labels)), list(_field(row, f.choice_texts))
        if len(labels) != len(texts):
            raise BadRow(f"{len(texts)} choice texts but {len(labels)} labels")
    if f.answer_label:
        key = _field(row, f.answer_label)
        if key not in labels:
            raise BadRow(f"{f.answer_label} {key!r} is not one of the choice labels {labels}")
        return Question(text, texts, labels.index(key))
    gold = _field(row, f.answer_index)
    if not isinstance(gold, int) or isinstance(gold, bool):
        raise BadRow(f"{f.answer_index} {gold!r} is not a choice index (an integer)")
    return Question(text, texts, gold)


def corpus(spec: DatasetSpec, n_docs: int, seed: int) -> list[str]:
    """Unlabeled text of the dataset (with the entry's options) to train a tiny model's tokenizer and pretrain it."""
    d = definition(spec.name, spec.definition)
    if d.corpus is None:
        raise UserError(f"dataset {d.name!r} has no unlabeled corpus for pretraining tiny models; "
                        f"set models.<name>.tiny.pretrain_dataset to one that has (synthetic)")
    return d.function("corpus")(n_docs, seed, spec.options)


# ---------------------------------------------------------------------------------------------
# loading


def _line_number(path: Path, index: int) -> int:
    """Line of the index-th non-blank line (io.read_jsonl skips blank lines)."""
    with open(path, encoding="utf-8") as fh:
        seen = -1
        for lineno, line in enumerate(fh, 1):
            seen += bool(line.strip())
            if seen == index:
                return lineno
    raise IndexError(index)


def _local_where(path: Path, index: int) -> str:
    return f"{path} line {_line_number(path, index)}"


def _load_local(d: Definition, spec: DatasetSpec, data_dir: str) -> Iterator[RawRow]:
    for part in d.parts:
        folder = Path(data_dir) / part.folder
        if not folder.is_dir():
            raise UserError(
                f"dataset {d.name!r}: local folder {folder} not found; point --data-dir (or data_dir) at the "
                f"directory holding {part.folder}/<split>.jsonl, or set load_from: hub"
            )
        for split in d.splits:
            path = folder / f"{split}.jsonl"
            if not path.is_file():
                raise UserError(f"dataset {d.name!r}: {path} not found; a local copy holds one JSONL per "
                                f"official split ({', '.join(d.splits)})")
            for i, row in enumerate(read_jsonl(path)):
                yield RawRow(row, part.source, functools.partial(_local_where, path, i))


def _split_where(label: str, split: str, index: int) -> str:
    return f"{label} split {split} row {index}"


def _load_hub(d: Definition, spec: DatasetSpec, data_dir: str, fetched: str | Path | None = None) -> Iterator[RawRow]:
    if d.hub is None:
        raise UserError(f"dataset {d.name!r}: its definition ({d.path}) names no hub id; set load_from: local, "
                        f"or add `hub:` to the definition")
    import datasets

    for part in d.parts:
        label = d.hub + (f" ({part.hub_config})" if part.hub_config else "")
        try:
            loaded = datasets.load_dataset(str(fetched) if fetched is not None else d.hub, part.hub_config)
        except OSError as exc:  # ConnectionError offline, DatasetNotFoundError, ...
            raise UserError(
                f"dataset {d.name!r}: cannot load {label} from the Hugging Face hub ({type(exc).__name__}); "
                f"the hub cannot be reached from here. Set load_from: local for this dataset and point --data-dir "
                f"(or data_dir) at local copies ({part.folder}/<split>.jsonl)"
            ) from None
        for split in d.splits:
            for i, row in enumerate(loaded[split] if split in loaded else ()):
                yield RawRow(dict(row), part.source, functools.partial(_split_where, label, split, i))


def _generated(d: Definition, spec: DatasetSpec, data_dir: str) -> Iterator[RawRow]:
    """Rows made by the definition's generator from the options (load_from and data_dir play no part)."""
    for i, row in enumerate(d.function("generator")(spec.options)):
        yield RawRow(row, None, functools.partial(_split_where, d.name, "generated", i))


