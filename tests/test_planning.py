"""planning.py: the test size from a planning discordance (by hand), discordances from score files, the second variant."""
import pandas as pd
import pytest

from ensemw2s import cli

from ensemw2s.errors import UserError
from ensemw2s.io import write_json
from ensemw2s.planning import discordances, go_no_go, plan, planned_test_size, render_go_no_go, second_variant
from tests.conftest import REPO
from ensemw2s.collect import COLUMNS


def test_planned_test_size_by_hand():
    # (1.959964 + 0.841621)^2 = 7.848879; x 0.2 / (3 x 0.05^2) = 209.30 -> 210
    assert planned_test_size(0.2, 0.05, 3) == 210
    assert planned_test_size(0.4, 0.05, 3) == 419  # twice the discordance: twice the questions (418.6)
    assert planned_test_size(0.2, 0.05, 1) == 628  # one seed: three times (627.9)
    with pytest.raises(ValueError):
        planned_test_size(0.0, 0.05, 3)


def _score(root, role, r, ensemble, acc, split="test_id", seed=0, strong="", dataset="d"):
    path = root / "scores" / dataset / f"s{seed}" / role / f"{ensemble}_{strong}r{r}.json"
    uids = [f"q{i}" for i in range(len(acc))]
    write_json(path, {"meta": {"role": role, "weak_model": "w", "strong_model": strong, "dataset": dataset, "seed": seed,
                               "round": r, "ensemble": ensemble},
                      "splits": {split: {"uids": uids, "per_example": {"acc": acc}}}})


def test_discordances_take_the_largest_over_comparisons_and_seeds(tmp_path):
    _score(tmp_path, "expert", 1, "boost", [1, 1, 0, 0, 1])
    _score(tmp_path, "expert", 2, "boost", [0, 0, 0, 0, 0])  # h_2 is not a reference
    _score(tmp_path, "ensemble", 2, "boost", [1, 0, 0, 0, 1])  # 1 of 5 differs
    _score(tmp_path, "ensemble", 3, "boost-uniform", [0, 0, 1, 0, 1])  # 3 of 5
    _score(tmp_path, "expert", 1, "boost", [1, 1], seed=1)
    _score(tmp_path, "ensemble", 2, "boost", [0, 1], seed=1)  # 1 of 2: the largest
    _score(tmp_path, "ensemble", 2, "boost", [0, 0, 0, 0, 0], seed=2)  # no h_1 of seed 2: not compared
    _score(tmp_path, "student", 1, "boost", [1, 1, 1, 1, 1], split="test_ood", strong="s")
    _score(tmp_path, "student", 3, "boost", [0, 0, 1, 1, 1], split="test_ood", strong="s")  # 2 of 5
    _score(tmp_path, "student", 3, "boost", [0, 0, 0, 0, 0], split="test_ood", strong="t")  # no student of h_1 for t
    assert discordances(tmp_path) == {("d", "test_id"): 0.6, ("d", "test_ood"): 0.4}
    with pytest.raises(UserError, match="no ensemble or student scored beside its r = 1 reference"):
        discordances(tmp_path / "empty")


def _gate_score(root, role, per_split, weak="w", strong="s"):
    path = root / f"{role}.json"
    write_json(path, {"meta": {"role": role, "weak_model": weak if role in ("weak_base", "expert") else "",
                               "strong_model": strong if role in ("strong_base", "ceiling") else "",
                               "dataset": "d", "seed": 0, "round": int(role == "expert"),
                               "ensemble": "boost" if role == "expert" else ""},
                      "splits": {split: {"uids": [f"q{i}" for i in range(len(acc))], "per_example": {"acc": acc}}
                                 for split, acc in per_split.items()}})
    return path


def test_go_no_go_by_hand(tmp_path, capsys):
    """test_id: ceiling - h_1 = 0.4 on 10 questions, d = (0 x 5, 1 x 4, 0): var = (0.4 - 0.4^2) / 10 = 0.024,
    SE 15.49 points, CI 40 -+ 1.96 x 15.49 = [+9.6, +70.4]: above 0. test_ood: d = 0.1, var = (0.1 - 0.01) / 10,
    SE 9.49, CI [-8.6, +28.6]: includes 0, so the pair does not qualify."""
    h1 = {"test_id": [1] * 5 + [0] * 5, "test_ood": [1, 0] * 5}
    ceiling = {"test_id": [1] * 9 + [0], "test_ood": [1, 1, 1, 0, 1, 0, 1, 0, 1, 0]}
    base = {"test_id": [0, 1] * 5, "test_ood": [0] * 10}
    files = [_gate_score(tmp_path, "expert", h1), _gate_score(tmp_path, "ceiling", ceiling),
             _gate_score(tmp_path, "weak_base", base), _gate_score(tmp_path, "strong_base", base)]
    gate = go_no_go(files)
    ident, ood = gate["splits"]["test_id"], gate["splits"]["test_ood"]
    assert ident["expert"] == 50 and ident["ceiling"] == 90 and ident["weak_base"] == 50 and ood["strong_base"] == 0
    assert ident["ceiling_minus_h1"] == pytest.approx(40) and ident["n"] == 10
    assert (ident["ci_low"], ident["ci_high"]) == pytest.approx((9.64, 70.36), abs=0.01)
    assert (ood["ci_low"], ood["ci_high"]) == pytest.approx((-8.59, 28.59), abs=0.01)
    assert gate["go"] is False and (gate["weak_model"], gate["strong_model"]) == ("w", "s")
    assert "| test_id | 50.0 | 50.0 | 50.0 | 90.0 | +40.0 [+9.6, +70.4] | 10 |" in render_go_no_go(gate)
    _gate_score(tmp_path, "ceiling", {**ceiling, "test_ood": [1] * 10})  # d = 0.5, var 0.025: CI [+19.0, +81.0]
    assert go_no_go(files)["go"] is True
    out = tmp_path / "gate.json"
    assert cli.main(["go-no-go", "--config", str(REPO / "config" / "config.yaml"), "--scores", *map(str, files),
                     "--out", str(out)]) == 0
    assert "GO (go when" in capsys.readouterr().out and out.is_file()


def test_go_no_go_needs_one_file_of_each_role_on_the_same_rows(tmp_path):
    h1 = _gate_score(tmp_path, "expert", {"test_id": [1, 0], "test_ood": [1, 0]})
    others = [_gate_score(tmp_path, r, {"test_id": [1, 1], "test_ood": [1, 1]}) for r in ("weak_base", "strong_base")]
    with pytest.raises(UserError, match="no score file of ceiling"):
        go_no_go([h1, *others])
    with pytest.raises(UserError, match="a second 'expert' score"):
        go_no_go([h1, h1, *others])
    ceiling = _gate_score(tmp_path, "ceiling", {"test_id": [1, 1, 1], "test_ood": [1, 1]})
    with pytest.raises(UserError, match="do not all score the same test_id rows"):
        go_no_go([h1, ceiling, *others])


def _ablation(tmp_path, config_file, gains):
    config_file(boosting={"variants": {"boost": {}, "boost-uniform": {"ensemble_weights": "uniform"},
                                       "bagging": {"kind": "bagging"}, "longer": {"kind": "longer"}}})
    rows = [{c: "" for c in COLUMNS} | {"weak_model": "w", "dataset": "d", "eval_split": "val", "role": "ensemble",
                                        "ensemble": e, "round": r, "seed": s, "score": "acc",
                                        "metric": "improvement_vs_expert1", "value": v, "n": 10}
            for e, r, s, v in gains]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp_path / "metrics.csv", index=False)
    return tmp_path


def test_second_variant_is_the_best_val_gain_at_the_last_round_without_the_method_and_controls(tmp_path, config_file):
    run = _ablation(tmp_path, config_file, [
        ("boost", 3, "all", 9.0),  # the method: not a candidate
        ("longer", 1, "all", 8.0),  # a control: not a candidate
        ("bagging", 2, "all", 7.0), ("bagging", 3, "all", 1.0),  # its last round counts: 1.0
        ("boost-uniform", 3, "all", 2.5), ("boost-uniform", 3, "0", 6.0),  # one seed's row: not the mean
    ])
    assert second_variant(run) == ("boost-uniform", 2.5)


def test_plan_lines(tmp_path, config_file, make_config):
    ablation = _ablation(tmp_path, config_file, [("bagging", 3, "all", 1.5)])
    committed = tmp_path / "committed"
    cfg = make_config(seeds=[0, 1, 2])
    name = cfg.datasets[0].name
    _score(committed, "expert", 1, "boost", [1, 1, 0, 0], dataset=name)
    _score(committed, "ensemble", 2, "boost", [1, 1, 1, 1], dataset=name)  # 2 of 4 differ
    _score(committed, "expert", 1, "boost", [1, 1, 0, 0], dataset="other")  # not a dataset of the plan
    _score(committed, "ensemble", 2, "boost", [0, 0, 1, 1], dataset="other")
    text = plan(cfg, committed, ablation, delta_points=5, floor=0.2)
    assert f"{name} test_id: discordance seen 0.500 -> p_d 0.500 -> n >= 524" in text  # 7.848879 x 0.5 / 0.0075
    assert "other" not in text
    assert "second variant: bagging" in text and "+1.5 points" in text
    assert all(line.startswith("#") for line in text.splitlines())


def test_the_real_runs_config_holds_the_plan_the_readme_command_prints(capsys, monkeypatch):
    """config/cpu-real.yaml's header was computed by the README's command from the committed runs, not typed:
    every test size and the second variant it states are what the command prints now."""
    monkeypatch.chdir(REPO)
    assert cli.main(["power-plan", "--config", "config/cpu-real.yaml", "--committed", "results/cpu-real-pilot",
                     "--ablation", "results/ablation"]) == 0
    printed = [line.strip("# ") for line in capsys.readouterr().out.splitlines()]
    header = " ".join(line.strip("# ") for line in (REPO / "config" / "cpu-real.yaml").read_text().splitlines()
                      if line.startswith("#"))
    sizes = [line for line in printed if " -> n >= " in line]
    assert sizes and all(line in header for line in sizes)
    variant = next(line for line in printed if line.startswith("second variant: "))
    assert variant.split(" (")[0] in header
    cfg_sizes = (REPO / "config" / "cpu-real.yaml").read_text()
    for line in sizes:  # the config's own sizes meet the plan
        split, n = line.split(":")[0].split()[1], int(line.rsplit(">= ", 1)[1])
        assert f"{split}: {n}" in cfg_sizes
