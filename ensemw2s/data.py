"""Dataset registry: where a dataset's rows come from, and how a row becomes a generative-QA example.

An example keeps the row's own fields and adds (docs/architecture.md): `uid` (sha256 of the
normalised question text, so repeated questions share it), `prompt` ("Question: ...", optionally the
lettered choices, "Answer:"), `answer` (the correct choice's text), `choices`, `gold` (its index) and
`source`. Rows come from the Hugging Face hub, from local JSONL copies
(`<data_dir>/<folder>/<split>.jsonl`, the official splits pooled), or are generated (synthetic).
Difficulty and splits are splits.py's business; nothing here knows about them.

Adding a dataset = one formatter (row -> Question) and one `DATASETS.add` entry below.
"""
from __future__ import annotations

import functools
import random
import string
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ensemw2s import synthetic
from ensemw2s.config import DatasetSpec
from ensemw2s.errors import UserError
from ensemw2s.io import read_jsonl, sha256_text
from ensemw2s.registry import Registry

LETTERS = string.ascii_uppercase


class BadRow(ValueError):
    """A row that cannot be formatted; `DatasetEntry.examples` adds where it came from."""


@dataclass(frozen=True)
class Question:
    text: str
    choices: list[str]
    gold: int


@dataclass(frozen=True)
class Part:
    """One published subset: its local folder, the `source` label of its rows, its hub config."""

    folder: str
    source: str
    hub_config: str | None = None


@dataclass(frozen=True)
class RawRow:
    row: dict[str, Any]
    source: str
    where: Callable[[], str]  # names the file and line (or hub split and row) for error messages


def question_uid(text: str) -> str:
    """sha256 of the question text, case- and whitespace-insensitive: one uid per distinct question."""
    return sha256_text(" ".join(unicodedata.normalize("NFKC", text).lower().split()))


def build_prompt(question: str, choices: list[str], show_choices: bool) -> str:
    lines = [f"Question: {question}"]
    if show_choices:
        lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def _missing_field(row: dict, path: str) -> bool:
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return True
        value = value[key]
    return False


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: defaults merged under the config's entry, loading, formatting."""

    name: str
    defaults: dict[str, Any]  # load_from, difficulty, sizes (all five splits), options
    strategies: tuple[str, ...]  # difficulty strategies it supports (splits.STRATEGIES names)
    fields: tuple[str, ...]  # fields a row must have ("a.b" = nested), checked before formatting
    formatter: Callable[[dict[str, Any]], Question]
    load: Callable[["DatasetEntry", DatasetSpec, str], Iterator[RawRow]]
    hub_id: str | None = None
    parts: tuple[Part, ...] = ()
    splits: tuple[str, ...] = ("train", "validation", "test")  # official splits, pooled in this order
    hard_sources: frozenset[str] = field(default_factory=frozenset)  # `source` strategy: these are hard
    make_corpus: Callable[[int, int, dict[str, Any] | None], list[str]] | None = None

    def examples(self, spec: DatasetSpec, data_dir: str) -> list[dict[str, Any]]:
        """All rows of the dataset as examples, in load order."""
        out = []
        for raw in self.load(self, spec, data_dir):
            missing = [f for f in self.fields if _missing_field(raw.row, f)]
            if missing:
                raise UserError(f"dataset {self.name!r}, {raw.where()}: missing field {missing[0]!r} "
                                f"(a {self.name} row needs {', '.join(self.fields)})")
            try:
                out.append(make_example(raw.row, self.formatter(raw.row), raw.source, spec.show_choices))
            except BadRow as exc:
                raise UserError(f"dataset {self.name!r}, {raw.where()}: {exc}") from None
        return out

    def corpus(self, n_docs: int, seed: int, options: dict[str, Any] | None = None) -> list[str]:
        """Unlabeled text to train a tiny model's tokenizer and pretrain it; `options` over the defaults."""
        if self.make_corpus is None:
            raise UserError(f"dataset {self.name!r} has no unlabeled corpus for pretraining tiny models; "
                            f"set models.<name>.tiny.pretrain_dataset to one that has (synthetic)")
        return self.make_corpus(n_docs, seed, {**self.defaults.get("options", {}), **(options or {})})


def make_example(row: dict[str, Any], q: Question, source: str, show_choices: bool) -> dict[str, Any]:
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


def _load_local(entry: DatasetEntry, spec: DatasetSpec, data_dir: str) -> Iterator[RawRow]:
    for part in entry.parts:
        folder = Path(data_dir) / part.folder
        if not folder.is_dir():
            raise UserError(
                f"dataset {entry.name!r}: local folder {folder} not found; point --data-dir (or data_dir) at the "
                f"directory holding {part.folder}/<split>.jsonl, or set load_from: hub"
            )
        for split in entry.splits:
            path = folder / f"{split}.jsonl"
            if not path.is_file():
                raise UserError(f"dataset {entry.name!r}: {path} not found; a local copy holds one JSONL per "
                                f"official split ({', '.join(entry.splits)})")
            for i, row in enumerate(read_jsonl(path)):
                yield RawRow(row, part.source, functools.partial(_local_where, path, i))


def _split_where(label: str, split: str, index: int) -> str:
    return f"{label} split {split} row {index}"


def _load_hub(entry: DatasetEntry, spec: DatasetSpec, data_dir: str) -> Iterator[RawRow]:
    import datasets

    for part in entry.parts:
        label = entry.hub_id + (f" ({part.hub_config})" if part.hub_config else "")
        try:
            loaded = datasets.load_dataset(entry.hub_id, part.hub_config)
        except OSError as exc:  # ConnectionError offline, DatasetNotFoundError, ...
            raise UserError(
                f"dataset {entry.name!r}: cannot load {label} from the Hugging Face hub ({type(exc).__name__}); "
                f"the hub cannot be reached from here. Set load_from: local for this dataset and point --data-dir "
                f"(or data_dir) at local copies ({part.folder}/<split>.jsonl)"
            ) from None
        for split in entry.splits:
            for i, row in enumerate(loaded[split] if split in loaded else ()):
                yield RawRow(dict(row), part.source, functools.partial(_split_where, label, split, i))


LOADERS = {"local": _load_local, "hub": _load_hub}


def _published(entry: DatasetEntry, spec: DatasetSpec, data_dir: str) -> Iterator[RawRow]:
    """Rows of a published dataset, from the hub or local copies as the config says."""
    return LOADERS[spec.load_from](entry, spec, data_dir)


def _generated(entry: DatasetEntry, spec: DatasetSpec, data_dir: str) -> Iterator[RawRow]:
    """The synthetic task's rows: made here from the options (load_from and data_dir play no part)."""
    for i, row in enumerate(synthetic.questions(spec.options)):
        yield RawRow(row, row["source"], functools.partial(_split_where, "synthetic", "generated", i))


# ---------------------------------------------------------------------------------------------
# formatters: row -> Question


def _sciq(row: dict) -> Question:
    """Correct answer and three distractors, in an order fixed by the question (not global state)."""
    texts = [row["correct_answer"], row["distractor1"], row["distractor2"], row["distractor3"]]
    order = list(range(4))
    random.Random(question_uid(row["question"])).shuffle(order)
    return Question(row["question"], [texts[i] for i in order], order.index(0))


def _labelled_choices(row: dict) -> Question:
    """ARC / QuaRTz layout: choices {text: [...], label: [...]}, answerKey one of the labels."""
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    if len(labels) != len(texts):
        raise BadRow(f"{len(texts)} choice texts but {len(labels)} labels")
    if row["answerKey"] not in labels:
        raise BadRow(f"answerKey {row['answerKey']!r} is not one of the choice labels {labels}")
    return Question(row["question"], texts, labels.index(row["answerKey"]))


def _synthetic(row: dict) -> Question:
    return Question(row["question"], list(row["choices"]), row["label"])


# ---------------------------------------------------------------------------------------------
# the registry

DATASETS: Registry[DatasetEntry] = Registry("dataset")

DATASETS.add("sciq", DatasetEntry(
    name="sciq",
    defaults={
        "load_from": "local",
        "difficulty": {"strategy": "length"},
        "sizes": {"weak_train": 2000, "val": 500, "test_id": 1000, "student_pool": 2000, "test_ood": 1000},
        "options": {},
    },
    strategies=("model", "length"),
    fields=("question", "correct_answer", "distractor1", "distractor2", "distractor3"),
    # the distractors give the answer away by elimination, since the choices stay in the pool
    formatter=_sciq,
    load=_published,
    hub_id="allenai/sciq",
    parts=(Part("sciq", "SciQ"),),
))

DATASETS.add("arc", DatasetEntry(
    name="arc",
    defaults={
        "load_from": "local",
        "difficulty": {"strategy": "source"},
        "sizes": {"weak_train": 2000, "val": 500, "test_id": 1000, "student_pool": 1500, "test_ood": 1000},
        "options": {},
    },
    strategies=("source", "model", "length"),
    fields=("question", "choices.text", "choices.label", "answerKey"),
    formatter=_labelled_choices,
    load=_published,
    hub_id="allenai/ai2_arc",
    parts=(Part("arc_easy", "ARC-Easy", "ARC-Easy"), Part("arc_challenge", "ARC-Challenge", "ARC-Challenge")),
    hard_sources=frozenset({"ARC-Challenge"}),
))

DATASETS.add("quartz", DatasetEntry(
    name="quartz",
    defaults={
        "load_from": "hub",  # no local copy ships with the suite (see shared/data/README.md)
        "difficulty": {"strategy": "length"},
        "sizes": {"weak_train": 1000, "val": 300, "test_id": 500, "student_pool": 1000, "test_ood": 500},
        "options": {},
    },
    strategies=("model", "length"),
    fields=("question", "choices.text", "choices.label", "answerKey"),
    # question_anno marks which way the question's comparison goes, which decides the answer
    formatter=_labelled_choices,
    load=_published,
    hub_id="allenai/quartz",
    parts=(Part("quartz", "QuaRTz"),),
))

DATASETS.add("synthetic", DatasetEntry(
    name="synthetic",
    defaults={
        "load_from": "local",  # unused: the rows are generated
        "difficulty": {"strategy": "source"},
        "sizes": {"weak_train": 300, "val": 100, "test_id": 200, "student_pool": 300, "test_ood": 200},
        "options": dict(synthetic.DEFAULTS),
    },
    strategies=("source", "model", "length"),
    fields=("question", "choices", "label"),
    formatter=_synthetic,
    load=_generated,
    hard_sources=frozenset({"hard"}),
    make_corpus=synthetic.corpus,
))
