"""Boosting variants: the registered kinds (how a variant's experts are trained) and the config's named
variants over them (torch-free: the config, the CLI and the workflow read it while the DAG is parsed).

A variant is a config entry `boosting.variants.<name>: {kind, <settings>}`; unset settings take the
`boosting` defaults, unset `ensemble_weights` the kind's. Variants whose training settings agree share
their experts: the experts are trained once, under the first such variant's name (`experts`), so e.g.
`boost-uniform: {ensemble_weights: uniform}` re-weights boost's experts instead of training copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ensemw2s.errors import ConfigError
from ensemw2s.kinds import COMBINERS, TOKEN_WEIGHTINGS
from ensemw2s.registry import Registry

METHOD = "boost"  # the EnsemW2S variant (token-level AdaBoost weights): the paper's claims are about it

# the settings that decide how experts are trained (they identify the experts) and how they are combined
TRAINING_SETTINGS = ("kind", "token_weighting", "prior", "miss", "miss_on", "folds", "learning_rate", "uniform_mix")
ENSEMBLE_SETTINGS = ("combine", "ensemble_weights")
# alpha_t / sum(alpha); the same without the prior term, log((1-eps)/eps) / sum; or 1/T
ENSEMBLE_WEIGHTS = ("alpha", "alpha_without_prior", "uniform")
PRIORS = ("vocab", "base_error", "none")  # or an integer K >= 2: e_ref of the prior term (boosting.prior_term)
MISSES = ("hard", "soft")  # argmax differs from gold; 1 - p(gold)
MISS_ON = ("train", "out_of_fold")  # misses on the rows h_t was fit on; or by copies with each fold held out
# old spellings of a setting, read as the new one (results written before them stay readable)
OLD_ALPHA = {"samme": {}, "adaboost": {"prior": "none"}}  # boosting.alpha: X -> the settings it meant


@dataclass(frozen=True)
class Kind:
    """How a kind trains its experts: torch code in boosting.py, named as "module:attr" targets."""

    multipliers: str  # (D_t, offsets, round, token_weighting, generator) -> loss multipliers, or None (plain SFT)
    misses: str  # (token misses, offsets) -> the misses that enter eps and the update
    boosted: bool  # False: alpha = 1 and D stays uniform
    ensemble_weights: str  # the default weighting of its ensembles
    doc: str
    # "module:attr" of (cfg, dataset, data_dir, rows, spec, round) -> FitPlan: which rows and training spec
    # round `round`'s expert is fit on (None: every weak_train row, training.expert as given)
    fit_plan: str | None = None
    # which rounds exist (config.BoostingSpec reads these): `all` trains rounds 1..T, `first` one expert (r = 1)
    expert_rounds: str = "all"
    ensemble_rounds: str = "all"  # all: the ensemble of the first r experts at every r; last: at the last only
    students: bool = True  # False: its ensembles are scored, never pseudo-label or teach a student
    epochs_factor: str = "1"  # "1": each expert trains h_1's optimizer steps; "rounds": T x h_1's (cost plan)
    needs_partition_key: bool = False  # runs only on datasets with a datasets[].partition_key (the others skip it)


@dataclass(frozen=True)
class FitPlan:
    """What a kind's expert is fit on, when not every weak_train row under training.expert (Kind.fit_plan)."""

    rows: list[dict]  # the training rows (a subset of weak_train)
    spec: Any  # the TrainingSpec (e.g. more epochs, so that optimizer steps match h_1's)
    record: dict = field(default_factory=dict)  # recorded in boosting.json under `fit_plan`
    files: dict[str, Any] = field(default_factory=dict)  # name -> JSON-able content, written beside boosting.json


KINDS: Registry[Kind] = Registry("variant kind")
KINDS.add("boost", Kind("ensemw2s.boosting:boost_multipliers", "ensemw2s.boosting:token_misses", True, "alpha",
                        "token-level AdaBoost (EnsemW2S, METHOD.md)"))
KINDS.add("sequence", Kind("ensemw2s.boosting:boost_multipliers", "ensemw2s.boosting:sequence_misses", True, "alpha",
                           "AdaBoost with one weight per answer (a miss anywhere misses the whole answer)"))
KINDS.add("bagging", Kind("ensemw2s.boosting:bagging_multipliers", "ensemw2s.boosting:token_misses", False,
                          "uniform", "experts on bootstrap resamples of weak_train, equal weights"))
KINDS.add("partition", Kind("ensemw2s.boosting:plain_multipliers", "ensemw2s.boosting:token_misses", False,
                            "uniform", "positive control: member r fit on part r of weak_train (datasets[]."
                            "partition_key values dealt into T parts) for h_1's optimizer steps; scored at r = T "
                            "as a token-level and a routed ensemble, no students",
                            fit_plan="ensemw2s.controls:partition_plan", ensemble_rounds="last", students=False,
                            needs_partition_key=True))
KINDS.add("longer", Kind("ensemw2s.boosting:plain_multipliers", "ensemw2s.boosting:token_misses", False, "uniform",
                         "compute-matched baseline: one expert fit on weak_train for T x h_1's optimizer steps "
                         "(its ensemble of one, with pseudo-labels and a student at r = 1)",
                         fit_plan="ensemw2s.controls:longer_plan", expert_rounds="first", epochs_factor="rounds"))


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str
    token_weighting: str
    prior: str | int  # e_ref of the SAMME prior term (PRIORS, or an integer K)
    miss: str  # MISSES
    miss_on: str  # MISS_ON
    folds: int  # k of miss_on: out_of_fold
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
        COMBINERS.check(settings["combine"], f"{where}.combine")
        weights = settings.setdefault("ensemble_weights", kind.ensemble_weights)
        for key, allowed in (("ensemble_weights", ENSEMBLE_WEIGHTS), ("miss", MISSES), ("miss_on", MISS_ON)):
            if settings[key] not in allowed:
                raise ConfigError(f"{where}.{key}: {settings[key]!r} is not one of {', '.join(allowed)}")
        prior = settings["prior"]
        if not (prior in PRIORS or (isinstance(prior, int) and not isinstance(prior, bool) and prior >= 2)):
            raise ConfigError(f"{where}.prior: {prior!r} is not one of {', '.join(PRIORS)} or an integer K >= 2")
        if settings["miss"] == "soft" and kind.misses != "ensemw2s.boosting:token_misses":
            raise ConfigError(f"{where}.miss: soft is a token's 1 - p(gold); kind {settings['kind']!r} counts "
                              f"misses otherwise, so use miss: hard")
        training = tuple(settings[k] for k in TRAINING_SETTINGS)
        experts = by_training.setdefault(training, name)
        out[name] = Variant(name=name, experts=experts,
                            **{k: settings[k] for k in (*TRAINING_SETTINGS, *ENSEMBLE_SETTINGS) if k != "kind"},
                            kind=settings["kind"])
    return out


def new_spelling(block: dict, where: str) -> dict:
    """A `boosting` block or variant entry with the old keys read as the new ones: `alpha: samme` is the
    default, `alpha: adaboost` is `prior: none` (the same update and normalised weights), `samme_k: K`
    is `prior: K`. A prior set otherwise (not its default, vocab) alongside an old key is an error."""
    block = dict(block or {})
    implied: dict = {}
    if "alpha" in block:
        value = block.pop("alpha")
        if value not in OLD_ALPHA:
            raise ConfigError(f"config key {where}.alpha: {value!r} is not samme or adaboost; the alpha rule is now "
                              f"a variant's `prior` ({', '.join(PRIORS)} or an integer K)")
        implied.update(OLD_ALPHA[value])
    if "samme_k" in block:
        k = block.pop("samme_k")
        if k is not None:
            implied["prior"] = k
    if implied and block.get("prior", "vocab") not in ("vocab", implied["prior"]):
        raise ConfigError(f"config key {where}: alpha/samme_k (old spellings of prior) and prior "
                          f"{block['prior']!r} are both set; keep prior only")
    return {**block, **implied}
