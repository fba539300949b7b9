"""The controls: partition fit plans (disjoint parts, h_1's steps), the longer plan (T x h_1's steps), the
rounds each kind has, and the partition/longer rows of metrics.csv from hand-made score files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ensemw2s import collect, controls, rounds
from ensemw2s.config import TrainingSpec
from ensemw2s.errors import ConfigError
from ensemw2s.io import write_json, write_jsonl

VARIANTS = {"boost": {}, "partition": {"kind": "partition"}, "longer": {"kind": "longer"}}
Z = 1.959963984540054  # z_0.975


def spec(**changes) -> TrainingSpec:
    base = dict(epochs=2, learning_rate=3e-3, batch_size=4, grad_accum=1, max_length=64, weight_decay=0.0,
                warmup_ratio=0.0, precision="fp32", save_steps=200, select_on_val=False)
    return TrainingSpec(**{**base, **changes})


def row(uid: str, relation: str) -> dict:
    return {"uid": uid, "prompt": f"Question: what does the {uid} {relation}?\nAnswer:", "answer": f"{relation} x",
            "choices": [f"{relation} x", "b", "c", "d"], "gold": 0, "relation": relation}


def split_dir(root: Path, relations=("fear", "food", "home"), n_per: int = 4) -> Path:
    """weak_train: n_per rows per relation; val/test_id/test_ood: 2 per relation (+1 of a relation
    weak_train lacks in test_ood)."""
    train = [row(f"t{rel}{i}", rel) for rel in relations for i in range(n_per)]
    write_jsonl(root / "weak_train.jsonl", train)
    for split in ("val", "test_id", "test_ood"):
        rows = [row(f"{split}{rel}{i}", rel) for rel in relations for i in range(2)]
        write_jsonl(root / f"{split}.jsonl", rows + ([row(f"{split}new", "zzz")] if split == "test_ood" else []))
    write_jsonl(root / "student_pool.jsonl", [{"uid": "p0", "prompt": "Question: p?\nAnswer:"}])
    write_jsonl(root / "gold" / "student_pool.jsonl", [{"uid": "p0", "answer": "a", "gold": 0}])
    return root


@pytest.fixture
def cfg(make_config):
    def make(rounds=3, variants=VARIANTS, **kw):
        return make_config(boosting={"rounds": rounds, "variants": variants}, **kw)
    return make


# ---------------------------------------------------------------------------------------------
# fit plans


def test_values_are_dealt_into_parts_in_sorted_order():
    assert controls.parts(["e", "b", "a", "d", "c", "a"], 2, "k") == [["a", "c", "e"], ["b", "d"]]
    assert controls.parts(["x", "y", "z"], 3, "k") == [["x"], ["y"], ["z"]]
    with pytest.raises(ConfigError, match=r"2 distinct value\(s\).*lower boosting.rounds to 2"):
        controls.parts(["x", "y", "x"], 3, "relation")


def test_partition_members_fit_disjoint_parts_that_cover_weak_train(cfg, tmp_path):
    c, data = cfg(rounds=3), split_dir(tmp_path)
    rows = [json.loads(x) for x in (data / "weak_train.jsonl").read_text().splitlines()]
    plans = [controls.partition_plan(c, "synthetic", data, rows, spec(), r) for r in (1, 2, 3)]
    uids = [set(p.record["uids"]) for p in plans]
    assert [p.record["values"] for p in plans] == [["fear"], ["food"], ["home"]]
    assert uids[0] == {f"tfear{i}" for i in range(4)} and uids[1] == {f"tfood{i}" for i in range(4)}
    assert not (uids[0] & uids[1] or uids[0] & uids[2] or uids[1] & uids[2])
    assert set.union(*uids) == {r["uid"] for r in rows}
    assert [r["uid"] for r in plans[2].rows] == sorted(uids[2])  # the rows themselves, in weak_train order
    # h_1: 12 rows / batch 4 = 3 steps per epoch, 2 epochs = 6 steps; a member: 4 rows = 1 step per epoch,
    # so 2 x 3 = 6 epochs take the same 6 steps
    for p in plans:
        assert p.spec.epochs == 6.0 and p.spec.batch_size == 4
        assert p.record["optimizer_steps"] == p.record["h1_optimizer_steps"] == 6
    part = plans[1].files["partition.json"]
    assert part["key"] == "relation" and part["parts"] == [["fear"], ["food"], ["home"]] and part["member"] == 2
    assert part["part_of"]["weak_train"]["tfood3"] == 1 and part["part_of"]["val"] == {
        "valfear0": 0, "valfear1": 0, "valfood0": 1, "valfood1": 1, "valhome0": 2, "valhome1": 2}
    assert "test_oodnew" not in part["part_of"]["test_ood"]  # a relation weak_train never showed: no member
    assert part["n_choices"]["test_id"]["test_idhome1"] == 4


def test_uneven_parts_scale_epochs_by_steps_per_epoch(cfg, tmp_path):
    # relations a..d, 3 rows each, T = 3: parts [a, d] (6 rows), [b], [c] (3 rows); batch 2:
    # h_1 = ceil(12 / 2) = 6 steps per epoch x 1 epoch; part 1: 3 per epoch -> 2 epochs; parts 2, 3: 2 -> 3
    c, data = cfg(rounds=3), split_dir(tmp_path, relations=("a", "b", "c", "d"), n_per=3)
    rows = [json.loads(x) for x in (data / "weak_train.jsonl").read_text().splitlines()]
    plans = [controls.partition_plan(c, "synthetic", data, rows, spec(epochs=1, batch_size=2), r) for r in (1, 2, 3)]
    assert [p.record["values"] for p in plans] == [["a", "d"], ["b"], ["c"]]
    assert [p.spec.epochs for p in plans] == [2.0, 3.0, 3.0]
    assert [p.record["optimizer_steps"] for p in plans] == [6, 6, 6]


def test_too_few_values_is_a_config_error_and_no_key_skips_the_control(cfg, tmp_path):
    c, data = cfg(rounds=4), split_dir(tmp_path)
    rows = [json.loads(x) for x in (data / "weak_train.jsonl").read_text().splitlines()]
    with pytest.raises(ConfigError, match=r"3 distinct value\(s\) .*lower boosting.rounds to 3"):
        controls.partition_plan(c, "synthetic", data, rows, spec(), 1)
    sciq = cfg(datasets=[{"name": "sciq"}])  # SciQ's definition declares no key: the control does not apply
    assert "partition" in sciq.boosting.variants and "partition" not in sciq.variants_on("sciq")
    assert "partition" in cfg().variants_on("synthetic", experts_only=True)
    assert cfg(datasets=[{"name": "sciq", "partition_key": "source"}]).dataset("sciq").partition_key == "source"
    assert cfg().dataset("synthetic").partition_key == "relation"  # the definition's default
    assert cfg(datasets=[{"name": "mmlu"}]).dataset("mmlu").partition_key == "subject"


def test_longer_fits_every_row_for_T_times_h1s_steps(cfg, tmp_path):
    c, data = cfg(rounds=3), split_dir(tmp_path)
    rows = [json.loads(x) for x in (data / "weak_train.jsonl").read_text().splitlines()]
    plan = controls.longer_plan(c, "synthetic", data, rows, spec(), 1)
    assert plan.rows == rows and plan.spec.epochs == 6 and plan.files == {}
    assert plan.record["optimizer_steps"] == 18 and plan.record["h1_optimizer_steps"] == 6
    with pytest.raises(ConfigError, match="one expert"):
        controls.longer_plan(c, "synthetic", data, rows, spec(), 2)


def test_each_kind_has_its_rounds(cfg):
    b = cfg(rounds=3, variants={**VARIANTS, "partition-alpha": {"kind": "partition", "ensemble_weights": "alpha"}}).boosting
    assert [b.expert_rounds(v) for v in ("boost", "partition", "longer")] == [[1, 2, 3], [1, 2, 3], [1]]
    assert [b.ensemble_rounds(v) for v in ("boost", "partition", "longer", "partition-alpha")] == [
        [1, 2, 3], [3], [1], [3]]
    assert [b.student_rounds(v) for v in ("boost", "partition", "longer")] == [[1, 2, 3], [], [1]]
    assert [b.epochs_factor(v) for v in ("boost", "partition", "longer")] == [1, 1, 3]


# ---------------------------------------------------------------------------------------------
# metrics rows

UIDS = [f"q{i}" for i in range(8)]
PART_OF = {u: 0 if i < 4 else 1 for i, u in enumerate(UIDS)}  # q0..q3: member 1's part; q4..q7: member 2's
VAL = {  # per-question acc on val
    ("expert", "partition", 1): [1, 1, 1, 1, 0, 0, 1, 0],
    ("expert", "partition", 2): [0, 1, 0, 0, 1, 1, 1, 0],
    ("ensemble", "partition", 2): [1, 1, 1, 1, 1, 0, 1, 0],
    ("expert", "longer", 1): [1, 0, 1, 0, 1, 0, 1, 0],
    ("expert", "boost", 1): [1, 0, 0, 0, 1, 0, 1, 0],
    ("ensemble", "boost", 2): [1, 1, 1, 0, 1, 0, 1, 0],
}
TEST_ID = {  # member 1 right everywhere: the routed ensemble cannot beat it
    ("expert", "partition", 1): [1] * 8, ("expert", "partition", 2): [0, 0, 0, 0, 1, 1, 1, 0],
    ("ensemble", "partition", 2): [1] * 8, ("expert", "longer", 1): [1] * 8, ("expert", "boost", 1): [1] * 8,
    ("ensemble", "boost", 2): [1] * 8,
}


def fake_control_run(root: Path, seeds=(0,)) -> tuple[list[Path], list[Path]]:
    scores, boosting = [], []
    for seed in seeds:
        s, b = _fake_seed(root, seed)
        scores, boosting = scores + s, boosting + b
    return scores, boosting


def _fake_seed(root: Path, seed: int) -> tuple[list[Path], list[Path]]:
    scores, boosting = [], []
    for (role, ens, r), acc in VAL.items():
        path = root / "scores" / "synthetic" / f"s{seed}" / role / "weak" / ens / f"r{r}.json"
        splits = {split: {"n": 8, "acc": sum(a) / 8, "uids": UIDS, "per_example": {"acc": a}}
                  for split, a in (("val", acc), ("test_id", TEST_ID[(role, ens, r)]))}
        meta = {"role": role, "weak_model": "weak", "strong_model": "", "dataset": "synthetic", "seed": seed,
                "round": r, "ensemble": ens}
        write_json(path, {"meta": meta, "splits": splits, "tokens_processed": 1})
        scores.append(path)
    for r in (1, 2):
        d = root / "experts" / "weak" / "synthetic" / f"s{seed}" / "partition" / f"r{r}"
        write_json(d / "boosting.json", {"dataset": "synthetic", "seed": seed, "variant": "partition", "round": r,
                                         "weak_model": "weak"})
        write_json(d / "partition.json", {"key": "relation", "parts": [["a"], ["b"]], "member": r,
                                          "part_of": {"val": PART_OF, "test_id": PART_OF},
                                          "n_choices": {"val": {u: 4 for u in UIDS}, "test_id": {u: 4 for u in UIDS}}})
        boosting.append(d / "boosting.json")
    return scores, boosting


def _one(rows, **kw) -> dict:
    hits = [r for r in rows if all(r[k] == v for k, v in kw.items())]
    assert len(hits) == 1, (kw, hits)
    return hits[0]


@pytest.fixture
def control_rows(cfg, tmp_path):
    c = cfg(rounds=2)
    score_files, boosting_files = fake_control_run(tmp_path)
    scores = collect.Scores(score_files, {n: v.experts for n, v in c.boosting.variants.items()})
    return controls.rows(c, scores, boosting_files)


def test_member_rows_own_and_other_parts_and_competence(control_rows):
    get = lambda metric, r, split="val": _one(control_rows, metric=metric, round=r, eval_split=split,  # noqa: E731
                                              role="expert", ensemble="partition")
    assert get("partition_own_part_acc", 1)["value"] == 1.0 and get("partition_other_parts_acc", 1)["value"] == 0.25
    assert get("partition_own_part_acc", 2)["value"] == 0.75 and get("partition_other_parts_acc", 2)["value"] == 0.25
    # exact one-sided binomial against chance 1/4 on 4 own questions: 4 right p = 1/256 = 0.0039 (competent);
    # 3 right p = 4 x 0.25^3 x 0.75 + 0.25^4 = 13/256 = 0.0508 (not, at 5%)
    assert get("partition_member_competent", 1)["value"] == 1.0 and "p = 0.00391" in get("partition_member_competent", 1)["note"]
    assert get("partition_member_competent", 2)["value"] == 0.0 and "p = 0.0508" in get("partition_member_competent", 2)["note"]
    valid = _one(control_rows, metric="partition_valid", eval_split="val")
    assert valid["value"] == 0.0 and valid["note"] == "incompetent member(s): 2"
    assert valid["role"] == "ensemble" and valid["round"] == 2
    # the token-level ensemble on each member's part: [1,1,1,1] and [1,0,1,0]
    assert get("token_ensemble_part_acc", 1)["value"] == 1.0 and get("token_ensemble_part_acc", 2)["value"] == 0.5


def test_routed_ensemble_beats_every_member_with_paired_cis(control_rows):
    routed = _one(control_rows, metric="routed_acc", eval_split="val")
    assert routed["value"] == 7 / 8 and routed["ci_low"] <= 7 / 8 <= routed["ci_high"]
    # routed [1,1,1,1,1,1,1,0] minus member 1 [1,1,1,1,0,0,1,0]: d has two 1s in 8, mean 0.25,
    # McNemar var = (0.25 - 0.25^2) / 8; member 2: three 1s, mean 0.375
    for r, mean in ((1, 0.25), (2, 0.375)):
        row = _one(control_rows, metric="routed_minus_member", eval_split="val", round=r)
        se = 100 * math.sqrt((mean - mean * mean) / 8)
        assert row["value"] == pytest.approx(100 * mean, abs=1e-9) and row["note"] == ""
        assert row["ci_low"] == pytest.approx(100 * mean - Z * se, abs=1e-9)
    # token ensemble 6/8, best member 5/8, routed 7/8: it keeps (6/8 - 5/8) / (7/8 - 5/8) = 1/2 of the gain
    kept = _one(control_rows, metric="token_ensemble_kept_share", eval_split="val")
    assert kept["value"] == pytest.approx(0.5, abs=1e-12)


def test_a_routed_ensemble_that_does_not_beat_a_member_says_the_measurement_is_broken(control_rows):
    row = _one(control_rows, metric="routed_minus_member", eval_split="test_id", round=1)
    assert row["value"] == pytest.approx(-12.5, abs=1e-9)  # routed [1,1,1,1,1,1,1,0] vs member 1 all right
    assert row["note"] == "routed ensemble does not beat member 1: measurement broken"
    assert _one(control_rows, metric="routed_minus_member", eval_split="test_id", round=2)["note"] == ""
    assert math.isnan(_one(control_rows, metric="token_ensemble_kept_share", eval_split="test_id")["value"])


def test_every_ensemble_at_T_is_compared_with_the_longer_expert(control_rows):
    # boost r2 [1,1,1,0,1,0,1,0] - longer [1,0,1,0,1,0,1,0]: one +1 in 8; partition r2: two +1s
    for ens, mean in (("boost", 1 / 8), ("partition", 2 / 8)):
        row = _one(control_rows, metric="improvement_vs_longer", eval_split="val", ensemble=ens)
        se = 100 * math.sqrt((mean - mean * mean) / 8)
        assert row["round"] == 2 and row["value"] == pytest.approx(100 * mean, abs=1e-9)
        assert row["ci_high"] == pytest.approx(100 * mean + Z * se, abs=1e-9)
        assert "longer" in row["note"]
    assert not [r for r in control_rows if r["metric"] == "improvement_vs_longer" and r["ensemble"] == "longer"]


def test_pooled_comparisons_are_seed_stratified(cfg, tmp_path):
    # two seeds with the same per-question results: the same mean, the within-seed variance summed / 2^2
    c = cfg(rounds=2)
    score_files, boosting_files = fake_control_run(tmp_path, seeds=(0, 1))
    scores = collect.Scores(score_files, {n: v.experts for n, v in c.boosting.variants.items()})
    got = controls.rows(c, scores, boosting_files)
    row = _one(got, metric="routed_minus_member", eval_split="test_id", round=1, seed="all")
    se = 100 * math.sqrt(2 * (0.125 - 0.125**2) / 8 / 4)  # d: one -1 in 8 per seed
    assert row["value"] == pytest.approx(-12.5, abs=1e-9) and row["n"] == 2
    assert row["ci_low"] == pytest.approx(-12.5 - Z * se, abs=1e-9)
    assert row["note"] == "routed ensemble does not beat member 1: measurement broken"
    assert len([r for r in got if r["metric"] == "improvement_vs_longer" and r["seed"] == "all"]) == 2 * 2


def test_the_control_rows_reach_metrics_csv(cfg, tmp_path):
    c = cfg(rounds=2)
    score_files, boosting_files = fake_control_run(tmp_path)
    rows = collect.metric_rows(c, score_files, boosting_files)
    assert set(controls.METRICS) <= set(collect.METRICS)
    assert {r["metric"] for r in rows} >= {"routed_acc", "partition_valid", "improvement_vs_longer"}


# ---------------------------------------------------------------------------------------------
# the Done-when: the partition control's experts are trained on disjoint parts (real rounds, tiny model)


def test_partition_members_are_trained_on_disjoint_parts(make_config, tiny_model_dir, tmp_path, monkeypatch):
    c = make_config(boosting={"rounds": 2, "variants": {"partition": {"kind": "partition"}}},
                    training={"expert": {"epochs": 1, "batch_size": 4, "learning_rate": 0.01, "max_length": 64},
                              "student": {"epochs": 1, "batch_size": 4, "learning_rate": 0.01}})
    data = split_dir(tmp_path / "data", relations=("fear", "food"), n_per=4)
    fitted = []  # spy: the uids each fit saw
    real_fit = rounds.fit
    monkeypatch.setattr(rounds, "fit", lambda m, t, rows, *a, **kw: fitted.append([r["uid"] for r in rows])
                        or real_fit(m, t, rows, *a, **kw))
    r1, r2 = tmp_path / "partition" / "r1", tmp_path / "partition" / "r2"
    rounds.train_expert(c, "weak", "synthetic", 0, "partition", 1, data, tiny_model_dir, None, r1)
    rounds.train_expert(c, "weak", "synthetic", 0, "partition", 2, data, tiny_model_dir, r1, r2)
    plans = [json.loads((d / "boosting.json").read_text())["fit_plan"] for d in (r1, r2)]
    assert plans[0]["uids"] == [f"tfear{i}" for i in range(4)] and plans[1]["uids"] == [f"tfood{i}" for i in range(4)]
    assert fitted == [plans[0]["uids"], plans[1]["uids"]]  # what was fit is what was recorded
    assert plans[0]["optimizer_steps"] == plans[0]["h1_optimizer_steps"] == 2  # 8 rows / 4; 4 rows x 2 epochs
    for d, member in ((r1, 1), (r2, 2)):
        part = json.loads((d / "partition.json").read_text())
        assert part["member"] == member and part["parts"] == [["fear"], ["food"]]
        misses = json.loads((d / "answer_misses.json").read_text())
        assert len(misses["weak_train"]["uids"]) == 8  # misses are measured on every weak_train row


def test_prepared_synthetic_splits_carry_the_key_but_the_pool_does_not(make_config, tmp_path):
    """prepare-data keeps `relation` on the gold splits (all fields but student_pool's allow-list), so a
    partition plan runs on real split files; the pool's rows stay on the allow-list."""
    from ensemw2s.splitdir import read_pool, read_split
    from ensemw2s.splits import prepare_data
    from tests.test_splits import SMALL

    c = make_config(boosting={"rounds": 3, "variants": VARIANTS}, datasets=[{"name": "synthetic", "sizes": SMALL}])
    out = tmp_path / "split"
    prepare_data(c, "synthetic", 0, out)
    rows = read_split(out, "weak_train")
    assert all("relation" in r for r in rows) and not any("relation" in r for r in read_pool(out))
    plans = [controls.partition_plan(c, "synthetic", out, rows, c.expert_training, r) for r in (1, 2, 3)]
    assert sorted(u for p in plans for u in p.record["uids"]) == sorted(r["uid"] for r in rows)
    part = plans[0].files["partition.json"]
    assert set(part["part_of"]["test_id"]) <= {json.loads(x)["uid"] for x in (out / "test_id.jsonl").read_text().splitlines()}
    assert [p.record["values"] for p in plans] == [["fear"], ["food"], ["home"]]  # the task's 3 relations, sorted
