"""Variants: config entries over registered kinds, resolved once (defaults, shared experts, bad names)."""
from __future__ import annotations

import pytest

from ensemw2s.errors import ConfigError, UserError
from ensemw2s.variants import KINDS


def test_the_default_variants_are_boost_and_its_uniform_reweighting(make_config):
    b = make_config().boosting
    assert list(b.variants) == ["boost", "boost-uniform"]
    boost, uniform = b.variant("boost"), b.variant("boost-uniform")
    assert (boost.kind, boost.alpha, boost.token_weighting, boost.samme_k, boost.combine, boost.ensemble_weights) == (
        "boost", "samme", "resample", None, "prob", "alpha")
    assert uniform.ensemble_weights == "uniform" and uniform.experts == "boost"  # it trains nothing of its own
    assert b.expert_variants() == ["boost"]


def test_settings_override_the_boosting_defaults_and_the_kinds(make_config):
    b = make_config(boosting={"rounds": 2, "alpha": "adaboost", "variants": {
        "boost": {}, "bag": {"kind": "bagging"}, "seq-k2": {"kind": "sequence", "samme_k": 2, "alpha": "samme"},
        "bag-alpha": {"kind": "bagging", "ensemble_weights": "alpha"}}}).boosting
    assert b.variant("boost").alpha == "adaboost"  # the boosting default
    assert b.variant("bag").ensemble_weights == "uniform"  # the kind's default
    assert (b.variant("seq-k2").alpha, b.variant("seq-k2").samme_k) == ("samme", 2)
    assert b.variant("bag-alpha").experts == "bag"  # same training as `bag`: its experts, other weights
    assert b.expert_variants() == ["boost", "bag", "seq-k2"]


def test_experts_are_shared_only_when_every_training_setting_agrees(make_config):
    b = make_config(boosting={"rounds": 2, "variants": {
        "boost": {}, "boost-logprob": {"combine": "logprob"}, "boost-reweight": {"token_weighting": "reweight"},
        "boost-nu0.25": {"learning_rate": 0.25}, "boost-mix": {"uniform_mix": 0.1}}}).boosting
    assert b.variant("boost-logprob").experts == "boost"  # combine is not a training setting
    assert b.variant("boost-reweight").experts == "boost-reweight"
    assert (b.variant("boost").learning_rate, b.variant("boost").uniform_mix) == (1.0, 0.0)  # the plain update
    assert b.variant("boost-nu0.25").learning_rate == 0.25 and b.variant("boost-nu0.25").experts == "boost-nu0.25"
    assert b.variant("boost-mix").uniform_mix == 0.1 and b.variant("boost-mix").experts == "boost-mix"


@pytest.mark.parametrize("entry, key, hint", [
    ({"kind": "bagginng"}, "boosting.variants.v.kind", "Did you mean 'bagging'"),
    ({"alpha": "sammee"}, "boosting.variants.v.alpha", "Did you mean 'samme'"),
    ({"combine": "probb"}, "boosting.variants.v.combine", "Did you mean 'prob'"),
    ({"token_weighting": "resampel"}, "boosting.variants.v.token_weighting", "Did you mean 'resample'"),
])
def test_a_bad_setting_names_its_key_and_the_choices(make_config, entry, key, hint):
    with pytest.raises(UserError, match=rf"config key {key}: .*{hint}"):
        make_config(boosting={"rounds": 2, "variants": {"v": entry}})


def test_the_old_spellings_name_the_new_one(make_config):
    with pytest.raises(ConfigError, match=r"boosting.variants: a mapping .* `variants: \{boost: \{\}, bagging: \{kind: bagging\}\}`"):
        make_config(boosting={"rounds": 2, "variants": ["boost", "bagging"]})
    with pytest.raises(ConfigError, match=r"uniform_baseline: removed; .*boost-uniform: \{ensemble_weights: uniform\}"):
        make_config(boosting={"rounds": 2, "uniform_baseline": True})
    with pytest.raises(ConfigError, match="unknown variant 'bost'. Did you mean 'boost'"):
        make_config().boosting.variant("bost")


def test_every_kind_names_importable_functions():
    from ensemw2s.registry import load_target

    for name in KINDS:
        kind = KINDS.get(name)
        assert callable(load_target(kind.multipliers)) and callable(load_target(kind.misses)), name


def test_an_ensemble_of_another_variants_experts_starts_at_round_two(make_config):
    b = make_config(boosting={"rounds": 3}).boosting
    assert b.ensemble_rounds("boost") == [1, 2, 3]
    assert b.ensemble_rounds("boost-uniform") == [2, 3]  # its r = 1 is boost's h_1, made once
