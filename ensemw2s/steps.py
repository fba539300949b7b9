"""Each step's config identity, declared once: the config keys its output depends on.

The workflow's rerun trigger (a rule's `params: h`) and the step's provenance record both hash exactly
these keys with `Config.hash`, so the two cannot drift. Keys are dotted paths into the resolved config
(`Config.get`): a variant's and a dataset's defaults are filled, so a changed default reruns what it
changes. Inputs that are files (splits, checkpoints, weights) are Snakemake's business, not listed here.
"""
from __future__ import annotations

from typing import Callable

from ensemw2s import catalog
from ensemw2s.config import Config
from ensemw2s.strategies import STRATEGIES
from ensemw2s.variants import ENSEMBLE_SETTINGS, KINDS, TRAINING_SETTINGS

EVALUATION = tuple(f"evaluation.{k}" for k in ("batch_size", "max_new_tokens", "splits", "limit", "device"))


def _prepare_model(cfg: Config, model: str) -> list[str]:
    spec = cfg.model(model)
    if spec.source != "tiny":
        return [f"models.{model}"]
    # a tiny model is built from the first seed and pretrained on its pretrain dataset's generated text
    return [f"models.{model}", "seeds.0", f"datasets.{spec.tiny.pretrain_dataset}.options"]


def _dataset_rating(cfg: Config, dataset: str) -> list[str]:
    """The resolved dataset entry; data_dir where rows are read from local copies (generated rows and hub
    rows read none); the raters' models and training. The definition file is a Snakemake input (data.smk).
    The splits of every seed hash the same keys: they are cut from this rating."""
    spec = cfg.dataset(dataset)
    local = spec.load_from == "local" and catalog.definition(dataset, spec.definition).parts
    keys = [f"datasets.{dataset}"] + (["data_dir"] if local else [])
    if STRATEGIES.get(spec.difficulty.strategy).needs_rater:  # each rater is fine-tuned and scores in batches
        keys += [*(f"models.{r}" for r in spec.difficulty.raters), "training.expert", "evaluation.batch_size"]
    return keys


STEPS: dict[str, Callable[..., list[str]]] = {
    "fetch_model": lambda cfg, model: [f"models.{model}.id", f"models.{model}.revision"],  # what is downloaded
    "fetch_dataset": lambda cfg, dataset: [f"datasets.{dataset}.name", f"datasets.{dataset}.definition"],
    "prepare_model": _prepare_model,
    "rate_data": _dataset_rating,
    "prepare_data": _dataset_rating,
    "train_expert": lambda cfg, weak, variant: [
        f"models.{weak}", "training.expert", *(f"boosting.variants.{variant}.{k}" for k in TRAINING_SETTINGS),
        *(["boosting.rounds"] if KINDS.get(cfg.boosting.variant(variant).kind).fit_plan else [])],  # T parts, T x steps
    "ensemble_manifest": lambda cfg, variant: [f"boosting.variants.{variant}.{k}" for k in ENSEMBLE_SETTINGS],
    "pseudo_label": lambda cfg: ["evaluation.max_new_tokens", "evaluation.batch_size", "evaluation.device"],
    "train_student": lambda cfg, strong: [f"models.{strong}", "training.student"],
    "evaluate": lambda cfg: list(EVALUATION),
    "metrics": lambda cfg: ["evaluation.bootstrap"],
}


# Each step's default resources (SLURM's sbatch gets them through the executor plugin; the plan counts
# GPU-hours with them), overridden per step by the config's `resources.<step>`.
RESOURCES = {
    "prepare_model": dict(gpu=0, mem_mb=16000, runtime=120, cpus_per_gpu=4, threads=1),
    "rate_data": dict(gpu=1, mem_mb=16000, runtime=240, cpus_per_gpu=4, threads=1),  # the raters fine-tune
    "prepare_data": dict(gpu=0, mem_mb=4000, runtime=10, cpus_per_gpu=1, threads=1),  # cuts splits from the rating
    "train_expert": dict(gpu=1, mem_mb=32000, runtime=480, cpus_per_gpu=8, threads=1),
    "ensemble_manifest": dict(gpu=0, mem_mb=4000, runtime=10, cpus_per_gpu=1, threads=1),
    "pseudo_label": dict(gpu=1, mem_mb=32000, runtime=240, cpus_per_gpu=8, threads=1),
    "train_student": dict(gpu=1, mem_mb=64000, runtime=720, cpus_per_gpu=8, threads=1),
    "evaluate": dict(gpu=1, mem_mb=32000, runtime=240, cpus_per_gpu=8, threads=1),
    "report": dict(gpu=0, mem_mb=4000, runtime=30, cpus_per_gpu=1, threads=1),
}


def resources(cfg: Config, step: str) -> dict[str, int]:
    """The step's resources: its defaults, then the config's `resources.<step>` over them."""
    return {**RESOURCES[step], **cfg.resources.get(step, {})}


def keys(cfg: Config, step: str, **labels: str) -> list[str]:
    """The config keys of `step` (labels: the step's model / dataset / variant names)."""
    return STEPS[step](cfg, **labels)


def identity(cfg: Config, step: str, **labels: str) -> str:
    """The hash of `step`'s keys: the workflow's rerun trigger, and the record's config_hash."""
    return cfg.hash(*keys(cfg, step, **labels))
