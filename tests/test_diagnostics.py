"""diagnostics.py: fix rates from answer_misses.json, oracle accuracy, expert disagreement and pick
distributions from score files, every number worked by hand on tiny inputs."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from ensemw2s import diagnostics as D
from ensemw2s import metrics as M
from ensemw2s.collect import METRICS, boosting_rows, write_metrics
from ensemw2s.config import stable_hash
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import write_json
from tests.conftest import ALL_VARIANTS
from tests.test_collect import find, one, read_rows

T_975_1 = 12.7062047  # t quantile of a two-seed interval: half-width = T * |a - b| / 2

# ---------------------------------------------------------------------------------------------
# answer_misses.json: 3 val rows (answers of 2, 3 and 2 tokens) and 1 weak_train row; the rounds list
# val rows in different orders (matched by uid)
VAL_UIDS = {1: ["a", "b", "c"], 2: ["c", "a", "b"], 3: ["b", "c", "a"]}
VAL_MISSED = {1: {"a": [1, 0], "b": [0, 0, 0], "c": [1, 1]},
              2: {"a": [0, 0], "b": [1, 0, 0], "c": [0, 1]},
              3: {"a": [0, 0], "b": [0, 0, 0], "c": [1, 1]}}
TRAIN_MISSED = {1: [0, 1], 2: [0, 0], 3: [1, 0]}


def _expert_dir(root, seed, r, variant="boost"):
    return root / "experts" / "w" / "d" / f"s{seed}" / variant / f"r{r}"


def _boosting(root, seed, r, variant="boost", **extra):
    path = _expert_dir(root, seed, r, variant) / "boosting.json"
    write_json(path, {"weak_model": "w", "dataset": "d", "seed": seed, "round": r, "variant": variant,
                      "n_tokens": 2, "eps": 0.25, "alpha": 1.5, **extra})
    return path


def _misses(root, seed, r, val: dict, train: list | None = None, variant="boost"):
    rec = {"val": {"uids": list(val), "missed": list(val.values())}}
    if train is not None:
        rec["weak_train"] = {"uids": ["x"], "missed": [train]}
    write_json(_expert_dir(root, seed, r, variant) / D.MISSES_FILE, rec)


def test_fix_rates_by_hand():
    # h_{t-1} missed a0, c0, c1 (3 tokens, questions a and c); h_t gets a0 and c0 right, misses c1 again
    prev = [[1, 0], [0, 0, 0], [1, 1]]
    this = [[0, 0], [1, 0, 0], [0, 1]]
    assert D.fix_rates(prev, this) == (2 / 3, 3, 1 / 2, 2)
    assert D.miss_rate(this) == (2 / 7, 7)
    tok, n_tok, qs, n_qs = D.fix_rates([[0, 0]], [[1, 0]])  # nothing to fix
    assert (n_tok, n_qs) == (0, 0) and math.isnan(tok) and math.isnan(qs)


@pytest.fixture
def misses_run(tmp_path, make_config):
    """Seed 0: rounds 1-3 with misses, round 4 stopped (boosting.json only); seed 1: rounds 1-2, one row."""
    root = tmp_path / "run"
    files = []
    for r in (1, 2, 3):
        files.append(_boosting(root, 0, r))
        _misses(root, 0, r, {u: VAL_MISSED[r][u] for u in VAL_UIDS[r]}, TRAIN_MISSED[r])
    files.append(_boosting(root, 0, 4, alpha=None, stopped=True))
    for r, missed in ((1, [1]), (2, [0])):
        files.append(_boosting(root, 1, r))
        _misses(root, 1, r, {"a": missed})
    expert = _score(root / "e.json", _meta("expert", 1), {"val": {"acc": [1], "pick": [0], "gold": [0]}})
    cfg = make_config(boosting={"rounds": 4, "variants": ALL_VARIANTS})
    return read_rows(write_metrics(cfg, [expert], files, tmp_path / "m.csv"))


def test_fix_rate_rows_from_answer_misses(misses_run):
    rows = misses_run
    got = {(r["seed"], r["round"], r["eval_split"], r["metric"]): (float(r["value"]), r["n"])
           for r in find(rows, role="expert", ensemble="boost", weak_model="w", dataset="d")
           if r["metric"] in D.FIX_METRICS and r["seed"] != "all"}
    assert all(one(rows, metric=m, seed=s, round=t, eval_split=sp)["score"] == "" for s, t, sp, m in got)
    want = {
        # val: h_1 missed a0, c0, c1; h_2 fixes a0 and c0, and question a only
        ("0", "1", "val", "miss_rate_tokens"): (3 / 7, "7"),
        ("0", "2", "val", "miss_rate_tokens"): (2 / 7, "7"),
        ("0", "2", "val", "fix_rate_tokens"): (2 / 3, "3"),
        ("0", "2", "val", "fix_rate_questions"): (1 / 2, "2"),
        # h_2 missed b0 and c1; h_3 fixes b0 (question b fully right), misses c1 again (c0 too)
        ("0", "3", "val", "miss_rate_tokens"): (2 / 7, "7"),
        ("0", "3", "val", "fix_rate_tokens"): (1 / 2, "2"),
        ("0", "3", "val", "fix_rate_questions"): (1 / 2, "2"),
        # weak_train: h_1 missed token 1, h_2 fixes it; h_2 missed nothing, so round 3 has no fix rate
        ("0", "1", "weak_train", "miss_rate_tokens"): (1 / 2, "2"),
        ("0", "2", "weak_train", "miss_rate_tokens"): (0.0, "2"),
        ("0", "2", "weak_train", "fix_rate_tokens"): (1.0, "1"),
        ("0", "2", "weak_train", "fix_rate_questions"): (1.0, "1"),
        ("0", "3", "weak_train", "miss_rate_tokens"): (1 / 2, "2"),
        ("1", "1", "val", "miss_rate_tokens"): (1.0, "1"),
        ("1", "2", "val", "miss_rate_tokens"): (0.0, "1"),
        ("1", "2", "val", "fix_rate_tokens"): (1.0, "1"),
        ("1", "2", "val", "fix_rate_questions"): (1.0, "1"),
    }
    assert got.keys() == want.keys()
    for key, (value, n) in want.items():  # metrics.csv keeps 10 significant digits
        assert got[key] == (pytest.approx(value, rel=1e-9), n), key
    assert not find(rows, round=4, role="expert", eval_split="val")  # a stopped round has no answer_misses.json


def test_fix_rates_pool_over_seeds_with_a_t_interval(misses_run):
    pooled = one(misses_run, metric="fix_rate_tokens", seed="all", round=2, eval_split="val")
    assert float(pooled["value"]) == pytest.approx((2 / 3 + 1) / 2, rel=1e-9)
    half = T_975_1 * (1 - 2 / 3) / 2
    assert float(pooled["ci_high"]) - float(pooled["value"]) == pytest.approx(half, rel=1e-6)
    assert pooled["n"] == "2"


def test_misses_of_different_rows_are_refused(tmp_path, make_config):
    root = tmp_path / "run"
    files = [_boosting(root, 0, 1), _boosting(root, 0, 2)]
    _misses(root, 0, 1, {"a": [1], "b": [0]})
    _misses(root, 0, 2, {"a": [0], "z": [0]})
    first, second = (str(_expert_dir(root, 0, r) / D.MISSES_FILE) for r in (1, 2))
    with pytest.raises(UserError, match="list different val rows") as err:
        D.fix_rows(files)
    assert first in str(err.value) and second in str(err.value)
    _misses(root, 0, 2, {"b": [0], "a": [0, 0]})  # same uids, another tokenisation of a
    with pytest.raises(DataFileError, match="row a has 1 and 2 answer tokens"):
        D.fix_rows(files)
    write_json(_expert_dir(root, 0, 2) / D.MISSES_FILE, {"val": {"uids": ["a", "b"], "missed": [[0]]}})
    with pytest.raises(DataFileError, match="'uids' and 'missed' lists of equal length"):
        D.fix_rows(files)


def test_new_boosting_json_fields_become_rows(tmp_path):
    path = _boosting(tmp_path, 0, 2, alpha_update=0.75, missed_token_share=0.5, effective_sample_size=1.6,
                     prior_term=-2.25, e_ref=None, tokens_processed=1234, missed_mass_after_update=0.5)
    got = {r["metric"]: r["value"] for r in boosting_rows(path)}
    assert got == {"eps": 0.25, "alpha": 1.5, "alpha_update": 0.75, "missed_mass_after_update": 0.5,
                   "missed_token_share": 0.5, "effective_sample_size": 1.6, "prior_term": -2.25,
                   "training_tokens": 1234.0}  # e_ref null (prior none): no row
    assert "tokens_processed" not in got  # that name is the scoring cost (eval_split all)


def test_every_diagnostic_has_a_place_in_the_row_order():
    assert set(D.DIAGNOSTIC_METRICS) <= set(METRICS)
    assert len(set(METRICS)) == len(METRICS)


# ---------------------------------------------------------------------------------------------
# score files: 5 questions, gold = [0, 1, 2, 3, 0]; acc is (pick == gold)
GOLD = [0, 1, 2, 3, 0]
PICKS = {1: [0, 1, 0, 1, 1],  # acc [1, 1, 0, 0, 0]; top position 1 on 3/5
         2: [1, 1, 2, 0, 1],  # acc [0, 1, 1, 0, 0]; top position 1 on 3/5
         3: [0, 0, 0, 0, 0]}  # acc [1, 0, 0, 0, 1]; position 0 always: degenerate
PICKS_SEED1 = {**PICKS, 3: [0, 0, 0, 0, 1]}  # h_3 of seed 1: position 0 on 4/5, not flagged alone
ENSEMBLE_PICKS = {2: [0, 1, 2, 1, 1], 3: [0, 1, 2, 3, 0]}


def _meta(role, r, ensemble="boost", seed=0):
    return {"role": role, "dataset": "d", "seed": seed, "weak_model": "w", "strong_model": "", "ensemble": ensemble,
            "round": r}


def _score(path, meta, splits, tokens=10):
    blocks = {}
    for split, per in splits.items():
        uids = [f"{split}-{i}" for i in range(len(per["acc"]))]
        blocks[split] = {"n": len(uids), "acc": float(np.mean(per["acc"])), "per_example": per, "uids": uids}
    write_json(path, {"meta": meta, "splits": blocks, "tokens_processed": tokens})
    return path


def _mc(picks, with_picks=True):
    acc = [int(p == g) for p, g in zip(picks, GOLD)]
    per = {"acc": acc, "pick": picks, "gold": GOLD} if with_picks else {"acc": acc}
    return {split: dict(per) for split in ("val", "test_id")}


def _score_run(root, seeds=(0,), with_picks=True):
    files = []
    for seed in seeds:
        picks = PICKS if seed == 0 else PICKS_SEED1
        for r in (1, 2, 3):
            files.append(_score(root / f"s{seed}" / f"e{r}.json", _meta("expert", r, seed=seed),
                                _mc(picks[r], with_picks)))
        for r in (2, 3):
            files.append(_score(root / f"s{seed}" / f"ens{r}.json", _meta("ensemble", r, seed=seed),
                                _mc(ENSEMBLE_PICKS[r], with_picks)))
        files.append(_score(root / f"s{seed}" / "uni2.json", _meta("ensemble", 2, "boost-uniform", seed),
                            _mc(ENSEMBLE_PICKS[2], with_picks)))
    return files


@pytest.fixture
def scores_run(tmp_path, make_config):
    cfg = make_config(boosting={"rounds": 3, "variants": ALL_VARIANTS})
    return cfg, read_rows(write_metrics(cfg, _score_run(tmp_path / "run", seeds=(0, 1)), [], tmp_path / "m.csv"))


def test_oracle_and_disagreement_by_hand(scores_run):
    cfg, rows = scores_run

    def value(metric, r, split="val", ensemble="boost", seed=0):
        row = one(rows, metric=metric, role="ensemble", ensemble=ensemble, round=r, eval_split=split, seed=seed)
        assert row["score"] == "acc" and row["n"] == "5"
        return float(row["value"])

    # any of h_1, h_2 right: questions 0, 1, 2; h_3 adds question 4
    assert value("oracle_acc", 2) == pytest.approx(3 / 5) and value("oracle_acc", 3) == pytest.approx(4 / 5)
    assert value("oracle_acc", 3, "test_id") == pytest.approx(4 / 5)
    # h_1 vs h_2 differ on questions 0, 2, 3; with h_3: pairs (1,3) 3/5, (2,3) 4/5 -> mean (3 + 3 + 4) / 15
    assert value("expert_disagreement", 2) == pytest.approx(3 / 5)
    assert value("expert_disagreement", 3) == pytest.approx(10 / 15)
    # boost-uniform combines boost's experts: the same ceiling
    assert value("oracle_acc", 2, ensemble="boost-uniform") == pytest.approx(3 / 5)
    assert not find(rows, metric="oracle_acc", round=1)  # r = 1 is h_1 alone
    # the CI comes from the accuracies' resamples of this split: paired with them
    weights = M.resample_weights(5, cfg.evaluation.bootstrap, int(stable_hash(["d", 0, "val", 5]), 16))
    ci = M.bootstrap_ci([1, 1, 1, 0, 1], weights)
    row = one(rows, metric="oracle_acc", role="ensemble", ensemble="boost", round=3, eval_split="val", seed=0)
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(ci, abs=1e-9)
    h1 = one(rows, metric="acc", role="expert", round=1, eval_split="val", seed=0)
    assert (float(h1["ci_low"]), float(h1["ci_high"])) == pytest.approx(M.bootstrap_ci([1, 1, 0, 0, 0], weights))
    # seed 1's h_3 misses question 4 (picks 1): its oracle stays at h_1, h_2's 3/5; pooled: mean, t-interval
    assert value("oracle_acc", 3, seed=1) == pytest.approx(3 / 5)
    pooled = one(rows, metric="oracle_acc", ensemble="boost", round=3, eval_split="val", seed="all")
    assert float(pooled["value"]) == pytest.approx(7 / 10) and pooled["n"] == "2"
    assert float(pooled["ci_high"]) - 0.7 == pytest.approx(T_975_1 * 0.2 / 2, rel=1e-6)


def test_pick_distribution_flags_the_degenerate_predictor(scores_run):
    _, rows = scores_run

    def pick(role, r, seed=0, ensemble="boost"):
        top = one(rows, metric="pick_top_share", role=role, round=r, eval_split="val", seed=seed, ensemble=ensemble)
        gold = one(rows, metric="gold_top_share", role=role, round=r, eval_split="val", seed=seed, ensemble=ensemble)
        return float(top["value"]), float(gold["value"]), top["note"]

    assert pick("expert", 1) == (pytest.approx(0.6), pytest.approx(0.2), "")  # position 1; gold there once
    assert pick("expert", 3) == (1.0, pytest.approx(0.4), "degenerate: picks position 0 on 100.0% of questions")
    assert pick("expert", 3, seed=1) == (pytest.approx(0.8), pytest.approx(0.4), "")
    assert pick("ensemble", 3) == (pytest.approx(0.4), pytest.approx(0.4), "")  # always right: gold's spread
    # pooled over the seeds: mean 0.9 reaches DEGENERATE_SHARE, flagged with its (common) position
    pooled = one(rows, metric="pick_top_share", role="expert", round=3, eval_split="val", seed="all")
    assert float(pooled["value"]) == pytest.approx(0.9)
    assert pooled["note"] == "degenerate: picks position 0 on 90.0% of questions"
    assert float(pooled["ci_high"]) - 0.9 == pytest.approx(T_975_1 * 0.2 / 2, rel=1e-6)
    assert one(rows, metric="pick_top_share", role="expert", round=1, eval_split="val", seed="all")["note"] == ""
    # the round-1 ensemble (h_1 under the ensemble's name) is not counted twice
    assert not find(rows, metric="pick_top_share", role="ensemble", round=1)


def test_degenerate_threshold():
    assert D.DEGENERATE_SHARE == 0.9
    assert D.degenerate_note(2, 0.9) == "degenerate: picks position 2 on 90.0% of questions"
    assert D.degenerate_note(2, 0.89) == ""
    assert D.degenerate_note(None, 0.95) == "degenerate: picks one position on 95.0% of questions"
    assert D.top_position(np.array([2, 1, 1, 2, 3])) == (1, 0.4)  # a tie goes to the smaller position


def test_older_score_files_without_picks_give_oracle_only(tmp_path, make_config):
    cfg = make_config(boosting={"rounds": 3, "variants": ALL_VARIANTS})
    rows = read_rows(write_metrics(cfg, _score_run(tmp_path / "run", with_picks=False), [], tmp_path / "m.csv"))
    assert float(one(rows, metric="oracle_acc", ensemble="boost", round=3, eval_split="val")["value"]) == \
        pytest.approx(4 / 5)
    assert not [r for r in rows if r["metric"] in ("expert_disagreement", *D.PICK_METRICS)]


def test_diagnostics_load_no_torch():
    code = ("import sys, ensemw2s.diagnostics, ensemw2s.collect; "
            "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
