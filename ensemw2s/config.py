"""YAML -> validated (one JSON schema, defaults filled) -> frozen dataclasses.

The schema lives in ensemw2s/schemas/config.schema.yaml; the Snakemake workflow validates against the
same file. Everything a step may depend on is a field here: no other module reads YAML or globals.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ensemw2s.errors import ConfigError
from ensemw2s.registry import unknown_name_message

SPLITS = ("weak_train", "val", "test_id", "student_pool", "test_ood")
EVAL_SPLITS = ("val", "test_id", "test_ood")


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
class DifficultySpec:
    strategy: str
    rater: str | None = None
    folds: int = 3
    hard_fraction: float = 0.5


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


@dataclass(frozen=True)
class BoostingSpec:
    rounds: int
    token_weighting: str
    alpha: str
    samme_k: int | None
    combine: str
    variants: tuple[str, ...]
    uniform_baseline: bool


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


@dataclass(frozen=True)
class EvalSpec:
    batch_size: int
    max_new_tokens: int
    bootstrap: int
    splits: tuple[str, ...]
    limit: int | None
    device: str


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
        """The active dataset of that name, or the registry's defaults for any registered one."""
        for spec in self.datasets:
            if spec.name == name:
                return spec
        return _dataset_spec({"name": name}, "--dataset")

    def weak_models(self) -> list[str]:
        return sorted({p.weak for p in self.pairs})

    def strong_models(self) -> list[str]:
        return sorted({p.strong for p in self.pairs})

    def ensembles(self) -> dict[str, tuple[str, str]]:
        """Ensemble name -> (expert-training variant, weighting). bagging is weighted uniformly."""
        out = {v: (v, "uniform" if v == "bagging" else "alpha") for v in self.boosting.variants}
        if self.boosting.uniform_baseline and "boost" in self.boosting.variants:
            out["boost-uniform"] = ("boost", "uniform")
        return out

    def hash(self, *keys: str) -> str:
        """Short hash of the named keys (all top-level keys when none given): a step's config identity.

        A key is top-level (`training`) or a dotted path (`training.student`, `models.tiny-weak`); a
        name that itself holds dots (`models.qwen2.5-0.5b`) is matched whole first. Unset keys hash as None.
        """
        picked = {k: self.get(k) for k in (keys or sorted(self.raw))}
        return stable_hash(picked)

    def get(self, key: str) -> Any:
        """The raw value at a top-level key or dotted path (see `hash`); None where unset."""
        node: Any = self.raw
        while isinstance(node, dict):
            if key in node:
                return node[key]
            head, dot, key = key.partition(".")
            if not dot or head not in node:
                return None
            node = node[head]
        return None


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


def validate(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate and fill defaults; raise ConfigError naming the first offending key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of keys, got {type(raw).__name__}")
    data = copy.deepcopy(raw)
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
    _check_references(data)
    return data


def _check_references(data: dict[str, Any]) -> None:
    from ensemw2s.data import DATASETS  # the dataset registry; imported lazily to keep config light

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
        if ds["name"] not in DATASETS:
            raise ConfigError(f"config key datasets[{i}].name: {unknown_name_message('dataset', ds['name'], DATASETS.names())}")
        if ds["name"] in seen:
            raise ConfigError(f"config key datasets[{i}].name: dataset {ds['name']!r} is listed twice")
        seen.add(ds["name"])
        rater = ds.get("difficulty", {}).get("rater")
        if rater is not None and rater not in models:
            raise ConfigError(f"config key datasets[{i}].difficulty.rater: {unknown_name_message('model', rater, models)}")


def _dataset_spec(ds: dict[str, Any], where: str) -> DatasetSpec:
    """Merge one dataset entry over its registry defaults."""
    from ensemw2s.data import DATASETS

    try:
        entry = DATASETS.get(ds["name"])
    except KeyError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    d = copy.deepcopy(entry.defaults)
    difficulty = {**d.get("difficulty", {}), **ds.get("difficulty", {})}
    if "strategy" not in difficulty:
        raise ConfigError(f"{where}.difficulty.strategy: not set, and dataset {ds['name']!r} has no default")
    if difficulty["strategy"] not in entry.strategies:
        raise ConfigError(
            f"{where}.difficulty.strategy: dataset {ds['name']!r} does not support {difficulty['strategy']!r};"
            f" choose one of {', '.join(entry.strategies)}"
        )
    if difficulty["strategy"] == "model" and not difficulty.get("rater"):
        raise ConfigError(f"{where}.difficulty.rater: strategy 'model' needs a rater model name")
    sizes = {**d.get("sizes", {}), **ds.get("sizes", {})}
    missing = [s for s in SPLITS if s not in sizes]
    if missing:
        raise ConfigError(f"{where}.sizes: missing sizes for {', '.join(missing)}")
    return DatasetSpec(
        name=ds["name"],
        load_from=ds.get("load_from", d.get("load_from", "local")),
        difficulty=DifficultySpec(**{k: v for k, v in difficulty.items()}),
        sizes={s: int(sizes[s]) for s in SPLITS},
        show_choices=bool(ds.get("show_choices", False)),  # the schema's default, for unvalidated lookups
        options={**d.get("options", {}), **ds.get("options", {})},
        subsample=ds.get("subsample", d.get("subsample")),
        student_pool=ds.get("student_pool", DatasetSpec.student_pool),  # the schema's default, for unvalidated lookups
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
        rater = ds.difficulty.rater
        if rater is not None and rater not in data["models"]:
            raise ConfigError(f"config key datasets.{ds.name}.difficulty.rater: {unknown_name_message('model', rater, data['models'])}")
    return Config(
        run=data["run"],
        data_dir=data["data_dir"],
        results_dir=data["results_dir"],
        seeds=tuple(data["seeds"]),
        models={n: _model_spec(n, m) for n, m in data["models"].items()},
        pairs=tuple(Pair(**p) for p in data["pairs"]),
        datasets=datasets,
        boosting=BoostingSpec(**{**b, "variants": tuple(b["variants"])}),
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
