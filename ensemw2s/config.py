"""YAML -> validated (one JSON schema, defaults filled) -> frozen dataclasses.

The schema lives in ensemw2s/schemas/config.schema.yaml; the Snakemake workflow validates against the
same file. Everything a step may depend on is a field here: no other module reads YAML or globals.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ensemw2s import catalog, variants
from ensemw2s.errors import ConfigError, UserError
from ensemw2s.registry import load_plugin, unknown_name_message
from ensemw2s.splitdir import SPLITS
from ensemw2s.strategies import STRATEGIES
from ensemw2s.variants import METHOD, Variant


# ---------------------------------------------------------------------------------------------
# dataclasses


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: str | tuple[str, ...]


@dataclass(frozen=True)
class TinySpec:
    arch: str
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position: int
    pretrain_steps: int
    pretrain_lr: float
    pretrain_batch_size: int
    pretrain_docs: int
    pretrain_dataset: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # hub | path | gguf | tiny
    id: str | None = None
    revision: str | None = None
    gguf_file: str | None = None
    gguf_package: str | None = None
    tokenizer: str | None = None
    dtype: str = "float32"
    lora: LoraSpec | None = None
    tiny: TinySpec | None = None


@dataclass(frozen=True)
class Pair:
    weak: str
    strong: str

    @property
    def name(self) -> str:
        """Path component of a pair: '<weak>__<strong>'."""
        return f"{self.weak}__{self.strong}"


@dataclass(frozen=True)
class AnnotationSpec:
    """The `annotation` strategy's human ratings: a JSON object key -> {field: value, ...}."""

    file: str  # a relative path is taken from data_dir, as the datasets' local folders are
    field: str
    key: str | dict[str, str]  # a str.format template over the row's fields, or the row's source -> template
    easy: tuple[str | float, ...]  # values, easiest first; difficulty = the position in easy + hard
    hard: tuple[str | float, ...]


@dataclass(frozen=True)
class DifficultySpec:
    strategy: str
    rater: str | tuple[str, ...] | None = None  # as written: a single name hashes as before
    folds: int = 3
    hard_fraction: float = 0.5
    annotation: AnnotationSpec | None = None

    @property
    def raters(self) -> tuple[str, ...]:
        """The rater panel, in config order (a single name: a panel of one)."""
        return panel(self.rater)


def panel(rater: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """difficulty.rater as a tuple of model names: a name is a panel of one, unset none."""
    if rater is None:
        return ()
    return (rater,) if isinstance(rater, str) else tuple(rater)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load_from: str
    difficulty: DifficultySpec
    sizes: dict[str, int]
    show_choices: bool
    options: dict[str, Any]
    subsample: int | None = None
    student_pool: str = "easy"  # easy: the W2S protocol (same distribution as weak_train); hard: a knob
    definition: str | None = None  # a definition file (else the package's ensemw2s/datasets/<name>.yaml)
    partition_key: str | None = None  # the question field the partition control splits weak_train by


@dataclass(frozen=True)
class BoostingSpec:
    rounds: int
    variants: dict[str, Variant]  # name -> resolved variant (ensemw2s/variants.py), in config order
    student_rounds_rule: str = "all"  # boosting.student_rounds: all, or last (+ METHOD's r = 1, the reference)

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ConfigError(unknown_name_message("variant", name, self.variants))
        return self.variants[name]

    def expert_variants(self) -> list[str]:
        """The variants that train experts (the others combine an earlier variant's)."""
        return [v.name for v in self.variants.values() if v.experts == v.name]

    def _kind(self, name: str) -> variants.Kind:
        return variants.KINDS.get(self.variant(name).kind)

    def expert_rounds(self, name: str) -> list[int]:
        """Rounds at which variant `name`'s experts are trained: 1..T, or round 1 alone (`kind: longer`)."""
        return [1] if self._kind(name).expert_rounds == "first" else list(range(1, self.rounds + 1))

    def ensemble_rounds(self, name: str) -> list[int]:
        """Rounds at which variant `name`'s ensemble is its own object: at r = 1 every ensemble is the single
        expert h_1, scored and used once (as the `expert` role and the ensemble of the variant that trained
        it); a kind with ensemble_rounds `last` (partition) has its ensemble at r = T only. The workflow's
        targets and the cost plan both count these."""
        rounds = self.expert_rounds(name)
        if self._kind(name).ensemble_rounds == "last":
            rounds = rounds[-1:]
        return rounds if self.variant(name).experts == name else [r for r in rounds if r > 1]

    def starts_at_one(self, name: str) -> bool:
        """Whether variant `name` has an ensemble of one expert (h_1) at r = 1: every kind but those whose
        ensemble exists at the last round only (the partition control's members are not an ensemble)."""
        return self._kind(name).ensemble_rounds == "all"

    def student_rounds(self, name: str) -> list[int]:
        """Rounds at which variant `name`'s ensemble writes pseudo-labels and teaches students (none for a
        kind without students: the partition control is scored only). With boosting.student_rounds `last`,
        only the last of them, and METHOD's r = 1 (the student of h_1, every student's reference)."""
        rounds = self.ensemble_rounds(name) if self._kind(name).students else []
        if self.student_rounds_rule == "last":
            rounds = [r for r in rounds if r == rounds[-1] or (r == 1 and name == METHOD)]
        return rounds

    def epochs_factor(self, name: str) -> int:
        """How many times h_1's optimizer steps each of the variant's experts takes (T for `kind: longer`)."""
        return self.rounds if self._kind(name).epochs_factor == "rounds" else 1


@dataclass(frozen=True)
class TrainingSpec:
    epochs: float
    learning_rate: float
    batch_size: int
    grad_accum: int
    max_length: int
    weight_decay: float
    warmup_ratio: float
    precision: str
    save_steps: int
    select_on_val: bool
    fsdp: str | None = None  # Trainer's `fsdp` option under a multi-process launch (untested here)


@dataclass(frozen=True)
class EvalSpec:
    batch_size: int
    max_new_tokens: int
    bootstrap: int
    splits: tuple[str, ...]
    limit: int | None
    device: str
    aa_replicate: bool  # the A/A control: a replicate student of METHOD's h_1 (scores.py, role `replicate`)


@dataclass(frozen=True)
class Config:
    run: str
    data_dir: str
    results_dir: str
    seeds: tuple[int, ...]
    models: dict[str, ModelSpec]
    pairs: tuple[Pair, ...]
    datasets: tuple[DatasetSpec, ...]
    boosting: BoostingSpec
    expert_training: TrainingSpec
    student_training: TrainingSpec
    evaluation: EvalSpec
    resources: dict[str, dict[str, int]]
    raw: dict[str, Any]  # the validated, defaults-filled mapping (saved with the run, hashed)

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.run

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ConfigError(unknown_name_message("model", name, self.models))
        return self.models[name]

    def dataset(self, name: str) -> DatasetSpec:
        """The active dataset of that name, or the package definition's defaults for any other."""
        for spec in self.datasets:
            if spec.name == name:
                return spec
        return _dataset_spec({"name": name}, "--dataset")

    def variants_on(self, dataset: str, experts_only: bool = False) -> list[str]:
        """The variants run on `dataset` (those that train experts, with experts_only), in config order: all
        but the kinds that need a partition key the dataset lacks (the partition control: not applicable)."""
        has_key = bool(self.dataset(dataset).partition_key)
        names = self.boosting.expert_variants() if experts_only else list(self.boosting.variants)
        return [n for n in names if has_key or not variants.KINDS.get(self.boosting.variant(n).kind).needs_partition_key]

    def aa_replicate(self) -> bool:
        """Whether the run trains the A/A control: a second student of METHOD's h_1 (evaluation.aa_replicate)."""
        return self.evaluation.aa_replicate and METHOD in self.boosting.variants

    def weak_models(self) -> list[str]:
        return sorted({p.weak for p in self.pairs})

    def strong_models(self) -> list[str]:
        return sorted({p.strong for p in self.pairs})

    def hash(self, *keys: str) -> str:
        """Short hash of the named keys (all top-level keys when none given): a step's config identity
        (ensemw2s/steps.py names each step's keys; the workflow's rerun trigger and provenance both use it).

        A key is top-level (`training`) or a dotted path (`training.student`, `models.tiny-weak`,
        `seeds.0`); a name that itself holds dots (`models.qwen2.5-0.5b`) is matched whole first. Unset
        keys hash as None.
        """
        picked = {k: self.get(k) for k in (keys or sorted(self.raw))}
        return stable_hash(picked)

    @functools.cached_property
    def _resolved(self) -> dict[str, Any]:
        """raw with each dataset and variant resolved (defaults filled), datasets keyed by name."""
        return {**self.raw, "datasets": {d.name: as_dict(d) for d in self.datasets},
                "boosting": {**self.raw["boosting"],
                             "variants": {n: as_dict(v) for n, v in self.boosting.variants.items()}}}

    def get(self, key: str) -> Any:
        """The value at a top-level key or dotted path (see `hash`) of the resolved config: a dataset
        (`datasets.<name>`) and a variant (`boosting.variants.<name>`) with their defaults filled; None
        where unset."""
        node: Any = self._resolved
        while True:
            if isinstance(node, list) and key.partition(".")[0].isdigit():
                head, _, key = key.partition(".")
                node = node[int(head)] if int(head) < len(node) else None
                if not key:
                    return node
                continue
            if not isinstance(node, dict):
                return None
            if key in node:
                return node[key]
            head, dot, key = key.partition(".")
            if not dot or head not in node:
                return None
            node = node[head]


def stable_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# loading and validation


def schema() -> dict[str, Any]:
    text = resources.files("ensemw2s").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _extend_with_default(validator_class):
    """A validator that fills schema defaults in place, as Snakemake's `validate(set_default=True)`."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _extend_with_default(jsonschema.Draft202012Validator)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _old_boosting_keys(data: dict[str, Any]) -> None:
    """Name the new spelling of the boosting keys that became variant entries, and read the old spellings
    of a variant setting (alpha, samme_k) as the new one (variants.new_spelling), in place."""
    boosting = data.get("boosting")
    if not isinstance(boosting, dict):
        return
    if isinstance(boosting.get("variants"), list):
        listed = ", ".join(f"{v}: {{}}" if v == "boost" else f"{v}: {{kind: {v}}}" for v in boosting["variants"])
        raise ConfigError(f"config key boosting.variants: a mapping of variant name -> settings, not a list; "
                          f"write `variants: {{{listed}}}` (config/README.md, 'Boosting variants')")
    if "uniform_baseline" in boosting:
        raise ConfigError("config key boosting.uniform_baseline: removed; the uniform-weight baseline is a variant "
                          "entry, `boost-uniform: {ensemble_weights: uniform}` under boosting.variants")
    data["boosting"] = variants.new_spelling(boosting, "boosting")
    if isinstance(boosting.get("variants"), dict):
        data["boosting"]["variants"] = {
            name: variants.new_spelling(entry, f"boosting.variants.{name}") if isinstance(entry, dict) else entry
            for name, entry in boosting["variants"].items()}


def validate(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate and fill defaults; raise ConfigError naming the first offending key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of keys, got {type(raw).__name__}")
    data = copy.deepcopy(raw)
    _old_boosting_keys(data)
    validator = _Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            allowed = list(err.schema.get("properties", {}))
            extra = [k for k in err.instance if k not in allowed]
            key = extra[0] if extra else "?"
            where = _key_path(list(err.path) + [key])
            raise ConfigError(f"config key {where}: {unknown_name_message('key', key, allowed)}")
        raise ConfigError(f"config key {_key_path(err.path)}: {err.message}")
    for plugin in data["plugins"]:  # they may register names that the references below use
        load_plugin(plugin)
    _check_references(data)
    return data


def _check_references(data: dict[str, Any]) -> None:
    models = data["models"]
    for name, spec in models.items():
        src = spec["source"]
        needed = {"hub": "id", "path": "id", "tiny": "tiny"}.get(src)
        if needed and needed not in spec:
            raise ConfigError(f"config key models.{name}: source {src!r} needs the key {needed!r}")
        if src == "gguf" and not (spec.get("gguf_file") or spec.get("gguf_package")):
            raise ConfigError(f"config key models.{name}: source 'gguf' needs 'gguf_file' or 'gguf_package'")
    for i, pair in enumerate(data["pairs"]):
        for role in ("weak", "strong"):
            if pair[role] not in models:
                raise ConfigError(f"config key pairs[{i}].{role}: {unknown_name_message('model', pair[role], models)}")
    seen = set()
    for i, ds in enumerate(data["datasets"]):
        if ds["name"] not in catalog.DATASETS and "definition" not in ds:
            raise ConfigError(f"config key datasets[{i}].name: {unknown_name_message('dataset', ds['name'], catalog.DATASETS.names())}"
                              f" (or give datasets[{i}].definition, a definition file)")
        if ds["name"] in seen:
            raise ConfigError(f"config key datasets[{i}].name: dataset {ds['name']!r} is listed twice")
        seen.add(ds["name"])
        _check_raters(ds.get("difficulty", {}).get("rater"), models, f"config key datasets[{i}].difficulty.rater")


def _check_raters(rater: str | list[str] | None, models: dict[str, Any], where: str) -> None:
    """Every name of a rater panel is a model entry (`where`[k] names the k-th of a list)."""
    for k, name in enumerate(panel(rater)):
        if name not in models:
            at = where if isinstance(rater, str) else f"{where}[{k}]"
            raise ConfigError(f"{at}: {unknown_name_message('model', name, models)}")


# difficulty key a strategy needs (strategies.Strategy.needs) -> what to write there
STRATEGY_NEEDS = {"rater": "a rater model name, or a list of them (a panel)",
                  "annotation": "an annotation mapping: file, field, key, easy, hard (config/README.md)"}


def _annotation_spec(a: dict[str, Any], where: str, definition: catalog.Definition) -> AnnotationSpec:
    """The annotation mapping, checked against itself and the dataset's sources; the file is read by the strategy."""
    both = [v for v in a["easy"] if v in a["hard"]]
    if both:
        raise ConfigError(f"{where}: value {both[0]!r} is in both easy and hard; list each value in one of them")
    sources = {p.source for p in definition.parts if p.source}
    for source in a["key"] if isinstance(a["key"], dict) and sources else ():
        if source not in sources:
            raise ConfigError(f"{where}.key: {unknown_name_message('source', source, sources)}")
    return AnnotationSpec(file=a["file"], field=a["field"], key=a["key"], easy=tuple(a["easy"]), hard=tuple(a["hard"]))


def _dataset_spec(ds: dict[str, Any], where: str) -> DatasetSpec:
    """Merge one dataset entry over its definition's defaults (ensemw2s/catalog.py)."""
    try:
        definition = catalog.definition(ds["name"], ds.get("definition"))
    except UserError as exc:
        raise ConfigError(f"{where}{'.definition' if 'definition' in ds else ''}: {exc}") from None
    d = copy.deepcopy(definition.defaults)
    difficulty = {**d["difficulty"], **ds.get("difficulty", {})}
    strategy = STRATEGIES.get(STRATEGIES.check(difficulty["strategy"], f"{where}.difficulty.strategy"))
    if difficulty["strategy"] not in definition.strategies:
        raise ConfigError(
            f"{where}.difficulty.strategy: dataset {ds['name']!r} does not support {difficulty['strategy']!r};"
            f" choose one of {', '.join(definition.strategies)}"
        )
    if strategy.needs and not difficulty.get(strategy.needs):
        raise ConfigError(f"{where}.difficulty.{strategy.needs}: strategy {difficulty['strategy']!r} needs "
                          f"{STRATEGY_NEEDS[strategy.needs]}")
    if difficulty.get("annotation") is not None:
        difficulty["annotation"] = _annotation_spec(difficulty["annotation"], f"{where}.difficulty.annotation",
                                                    definition)
    if difficulty.get("rater") is not None and not isinstance(difficulty["rater"], str):
        difficulty["rater"] = tuple(difficulty["rater"])  # frozen, as the spec
    load_from = ds.get("load_from", d["load_from"])
    if load_from == "hub" and definition.hub is None and definition.generator is None:
        raise ConfigError(f"{where}.load_from: dataset {ds['name']!r} has no hub id in its definition "
                          f"({definition.path}); set load_from: local, or add `hub:` to the definition")
    sizes = {**d["sizes"], **ds.get("sizes", {})}
    return DatasetSpec(
        name=ds["name"],
        load_from=load_from,
        difficulty=DifficultySpec(**difficulty),
        sizes={s: int(sizes[s]) for s in SPLITS},
        show_choices=bool(ds.get("show_choices", False)),  # the schema's default, for unvalidated lookups
        options={**d["options"], **ds.get("options", {})},
        subsample=ds.get("subsample"),
        student_pool=ds.get("student_pool", DatasetSpec.student_pool),  # the schema's default, for unvalidated lookups
        definition=ds.get("definition"),
        partition_key=ds.get("partition_key", d.get("partition_key")),
    )


def _model_spec(name: str, m: dict[str, Any]) -> ModelSpec:
    lora = m.get("lora")
    tiny = m.get("tiny")
    if lora is not None:
        lora = dict(lora)
        tm = lora.get("target_modules", "all-linear")
        lora["target_modules"] = tm if isinstance(tm, str) else tuple(tm)
    return ModelSpec(
        name=name,
        source=m["source"],
        id=m.get("id"),
        revision=m.get("revision"),
        gguf_file=m.get("gguf_file"),
        gguf_package=m.get("gguf_package"),
        tokenizer=m.get("tokenizer"),
        dtype=m.get("dtype", "float32"),
        lora=LoraSpec(**lora) if lora is not None else None,
        tiny=TinySpec(**tiny) if tiny is not None else None,
    )


def from_dict(raw: dict[str, Any]) -> Config:
    data = validate(raw)
    b, t, e = data["boosting"], data["training"], data["evaluation"]
    datasets = tuple(_dataset_spec(ds, f"config key datasets[{i}]") for i, ds in enumerate(data["datasets"]))
    for ds in datasets:  # a registry default rater must exist too
        _check_raters(ds.difficulty.rater, data["models"], f"config key datasets.{ds.name}.difficulty.rater")
    return Config(
        run=data["run"],
        data_dir=data["data_dir"],
        results_dir=data["results_dir"],
        seeds=tuple(data["seeds"]),
        models={n: _model_spec(n, m) for n, m in data["models"].items()},
        pairs=tuple(Pair(**p) for p in data["pairs"]),
        datasets=datasets,
        boosting=BoostingSpec(rounds=b["rounds"], variants=variants.resolve(b), student_rounds_rule=b["student_rounds"]),
        expert_training=TrainingSpec(**t["expert"]),
        student_training=TrainingSpec(**t["student"]),
        evaluation=EvalSpec(**{**e, "splits": tuple(e["splits"])}),
        resources=data["resources"],
        raw=data,
    )


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML config file; `overrides` (e.g. --data-dir) replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raise ConfigError(f"config file {path} is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: must be a mapping of keys, got {type(raw).__name__}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(raw)


def as_dict(obj) -> Any:
    """Dataclass -> plain data (for provenance and hashing)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
