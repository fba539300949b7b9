"""The config loader: schema defaults, registry defaults, and one-line errors that name the key."""
import copy

import pytest

from ensemw2s import cli, config
from ensemw2s.errors import ConfigError, UserError
from tests.conftest import BASE_CONFIG


def raw(**overrides) -> dict:
    out = copy.deepcopy(BASE_CONFIG)
    out.update(overrides)
    return out


def test_defaults_are_filled_from_schema_and_registry(make_config):
    cfg = make_config()
    assert cfg.seeds == (0,) and cfg.boosting.rounds == 2  # set in BASE_CONFIG
    boost = cfg.boosting.variant("boost")
    assert (boost.prior, boost.combine, boost.token_weighting) == ("vocab", "prob", "resample")
    assert cfg.expert_training.epochs == 1 and cfg.expert_training.max_length == 256  # given, then schema default
    assert cfg.evaluation.splits == ("val", "test_id", "test_ood")
    assert cfg.models["weak"].tiny.arch == "llama" and cfg.models["weak"].lora is None
    (ds,) = cfg.datasets
    assert ds.difficulty.strategy == "source" and ds.sizes["weak_train"] == 300 and ds.show_choices is False
    assert ds.options["world_seed"] == 0 and ds.options["n_syllables"] == 16


def test_dataset_entries_merge_over_registry_defaults(make_config):
    cfg = make_config(datasets=[{"name": "sciq", "sizes": {"val": 7}, "difficulty": {"hard_fraction": 0.3}},
                                {"name": "synthetic", "options": {"world_seed": 5}}])
    sciq, synth = cfg.datasets
    assert sciq.sizes["val"] == 7 and sciq.sizes["weak_train"] == 2000
    assert sciq.difficulty.strategy == "length" and sciq.difficulty.hard_fraction == 0.3
    assert synth.options["world_seed"] == 5 and synth.options["n_questions"] == 2400
    assert cfg.dataset("arc").difficulty.strategy == "source"  # inactive datasets take the registry's defaults


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run: x\nmodels:\n  weak: {source: tiny\npairs: []\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line 4: not valid YAML"):
        config.load(path)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"config key boosting.priorr: unknown key 'priorr'. Did you mean 'prior'\?"):
        config.from_dict(raw(boosting={"priorr": "vocab"}))


def test_wrong_type_names_the_key_path():
    bad = raw()
    bad["training"]["expert"]["epochs"] = "three"
    with pytest.raises(ConfigError, match=r"config key training.expert.epochs: 'three' is not of type 'number'"):
        config.from_dict(bad)
    with pytest.raises(ConfigError, match=r"config key datasets\[0\].sizes.val: -1 is less than the minimum of 1"):
        config.from_dict(raw(datasets=[{"name": "synthetic", "sizes": {"val": -1}}]))
    with pytest.raises(ConfigError, match=r"config key datasets\[0\].student_pool: 'medium' is not one of \['easy', 'hard'\]"):
        config.from_dict(raw(datasets=[{"name": "synthetic", "student_pool": "medium"}]))


def test_unknown_model_in_pairs():
    with pytest.raises(ConfigError, match=r"pairs\[0\].strong: unknown model 'strnog'. Did you mean 'strong'\?"):
        config.from_dict(raw(pairs=[{"weak": "weak", "strong": "strnog"}]))


def test_unknown_dataset():
    with pytest.raises(ConfigError, match=r"datasets\[0\].name: unknown dataset 'arcc'. Did you mean 'arc'\? .*"
                                          r"\(or give datasets\[0\].definition, a definition file\)"):
        config.from_dict(raw(datasets=[{"name": "arcc"}]))
    with pytest.raises(ConfigError, match=r"config key datasets\[0\].name: 'my-set' does not match"):
        config.from_dict(raw(datasets=[{"name": "my-set"}]))  # a path component of the run's outputs


def test_a_dataset_entry_may_name_its_definition_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("parts: [{folder: mine, source: Mine}]\nfields: {question: q, choices: {list: c}, answer: {index: a}}\n"
                    "strategies: [length, model]\n"
                    "defaults: {difficulty: {strategy: length, hard_fraction: 0.25}, "
                    "sizes: {weak_train: 4, val: 2, test_id: 2, student_pool: 3, test_ood: 2}}\n")
    cfg = config.from_dict(raw(datasets=[{"name": "mine", "definition": str(path), "sizes": {"val": 1}}]))
    (spec,) = cfg.datasets
    assert spec.definition == str(path) and spec.load_from == "local" and spec.options == {}
    assert spec.difficulty.strategy == "length" and spec.difficulty.hard_fraction == 0.25
    assert spec.sizes == {"weak_train": 4, "val": 1, "test_id": 2, "student_pool": 3, "test_ood": 2}
    with pytest.raises(ConfigError, match=r"config key datasets\[0\].load_from: dataset 'mine' has no hub id in its "
                                          r"definition .*; set load_from: local, or add `hub:`"):
        config.from_dict(raw(datasets=[{"name": "mine", "definition": str(path), "load_from": "hub"}]))
    path.write_text(path.read_text().replace("strategies:", "stratgies:"))
    with pytest.raises(ConfigError, match=rf"config key datasets\[0\].definition: dataset definition {path}: key "
                                          r"stratgies: unknown key. Did you mean 'strategies'\?"):
        config.from_dict(raw(datasets=[{"name": "mine", "definition": str(path)}]))
    with pytest.raises(ConfigError, match=r"config key datasets\[0\].definition: dataset 'mine': definition file "
                                          r".*nowhere.yaml not found"):
        config.from_dict(raw(datasets=[{"name": "mine", "definition": str(tmp_path / "nowhere.yaml")}]))


def test_strategy_must_suit_the_dataset():
    with pytest.raises(UserError, match=r"config key datasets\[0\].difficulty.strategy: unknown difficulty strategy "
                                        r"'lenght'. Did you mean 'length'\?"):
        config.from_dict(raw(datasets=[{"name": "sciq", "difficulty": {"strategy": "lenght"}}]))
    with pytest.raises(ConfigError, match="dataset 'sciq' does not support 'source'; choose one of model, length"):
        config.from_dict(raw(datasets=[{"name": "sciq", "difficulty": {"strategy": "source"}}]))
    with pytest.raises(ConfigError, match="strategy 'model' needs a rater model name"):
        config.from_dict(raw(datasets=[{"name": "sciq", "difficulty": {"strategy": "model"}}]))
    with pytest.raises(ConfigError, match=r"difficulty.rater: unknown model 'gpt2'"):
        config.from_dict(raw(datasets=[{"name": "sciq", "difficulty": {"strategy": "model", "rater": "gpt2"}}]))


def test_a_rater_panel_is_a_list_and_each_name_is_checked():
    def difficulty(rater):
        cfg = config.from_dict(raw(datasets=[{"name": "sciq", "difficulty": {"strategy": "model", "rater": rater}}]))
        return cfg.dataset("sciq").difficulty

    assert difficulty("weak").raters == ("weak",) and difficulty("weak").rater == "weak"  # a panel of one, as written
    assert difficulty(["weak", "strong"]).raters == ("weak", "strong")
    with pytest.raises(ConfigError, match=r"datasets\[0\].difficulty.rater\[1\]: unknown model 'strnog'. "
                                          r"Did you mean 'strong'\?"):
        difficulty(["weak", "strnog"])
    with pytest.raises(ConfigError, match=r"datasets\[0\].difficulty.rater: \[.weak., .weak.\] has non-unique elements"):
        difficulty(["weak", "weak"])


ARC_GRADES = {"file": "grades.json", "field": "grade", "key": {"ARC-Easy": "ARCEZ_{id}", "ARC-Challenge": "ARCCH_{id}"},
              "easy": ["Grade 03"], "hard": ["Grade 08"]}


def test_the_annotation_strategy_needs_a_consistent_annotation_entry():
    def arc(**difficulty):
        return config.from_dict(raw(datasets=[{"name": "arc", "difficulty": {"strategy": "annotation", **difficulty}}]))

    spec = arc(annotation=ARC_GRADES).dataset("arc").difficulty.annotation
    assert (spec.field, spec.easy, spec.hard) == ("grade", ("Grade 03",), ("Grade 08",))
    with pytest.raises(ConfigError, match=r"datasets\[0\].difficulty.annotation: strategy 'annotation' needs an "
                                          r"annotation mapping: file, field, key, easy, hard"):
        arc()
    with pytest.raises(ConfigError, match=r"difficulty.annotation: value 'Grade 08' is in both easy and hard"):
        arc(annotation={**ARC_GRADES, "easy": ["Grade 03", "Grade 08"]})
    with pytest.raises(ConfigError, match=r"difficulty.annotation.key: unknown source 'ARC-easy'. Did you mean "
                                          r"'ARC-Easy'\?"):
        arc(annotation={**ARC_GRADES, "key": {"ARC-easy": "ARCEZ_{id}"}})
    with pytest.raises(ConfigError, match=r"difficulty.annotation: 'hard' is a required property"):
        arc(annotation={k: v for k, v in ARC_GRADES.items() if k != "hard"})
    with pytest.raises(ConfigError, match="dataset 'sciq' does not support 'annotation'"):
        config.from_dict(raw(datasets=[{"name": "sciq", "difficulty": {"strategy": "annotation", "annotation": ARC_GRADES}}]))


def test_data_dir_override_and_missing_file(config_file, tmp_path):
    assert config.load(config_file(), {"data_dir": "/elsewhere"}).data_dir == "/elsewhere"
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")


def test_cli_bad_config_is_one_line_and_exit_2(config_file, tmp_path, capsys):
    path = config_file(boosting={"rounds": 0})
    code = cli.main(["prepare-data", "--config", str(path), "--dataset", "synthetic", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ensemw2s prepare-data: error: config key boosting.rounds: 0 is less than the minimum of 1")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
