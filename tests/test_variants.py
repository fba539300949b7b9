"""Variants: config entries over registered kinds, resolved once (defaults, shared experts, bad names)."""
from __future__ import annotations

import pytest

from ensemw2s.errors import ConfigError, UserError
from ensemw2s.variants import KINDS


def test_the_default_variants_are_boost_its_uniform_reweighting_and_the_partition_control(make_config):
    b = make_config().boosting
    assert list(b.variants) == ["boost", "boost-uniform", "partition"]
    boost, uniform = b.variant("boost"), b.variant("boost-uniform")
    assert (boost.kind, boost.prior, boost.miss, boost.miss_on, boost.token_weighting, boost.combine,
            boost.ensemble_weights) == ("boost", "vocab", "hard", "train", "resample", "prob", "alpha")
    assert uniform.ensemble_weights == "uniform" and uniform.experts == "boost"  # it trains nothing of its own
    assert b.expert_variants() == ["boost", "partition"] and b.variant("partition").ensemble_weights == "uniform"


def test_settings_override_the_boosting_defaults_and_the_kinds(make_config):
    b = make_config(boosting={"rounds": 2, "prior": "none", "variants": {
        "boost": {}, "bag": {"kind": "bagging"}, "seq-k2": {"kind": "sequence", "prior": 2},
        "bag-alpha": {"kind": "bagging", "ensemble_weights": "alpha"}}}).boosting
    assert b.variant("boost").prior == "none"  # the boosting default
    assert b.variant("bag").ensemble_weights == "uniform"  # the kind's default
    assert b.variant("seq-k2").prior == 2
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
    ({"prior": "vocabb"}, "boosting.variants.v.prior", "is not one of vocab, base_error, none or an integer"),
    ({"prior": 1}, "boosting.variants.v.prior", "an integer K >= 2"),
    ({"miss": "sofft"}, "boosting.variants.v.miss", "is not one of hard, soft"),
    ({"miss_on": "fold"}, "boosting.variants.v.miss_on", "is not one of train, out_of_fold"),
    ({"ensemble_weights": "alpha_no_prior"}, "boosting.variants.v.ensemble_weights", "alpha_without_prior"),
    ({"kind": "sequence", "miss": "soft"}, "boosting.variants.v.miss", "use miss: hard"),
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
    # alpha / samme_k are read as their new spelling, prior (one way to say each: old results stay readable)
    old = make_config(boosting={"rounds": 2, "alpha": "samme", "samme_k": None, "variants": {
        "ada": {"alpha": "adaboost"}, "k2": {"samme_k": 2}, "plain": {}}}).boosting
    assert [old.variant(v).prior for v in ("ada", "k2", "plain")] == ["none", 2, "vocab"]
    assert old.variant("plain").experts == "plain" and old.variant("ada").experts == "ada"
    with pytest.raises(ConfigError, match=r"boosting.variants.v: alpha/samme_k .* and prior 'base_error' are both set"):
        make_config(boosting={"rounds": 2, "variants": {"v": {"samme_k": 2, "prior": "base_error"}}})
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
