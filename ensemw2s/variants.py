"""Boosting variants: the registered kinds (how a variant's experts are trained) and the config's named
variants over them (torch-free: the config, the CLI and the workflow read it while the DAG is parsed).

A variant is a config entry `boosting.variants.<name>: {kind, <settings>}`; unset settings take the
`boosting` defaults, unset `ensemble_weights` the kind's. Variants whose training settings agree share
their experts: the experts are trained once, under the first such variant's name (`experts`), so e.g.
`boost-uniform: {ensemble_weights: uniform}` re-weights boost's experts instead of training copies.
"""
from __future__ import annotations

from dataclasses import dataclass

from ensemw2s.errors import ConfigError
from ensemw2s.kinds import ALPHA_RULES, COMBINERS, TOKEN_WEIGHTINGS
from ensemw2s.registry import Registry

METHOD = "boost"  # the EnsemW2S variant (token-level AdaBoost weights): the paper's claims are about it

# the settings that decide how experts are trained (they identify the experts) and how they are combined
TRAINING_SETTINGS = ("kind", "token_weighting", "alpha", "samme_k", "learning_rate", "uniform_mix")
ENSEMBLE_SETTINGS = ("combine", "ensemble_weights")
ENSEMBLE_WEIGHTS = ("alpha", "uniform")  # alpha_t / sum(alpha), or 1/T


@dataclass(frozen=True)
class Kind:
    """How a kind trains its experts: torch code in boosting.py, named as "module:attr" targets."""

    multipliers: str  # (D_t, offsets, round, token_weighting, generator) -> loss multipliers, or None (plain SFT)
    misses: str  # (token misses, offsets) -> the misses that enter eps and the update
    boosted: bool  # False: alpha = 1 and D stays uniform
    ensemble_weights: str  # the default weighting of its ensembles
    doc: str


KINDS: Registry[Kind] = Registry("variant kind")
KINDS.add("boost", Kind("ensemw2s.boosting:boost_multipliers", "ensemw2s.boosting:token_misses", True, "alpha",
                        "token-level AdaBoost (EnsemW2S, METHOD.md)"))
KINDS.add("sequence", Kind("ensemw2s.boosting:boost_multipliers", "ensemw2s.boosting:sequence_misses", True, "alpha",
                           "AdaBoost with one weight per answer (a miss anywhere misses the whole answer)"))
KINDS.add("bagging", Kind("ensemw2s.boosting:bagging_multipliers", "ensemw2s.boosting:token_misses", False,
                          "uniform", "experts on bootstrap resamples of weak_train, equal weights"))


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str
    token_weighting: str
    alpha: str
    samme_k: int | None
    learning_rate: float  # nu: the update uses nu * alpha (the ensemble weight stays alpha)
    uniform_mix: float  # lambda: D <- (1 - lambda) D + lambda / n after each update
    combine: str
    ensemble_weights: str
    experts: str  # the variant whose experts this one combines (itself, or an earlier one with equal training)

    def training(self) -> dict:
        return {k: getattr(self, k) for k in TRAINING_SETTINGS}


def resolve(boosting: dict) -> dict[str, Variant]:
    """The validated `boosting` mapping -> name -> Variant, in config order; ConfigError on a bad name."""
    out: dict[str, Variant] = {}
    by_training: dict[tuple, str] = {}
    for name, entry in boosting["variants"].items():
        where = f"config key boosting.variants.{name}"
        settings = {k: boosting[k] for k in (*TRAINING_SETTINGS, *ENSEMBLE_SETTINGS) if k in boosting}
        settings = {"kind": "boost", **settings, **(entry or {})}
        kind = KINDS.get(KINDS.check(settings["kind"], f"{where}.kind"))
        TOKEN_WEIGHTINGS.check(settings["token_weighting"], f"{where}.token_weighting")
        ALPHA_RULES.check(settings["alpha"], f"{where}.alpha")
        COMBINERS.check(settings["combine"], f"{where}.combine")
        weights = settings.setdefault("ensemble_weights", kind.ensemble_weights)
        if weights not in ENSEMBLE_WEIGHTS:
            raise ConfigError(f"{where}.ensemble_weights: {weights!r} is not one of {', '.join(ENSEMBLE_WEIGHTS)}")
        training = tuple(settings.get(k) for k in TRAINING_SETTINGS)
        experts = by_training.setdefault(training, name)
        out[name] = Variant(name=name, experts=experts, samme_k=settings.get("samme_k"),
                            **{k: settings[k] for k in ("kind", "token_weighting", "alpha", "learning_rate",
                                                        "uniform_mix", "combine", "ensemble_weights")})
    return out
