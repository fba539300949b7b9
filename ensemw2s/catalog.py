"""Dataset definitions: one YAML file per dataset, validated once, read by the config and by data.py.

A definition (ensemw2s/schemas/dataset.schema.yaml) says where a dataset's rows come from, which fields
hold the question, choices and answer, which difficulty strategies suit it, which fields its student
pool keeps, and its default config entry. The package's own are ensemw2s/datasets/<name>.yaml (the
`DATASETS` registry); a config entry may name another file (`datasets[].definition`). Adding a dataset
is a file, not code.

Torch-free, and imports nothing from ensemw2s.config (the config imports this).
"""
from __future__ import annotations

import difflib
import functools
import importlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml

from ensemw2s.errors import UserError
from ensemw2s.registry import Registry
from ensemw2s.splitdir import NEVER_IN_POOL, POOL_FIELDS
from ensemw2s.strategies import STRATEGIES

PACKAGE_DIR = Path(str(resources.files("ensemw2s").joinpath("datasets")))
DEFAULT_SPLITS = ("train", "validation", "test")
POOL_NEEDS = ("uid", "prompt")  # what every reader of student_pool reads



def _package_files() -> Registry[Path]:
    files: Registry[Path] = Registry("dataset")
    for path in sorted(PACKAGE_DIR.glob("*.yaml")):
        files.add(path.stem, path)
    return files


# name -> definition file of the package (a config entry's `definition:` path is read by `definition`)
DATASETS = _package_files()


class DefinitionError(UserError):
    """A dataset definition file that is not valid; the message names the file and the key."""


@dataclass(frozen=True)
class Part:
    """One published subset: its local folder, its hub config, the `source` label of its rows."""

    folder: str
    hub_config: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Fields:
    """Which row fields hold what ("a.b" = field b of the mapping in field a); None = not declared."""

    question: str | None = None
    choice_list: str | None = None  # one list of choice texts
    choice_texts: str | None = None  # ... or parallel lists of texts and labels
    choice_labels: str | None = None
    answer_index: str | None = None  # the correct choice's position
    answer_label: str | None = None  # ... or its label
    correct: str | None = None  # ... or its text, with the distractors' (the choices, shuffled by question)
    distractors: tuple[str, ...] = ()
    id: str | None = None
    source: str | None = None

    def required(self) -> tuple[str, ...]:
        """The fields a row must have, in the order the message about a missing one lists them."""
        named = (self.question, self.choice_list, self.choice_texts, self.choice_labels, self.answer_index,
                 self.answer_label, self.correct, *self.distractors, self.source)
        return tuple(f for f in named if f is not None)


@dataclass(frozen=True)
class Definition:
    name: str
    path: Path  # the file, named in error messages
    fields: Fields
    strategies: tuple[str, ...]
    defaults: dict[str, Any]  # load_from, difficulty, sizes, options
    hub: str | None = None
    splits: tuple[str, ...] = DEFAULT_SPLITS
    parts: tuple[Part, ...] = ()
    generator: str | None = None  # "module:function"
    corpus: str | None = None
    formatter: str | None = None
    hard_sources: frozenset[str] = frozenset()
    pool_fields: tuple[str, ...] = POOL_FIELDS

    def function(self, key: str) -> Callable:
        """The Python function a "module:function" key (generator, corpus, formatter) names."""
        target = getattr(self, key)
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DefinitionError(f"dataset definition {self.path}: key {key}: cannot import {target!r} "
                                  f"({type(exc).__name__}: {exc}); name an importable module:function") from None


def definition(name: str, path: str | Path | None = None) -> Definition:
    """The definition of dataset `name`: the file at `path` when given, else the package's own."""
    path = Path(path) if path is not None else DATASETS.get(name)
    if not path.is_file():
        raise DefinitionError(f"dataset {name!r}: definition file {path} not found; datasets[].definition names "
                              f"a YAML file (relative paths are taken from the working directory)")
    return _parse(name, path, path.read_text(encoding="utf-8"))


@functools.cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("ensemw2s").joinpath("schemas/dataset.schema.yaml").read_text())


@functools.cache  # keyed by the text: a file edited since is parsed again
def _parse(name: str, path: Path, text: str) -> Definition:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DefinitionError(f"dataset definition {path}{where}: not valid YAML "
                              f"({getattr(exc, 'problem', exc)})") from None
    _validate(raw, path)
    return _check(_build(name, path, raw))


def _validate(raw: Any, path: Path) -> None:
    if not isinstance(raw, dict):
        raise DefinitionError(f"dataset definition {path}: must be a mapping of keys, got {type(raw).__name__}")
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(raw),
                    key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.path)
    if err.validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = next(k for k in err.instance if k not in allowed)
        close = difflib.get_close_matches(extra, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DefinitionError(f"dataset definition {path}: key {where + '.' if where else ''}{extra}: unknown key."
                              f"{hint} Known: {', '.join(allowed)}.")
    raise DefinitionError(f"dataset definition {path}: key {where or '(top level)'}: {err.message}")


def _build(name: str, path: Path, raw: dict[str, Any]) -> Definition:
    f = raw["fields"]
    choices, answer = f.get("choices", {}), f.get("answer", {})
    return Definition(
        name=name,
        path=path,
        fields=Fields(question=f.get("question"), choice_list=choices.get("list"), choice_texts=choices.get("text"),
                      choice_labels=choices.get("label"), answer_index=answer.get("index"),
                      answer_label=answer.get("label"), correct=answer.get("correct"),
                      distractors=tuple(answer.get("distractors", ())), id=f.get("id"), source=f.get("source")),
        strategies=tuple(raw["strategies"]),
        defaults={"load_from": "local", "options": {}, **raw["defaults"]},
        hub=raw.get("hub"),
        splits=tuple(raw.get("splits", DEFAULT_SPLITS)),
        parts=tuple(Part(**p) for p in raw.get("parts", ())),
        generator=raw.get("generator"),
        corpus=raw.get("corpus"),
        formatter=raw.get("formatter"),
        hard_sources=frozenset(raw.get("hard_sources", ())),
        pool_fields=tuple(raw.get("pool_fields", POOL_FIELDS)),
    )


def _check(d: Definition) -> Definition:
    """How the keys combine (what the schema cannot say); a DefinitionError names the key and the fix."""

    def bad(key: str, problem: str) -> DefinitionError:
        return DefinitionError(f"dataset definition {d.path}: key {key}: {problem}")

    if bool(d.parts) == bool(d.generator):
        raise bad("parts", "declare either parts (rows from local files or the hub) or generator (rows made in "
                           "Python), exactly one")
    if not d.fields.source and (d.generator or any(p.source is None for p in d.parts)):
        raise bad("fields.source", "the rows' source is not declared; name a field here, or give every part a source")
    f = d.fields
    if d.formatter is None:
        if f.question is None:
            raise bad("fields.question", "missing: name the field holding the question (or give a formatter)")
        answers = [k for k, v in (("index", f.answer_index), ("label", f.answer_label), ("correct", f.correct)) if v]
        if len(answers) != 1:
            raise bad("fields.answer", "name exactly one of index, label, or correct (with distractors)")
        if bool(f.correct) != bool(f.distractors):
            raise bad("fields.answer", "correct and distractors go together: the choices are their texts")
        listed, parallel = bool(f.choice_list), bool(f.choice_texts or f.choice_labels)
        if f.correct and (listed or parallel):
            raise bad("fields.choices", "not used with answer.correct (the choices are correct + distractors); "
                                        "remove it")
        if not f.correct and listed == parallel:
            raise bad("fields.choices", "name either list, or text and label")
        if parallel and not (f.choice_texts and f.choice_labels):
            raise bad("fields.choices", "text and label go together (parallel lists)")
        if f.answer_label and not f.choice_labels:
            raise bad("fields.answer.label", "needs choices.text and choices.label to look the label up in")
    for i, strategy in enumerate(d.strategies):
        STRATEGIES.check(strategy, f"dataset definition {d.path}: key strategies[{i}]")
    if ("source" in d.strategies) != bool(d.hard_sources):
        raise bad("hard_sources", "the source strategy needs hard_sources, and hard_sources need the source "
                                  "strategy in strategies")
    if d.defaults["difficulty"]["strategy"] not in d.strategies:
        raise bad("defaults.difficulty.strategy", f"{d.defaults['difficulty']['strategy']!r} is not one of "
                                                  f"strategies ({', '.join(d.strategies)})")
    missing = [k for k in POOL_NEEDS if k not in d.pool_fields]
    if missing:
        raise bad("pool_fields", f"must hold {', '.join(POOL_NEEDS)} (the pool's readers need them); "
                                 f"add {', '.join(missing)}")
    answer_fields = (f.answer_index, f.answer_label, f.correct, *f.distractors)
    revealing = [k for k in d.pool_fields if k in NEVER_IN_POOL or k in answer_fields]
    if revealing:
        raise bad("pool_fields", f"{', '.join(revealing)} would reveal or hint at the gold answer; remove it")
    return d
