"""The step-keys table: each step's identity changes with the keys it depends on, and only with them."""
from __future__ import annotations

import pytest

from ensemw2s import steps


def test_an_experts_identity_is_its_training_not_its_combination(make_config):
    base = make_config()
    same = make_config(boosting={"rounds": 2, "combine": "vote"})  # combine: how experts are combined only
    other = make_config(boosting={"rounds": 2, "alpha": "adaboost"})
    ident = lambda c: steps.identity(c, "train_expert", weak="weak", variant="boost")  # noqa: E731
    assert ident(base) == ident(same) != ident(other)
    manifest = lambda c: steps.identity(c, "ensemble_manifest", variant="boost")  # noqa: E731
    assert manifest(base) != manifest(same)


def test_a_default_that_a_step_reads_is_part_of_its_identity(make_config):
    """Keys are read from the resolved config: the boosting default reaches the variant's identity."""
    explicit = make_config(boosting={"rounds": 2, "variants": {"boost": {"alpha": "samme"}}})
    implicit = make_config(boosting={"rounds": 2, "variants": {"boost": {}}})
    assert steps.keys(explicit, "train_expert", weak="weak", variant="boost") == steps.keys(
        implicit, "train_expert", weak="weak", variant="boost")
    assert steps.identity(explicit, "train_expert", weak="weak", variant="boost") == steps.identity(
        implicit, "train_expert", weak="weak", variant="boost")


def test_students_do_not_depend_on_the_weak_side_or_the_bootstrap(make_config):
    a = make_config()
    b = make_config(models={**a.raw["models"], "weak": {"source": "tiny", "tiny": {"hidden_size": 40}}},
                    evaluation={**a.raw["evaluation"], "bootstrap": 7})
    assert steps.identity(a, "train_student", strong="strong") == steps.identity(b, "train_student", strong="strong")
    assert steps.identity(a, "train_expert", weak="weak", variant="boost") != steps.identity(
        b, "train_expert", weak="weak", variant="boost")
    assert steps.identity(a, "metrics") != steps.identity(b, "metrics")
    assert steps.identity(a, "evaluate") == steps.identity(b, "evaluate")


def test_a_tiny_model_depends_on_its_first_seed_and_pretraining_text(make_config):
    assert steps.keys(make_config(), "prepare_model", model="weak") == [
        "models.weak", "seeds.0", "datasets.synthetic.options"]
    assert steps.identity(make_config(seeds=[0, 1]), "prepare_model", model="weak") == steps.identity(
        make_config(seeds=[0]), "prepare_model", model="weak")
    assert steps.identity(make_config(seeds=[1]), "prepare_model", model="weak") != steps.identity(
        make_config(seeds=[0]), "prepare_model", model="weak")


def test_every_step_of_the_workflow_has_keys(make_config):
    cfg = make_config()
    labels = {"fetch_model": {"model": "weak"}, "prepare_model": {"model": "weak"}, "prepare_data": {"dataset": "synthetic"},
              "rate_data": {"dataset": "synthetic"},
              "train_expert": {"weak": "weak", "variant": "boost"}, "ensemble_manifest": {"variant": "boost"},
              "train_student": {"strong": "strong"}, "fetch_dataset": {"dataset": "synthetic"}}
    for step in steps.STEPS:
        assert steps.keys(cfg, step, **labels.get(step, {})), step
    with pytest.raises(KeyError):
        steps.keys(cfg, "train_experts")
