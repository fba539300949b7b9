"""collect.py: score files + boosting.json -> metrics.csv; derived rows recomputed from the accuracy rows."""
from __future__ import annotations

import copy
import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ensemw2s import config as config_mod
from ensemw2s.collect import COLUMNS, boosting_rows, write_metrics
from ensemw2s.config import stable_hash
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import read_json, write_json
from tests.conftest import ALL_VARIANTS, BASE_CONFIG

N = 60  # examples per split: every accuracy below is a multiple of 1/60 and is hit exactly
SPLITS = ("val", "test_id", "test_ood")


def _accuracy(role: str, ensemble: str, r: int, split: str, seed: int, score: str) -> float:
    """A plausible run: ensembles and students improve with r, OOD is harder, seeds differ a little."""
    base = {"weak_base": 0.30, "strong_base": 0.35, "expert": 0.45, "ensemble": 0.45, "student": 0.55,
            "ceiling": 0.75}[role]
    gain = {"expert": 0.0, "ensemble": 0.05, "student": 0.0333}.get(role, 0.0) * (r - 1)
    gain *= {"boost": 1.0, "boost-uniform": 0.6, "bagging": 0.3, "sequence": 0.8}.get(ensemble, 1.0)
    if role == "expert" and r > 1:  # later experts alone are worse: they specialise on hard tokens
        gain = -0.05 * (r - 1)
    shift = {"val": 0.0, "test_id": 0.0167, "test_ood": -0.1}[split] + 0.0167 * seed
    shift += {"acc": 0.0, "acc_norm": 0.0333, "exact_match": -0.1}[score]
    noise = (int(stable_hash([role, ensemble, r, seed]), 16) % 5 - 2) / N  # a model's luck on one seed
    return round((base + gain + shift + noise) * N) / N


def _bits(acc: float, key: str) -> list[int]:
    x = np.zeros(N, dtype=int)
    x[: round(acc * N)] = 1
    return np.random.default_rng(int(stable_hash(key), 16)).permutation(x).tolist()


def score_file(path: Path, meta: dict, accuracy, tokens: int = 1000) -> Path:
    """Write a score file in the format of docs/architecture.md with exact per-split accuracies."""
    splits = {}
    for split in SPLITS:
        per = {m: _bits(accuracy(split, m), f"{path}{split}{m}") for m in ("acc", "acc_norm", "exact_match")}
        splits[split] = {"n": N, **{m: float(np.mean(v)) for m, v in per.items()}, "per_example": per,
                         "uids": [f"{split}-{i}" for i in range(N)]}
    write_json(path, {"meta": meta, "splits": splits, "tokens_processed": tokens})
    return path


def fake_run(root: Path, seeds=(0, 1), rounds=3, datasets=("sciq",), ensembles=("boost", "boost-uniform", "bagging"),
             variants=("boost", "bagging"), weak="gpt2", strong="gpt2-xl") -> tuple[list[Path], list[Path]]:
    """Score files of every role and boosting.json of every round; returns (score files, boosting files)."""
    scores, boosting = [], []
    for ds in datasets:
        for seed in seeds:
            d = root / "scores" / ds / f"s{seed}"
            meta = dict(dataset=ds, seed=seed, weak_model="", strong_model="", ensemble="", round=0)

            def add(rel, role, ens="", r=0, **kw):
                m = {**meta, "role": role, "ensemble": ens, "round": r, **kw}
                acc = lambda split, score: _accuracy(role, ens, r, split, seed, score)  # noqa: E731
                scores.append(score_file(d / rel, m, acc, tokens=1000 * (r or 1)))

            add(f"weak_base/{weak}.json", "weak_base", weak_model=weak)
            add(f"strong_base/{strong}.json", "strong_base", strong_model=strong)
            add(f"ceiling/{strong}.json", "ceiling", strong_model=strong)
            for r in range(1, rounds + 1):
                for v in variants:
                    add(f"expert/{weak}/{v}/r{r}.json", "expert", v, r, weak_model=weak)
                    exp = root / "experts" / weak / ds / f"s{seed}" / v / f"r{r}" / "boosting.json"
                    eps = 0.30 + {"boost": 0.05, "bagging": 0.02}.get(v, 0.04) * r + 0.01 * seed
                    alpha = math.log((1 - eps) / eps) + math.log(299)
                    write_json(exp, {"weak_model": weak, "dataset": ds, "seed": seed, "round": r, "variant": v,
                                     "eps": eps, "alpha": alpha,
                                     "K": 300, "n_tokens": 500, "n_missed": int(500 * eps), "stopped": False,
                                     "stop_reason": None, "weight_entropy": math.log(500) - (eps - 0.3) * 4 * r,
                                     "weight_top10_share": 0.1 + (eps - 0.3) * r})
                    boosting.append(exp)
                for e in ensembles:
                    add(f"ensemble/{weak}/{e}/r{r}.json", "ensemble", e, r, weak_model=weak)
                    add(f"student/{weak}__{strong}/{e}/r{r}.json", "student", e, r, weak_model=weak,
                        strong_model=strong)
    return scores, boosting


def read_rows(path: Path) -> Rows:
    with open(path, newline="") as fh:
        return Rows(csv.DictReader(fh))


class Rows(list):
    """metrics.csv rows with a per-metric index (the tests look rows up thousands of times)."""

    def __init__(self, rows):
        super().__init__(rows)
        self.by_metric: dict[str, list[dict]] = {}
        for r in self:
            self.by_metric.setdefault(r["metric"], []).append(r)


def find(rows, **kw) -> list[dict]:
    pool = rows.by_metric.get(str(kw["metric"]), []) if "metric" in kw and isinstance(rows, Rows) else rows
    return [r for r in pool if all(r[k] == str(v) for k, v in kw.items())]


def one(rows, **kw) -> dict:
    hits = find(rows, **kw)
    assert len(hits) == 1, (kw, hits)
    return hits[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One collected fake run (2 seeds, 3 rounds, 3 ensembles) shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("run")
    cfg = config_mod.from_dict({**copy.deepcopy(BASE_CONFIG), "results_dir": str(root / "results"),
                                "boosting": {"rounds": 3, "variants": ALL_VARIANTS}})
    scores, boosting = fake_run(root)
    out = write_metrics(cfg, scores, boosting, root / "metrics.csv")
    return cfg, scores, boosting, out, read_rows(out)


def test_columns_and_accuracy_rows_match_score_files(run):
    cfg, scores, _, out, rows = run
    assert list(rows[0]) == COLUMNS
    for path in scores:
        s = read_json(path)
        meta = s["meta"]
        for split in SPLITS:
            for m in ("acc", "acc_norm", "exact_match"):
                row = one(rows, role=meta["role"], dataset="sciq", seed=meta["seed"], round=meta["round"],
                          ensemble=meta["ensemble"], eval_split=split, metric=m, weak_model=meta["weak_model"],
                          strong_model=meta["strong_model"])
                assert float(row["value"]) == pytest.approx(s["splits"][split][m], abs=1e-9)
                assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
                assert row["n"] == str(N) and row["score"] == m


def _per_example(rows_file_scores, **meta_kw):
    """Per-example acc array of one score file picked by its meta."""
    for path in rows_file_scores:
        s = read_json(path)
        if all(s["meta"].get(k) == v for k, v in meta_kw.items()):
            return s
    raise AssertionError(meta_kw)


def test_pgr_is_a_ratio_of_paired_differences_with_the_gap_rule(run):
    *_, rows = run
    pgr_rows = find(rows, metric="pgr_vs_weak")
    # 2 seeds x 3 ensembles x 3 rounds x 3 splits x 3 scores
    assert len([r for r in pgr_rows if r["seed"] != "all"]) == 2 * 3 * 3 * 3 * 3
    for row in (r for r in pgr_rows if r["seed"] != "all"):
        acc = lambda **kw: float(one(rows, dataset="sciq", seed=row["seed"], eval_split=row["eval_split"],  # noqa: E731
                                     metric=row["score"], **kw)["value"])
        student = acc(role="student", ensemble=row["ensemble"], round=row["round"])
        weak = acc(role="expert", ensemble="boost", round=1)
        ceiling = acc(role="ceiling")
        same = {k: row[k] for k in ("role", "ensemble", "round", "seed", "eval_split", "score")}
        raw = one(rows, **same, metric="pgr_vs_weak_raw")
        assert float(raw["value"]) == pytest.approx((student - weak) / (ceiling - weak), rel=1e-8)
        gap = one(rows, **same, metric="gap_ceiling_minus_weak")
        assert float(gap["value"]) == pytest.approx(ceiling - weak, abs=1e-9)
        resolved = float(gap["ci_low"]) > 0  # the gap rule: PGR only where the gap's CI excludes 0
        assert (row["value"] != "") == resolved
        if resolved:
            assert row["value"] == raw["value"] and row["note"] == ""
            assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
        else:
            assert row["note"] in ("gap <= 0", "gap CI includes 0")
        supervisor = acc(role="ensemble", ensemble=row["ensemble"], round=row["round"])
        vs_ens = one(rows, **same, metric="pgr_vs_ensemble_raw")
        assert float(vs_ens["value"]) == pytest.approx((student - supervisor) / (ceiling - supervisor), rel=1e-8)


def test_missing_pgr_names_its_reason(tmp_path, make_config):
    root = tmp_path / "run"
    meta = dict(dataset="d", seed=0, weak_model="", strong_model="", ensemble="", round=0)
    at = lambda v: (lambda split, score: v)  # noqa: E731
    files = [
        score_file(root / "e.json", {**meta, "role": "expert", "weak_model": "w", "ensemble": "boost", "round": 1},
                   at(0.5)),
        score_file(root / "s.json", {**meta, "role": "student", "weak_model": "w", "strong_model": "s",
                                     "ensemble": "boost", "round": 1}, at(0.55)),
    ]
    for name, ceiling, reason in (("small", 0.5333, "gap CI includes 0"), ("negative", 0.3, "gap <= 0")):
        c = score_file(root / f"c-{name}.json", {**meta, "role": "ceiling", "strong_model": "s"}, at(ceiling))
        rows = read_rows(write_metrics(make_config(), [*files, c], [], tmp_path / f"{name}.csv"))
        for row in find(rows, metric="pgr_vs_weak"):
            assert row["value"] == row["ci_low"] == row["ci_high"] == "" and row["note"] == reason
        assert all(r["value"] != "" for r in find(rows, metric="pgr_vs_weak_raw"))  # the raw ratio is kept


def test_comparisons_use_the_mcnemar_se_with_mde(run):
    cfg, scores, *_, rows = run
    row = one(rows, metric="improvement_vs_expert1", seed=0, ensemble="boost", round=3, eval_split="test_id",
              score="acc")
    ens = _per_example(scores, role="ensemble", ensemble="boost", round=3, seed=0)
    h1 = _per_example(scores, role="expert", ensemble="boost", round=1, seed=0)
    d = np.array(ens["splits"]["test_id"]["per_example"]["acc"]) - np.array(h1["splits"]["test_id"]["per_example"]["acc"])
    se = 100 * math.sqrt(((d - d.mean()) ** 2).mean() / len(d))  # McNemar: population variance of d / n
    assert float(row["value"]) == pytest.approx(100 * d.mean(), abs=1e-7)
    assert float(row["ci_high"]) - float(row["value"]) == pytest.approx(1.959964 * se, rel=1e-5)
    mde = one(rows, metric="improvement_vs_expert1_mde", seed=0, ensemble="boost", round=3, eval_split="test_id",
              score="acc")
    assert float(mde["value"]) == pytest.approx(2.801585 * se, rel=1e-5)


def test_pooled_comparisons_are_seed_stratified(run):
    cfg, scores, *_, rows = run
    key = dict(ensemble="boost", round=3, eval_split="test_ood", score="acc")
    diffs, variances = [], []
    for seed in (0, 1):
        ens = _per_example(scores, role="ensemble", ensemble="boost", round=3, seed=seed)
        h1 = _per_example(scores, role="expert", ensemble="boost", round=1, seed=seed)
        d = (np.array(ens["splits"]["test_ood"]["per_example"]["acc"])
             - np.array(h1["splits"]["test_ood"]["per_example"]["acc"]))
        diffs.append(100 * d.mean())
        variances.append(100 ** 2 * ((d - d.mean()) ** 2).mean() / len(d))
    pooled = one(rows, metric="improvement_vs_expert1", seed="all", **key)
    assert float(pooled["value"]) == pytest.approx(np.mean(diffs), abs=1e-7)
    se = math.sqrt(sum(variances)) / 2
    assert float(pooled["ci_high"]) - float(pooled["value"]) == pytest.approx(1.959964 * se, rel=1e-5)
    assert pooled["n"] == "2"
    sd = one(rows, metric="improvement_vs_expert1_seed_sd", seed="all", **key)
    assert float(sd["value"]) == pytest.approx(np.std(diffs, ddof=1), abs=1e-7)


def test_pooled_pgr_is_a_ratio_of_pooled_differences_not_a_mean_of_pgrs(run):
    *_, rows = run
    key = dict(role="student", ensemble="boost", round=3, eval_split="test_ood", score="acc")
    a = b = 0.0
    per_seed = []
    for seed in (0, 1):
        acc = lambda **kw: float(one(rows, dataset="sciq", seed=seed, eval_split="test_ood", metric="acc",  # noqa: E731
                                     **kw)["value"])
        s, w, c = acc(role="student", ensemble="boost", round=3), acc(role="expert", ensemble="boost", round=1), \
            acc(role="ceiling")
        a, b = a + (s - w) / 2, b + (c - w) / 2
        per_seed.append((s - w) / (c - w))
    pooled = one(rows, metric="pgr_vs_weak_raw", seed="all", **key)
    assert float(pooled["value"]) == pytest.approx(a / b, rel=1e-8)
    assert a / b != pytest.approx(np.mean(per_seed), rel=1e-6)


def test_students_carry_the_strong_base_reference(run):
    *_, rows = run
    same = dict(role="student", ensemble="boost", round=2, seed=0, eval_split="test_id", score="acc")
    acc = lambda **kw: float(one(rows, dataset="sciq", seed=0, eval_split="test_id", metric="acc", **kw)["value"])  # noqa: E731
    strong, weak, ceiling = acc(role="strong_base"), acc(role="expert", ensemble="boost", round=1), acc(role="ceiling")
    raw = one(rows, metric="pgr_strong_base_vs_weak_raw", **same)
    assert float(raw["value"]) == pytest.approx((strong - weak) / (ceiling - weak), rel=1e-8)
    gain = one(rows, metric="improvement_vs_strong_base", **same)
    assert float(gain["value"]) == pytest.approx(100 * (acc(role="student", ensemble="boost", round=2) - strong),
                                                 abs=1e-7)


def test_improvements_in_points(run):
    *_, rows = run
    for row in find(rows, metric="improvement_vs_expert1", seed=0):
        acc = lambda **kw: float(one(rows, dataset="sciq", seed=0, eval_split=row["eval_split"],  # noqa: E731
                                     metric=row["score"], **kw)["value"])
        expected = 100 * (acc(role="ensemble", ensemble=row["ensemble"], round=row["round"])
                          - acc(role="expert", ensemble="boost", round=1))
        assert float(row["value"]) == pytest.approx(expected, abs=1e-7)
    boost3 = one(rows, metric="improvement_vs_student1", seed=0, ensemble="boost", round=3, eval_split="test_id",
                 score="acc")
    assert float(boost3["value"]) == pytest.approx(100 * (_accuracy("student", "boost", 3, "test_id", 0, "acc")
                                                          - _accuracy("student", "boost", 1, "test_id", 0, "acc")))
    assert float(boost3["ci_low"]) <= float(boost3["value"]) <= float(boost3["ci_high"])


def test_best_round_can_be_round_one(tmp_path, make_config):
    """h_1 is best on val and the ensemble is scored at r = 2, 3 only (as the workflow does): r* = 1."""
    root = tmp_path / "run"
    meta = dict(dataset="d", seed=0, weak_model="w", strong_model="", ensemble="boost")
    val_acc = {1: 0.9, 2: 0.9, 3: 0.875}  # the committed real run's SciQ val accuracies: tie -> smaller r
    files = [score_file(root / "e1.json", {**meta, "role": "expert", "round": 1}, lambda split, score: val_acc[1])]
    files += [score_file(root / f"ens{r}.json", {**meta, "role": "ensemble", "round": r},
                         lambda split, score, r=r: val_acc[r]) for r in (2, 3)]
    rows = read_rows(write_metrics(make_config(), files, [], tmp_path / "m.csv"))
    assert one(rows, metric="best_round", role="ensemble", ensemble="boost", score="acc")["value"] == "1"
    r1 = one(rows, metric="acc", role="ensemble", ensemble="boost", round=1, eval_split="val")
    assert float(r1["value"]) == pytest.approx(0.9)  # the ensemble of one expert is h_1
    gain = one(rows, metric="improvement_vs_expert1", ensemble="boost", round=1, eval_split="val", score="acc")
    assert float(gain["value"]) == 0.0
    assert not find(rows, metric="tokens_processed", role="ensemble", round=1)  # h_1's tokens are counted once


def test_pseudo_label_sanity_rows(tmp_path, make_config):
    scores, _ = fake_run(tmp_path / "run", seeds=(0,), rounds=1, ensembles=("boost",), variants=("boost",))
    meta = tmp_path / "run" / "pseudo" / "gpt2" / "sciq" / "s0" / "boost" / "r1.jsonl.meta.json"
    write_json(meta, {"n": 38, "n_pool": 40, "empty_answers": 2, "truncated": 10, "matches_choice": 30,
                      "mean_answer_tokens": 3.5, "tokens_generated": 140})
    rows = read_rows(write_metrics(make_config(), scores, [], tmp_path / "m.csv", [meta]))
    got = {r["metric"]: float(r["value"]) for r in find(rows, eval_split="student_pool", role="ensemble",
                                                         ensemble="boost", round=1, weak_model="gpt2")}
    assert got == {"pseudo_truncated_share": 0.25, "pseudo_choice_match_share": 0.75, "pseudo_empty_share": 0.05,
                   "pseudo_mean_answer_tokens": 3.5}


def test_best_round_is_argmax_of_val(run):
    *_, rows = run
    for row in find(rows, metric="best_round"):
        val = {int(r["round"]): float(r["value"]) for r in find(rows, role="ensemble", ensemble=row["ensemble"],
                                                              seed=row["seed"], eval_split="val", metric=row["score"])}
        top = max(val.values())
        assert int(row["value"]) == min(r for r, v in val.items() if v == top)
        assert row["eval_split"] == "val" and row["round"] == "0"
    assert one(rows, metric="best_round", role="ensemble", ensemble="boost", seed="all", score="acc")["value"] == "3"
    assert not find(rows, metric="best_round", role="student")  # students are read at their supervisor's r*


def test_seed_rows_are_means_with_t_intervals(run):
    *_, rows = run
    pooled = one(rows, role="student", ensemble="boost", round=3, eval_split="test_ood", metric="acc", seed="all")
    per_seed = [float(one(rows, role="student", ensemble="boost", round=3, eval_split="test_ood", metric="acc",
                          seed=s)["value"]) for s in (0, 1)]
    assert float(pooled["value"]) == pytest.approx(np.mean(per_seed))
    assert pooled["n"] == "2"
    assert per_seed[0] != per_seed[1]
    # two seeds: half-width = t_{0.975, 1} * sd / sqrt(2) = 12.7062 * |a - b| / 2
    half = 12.7062047 * abs(per_seed[0] - per_seed[1]) / 2
    assert float(pooled["ci_high"]) - float(pooled["value"]) == pytest.approx(half, abs=1e-6)
    assert float(pooled["value"]) - float(pooled["ci_low"]) == pytest.approx(half, abs=1e-6)
    assert not find(rows, metric="tokens_processed", seed="all")


def test_boosting_rows(run):
    *_, rows = run
    eps = one(rows, metric="eps", ensemble="bagging", round=2, seed=1)
    labels = (eps["eval_split"], eps["role"], eps["weak_model"], eps["dataset"])
    assert labels == ("weak_train", "expert", "gpt2", "sciq")
    assert float(eps["value"]) == pytest.approx(0.30 + 0.02 * 2 + 0.01)
    assert eps["n"] == "500"
    assert {r["metric"] for r in find(rows, eval_split="weak_train")} == {"eps", "alpha", "weight_entropy",
                                                                            "weight_top10_share"}


def test_boosting_rows_are_labelled_by_the_record(tmp_path):
    """A record names its weak model, dataset and seed; one written before it named its weak model (the
    committed results/cpu-real-pilot) gets it from its path, experts/<weak>/<dataset>/s<seed>/<variant>/r<t>/."""
    record = {"weak_model": "gpt2", "dataset": "arc", "seed": 3, "variant": "boost", "round": 2, "n_tokens": 40,
              "eps": 0.25, "alpha": None}
    anywhere = tmp_path / "copied" / "boosting.json"
    write_json(anywhere, record)
    (row,) = boosting_rows(anywhere)  # alpha None (a stopped round): no row
    assert {k: row[k] for k in ("weak_model", "dataset", "seed", "ensemble", "round", "metric", "value", "n")} == {
        "weak_model": "gpt2", "dataset": "arc", "seed": 3, "ensemble": "boost", "round": 2, "metric": "eps",
        "value": 0.25, "n": 40}
    old = tmp_path / "experts" / "smollm2-135m" / "arc" / "s3" / "boost" / "r2" / "boosting.json"
    write_json(old, {k: v for k, v in record.items() if k != "weak_model"})
    assert [r["weak_model"] for r in boosting_rows(old)] == ["smollm2-135m"]
    write_json(anywhere, {k: v for k, v in record.items() if k != "weak_model"})
    with pytest.raises(DataFileError, match="names no weak_model and its path is not experts/"):
        boosting_rows(anywhere)
    write_json(anywhere, {"eps": 0.25})
    with pytest.raises(DataFileError, match="lacks dataset, seed, variant, round"):
        boosting_rows(anywhere)


def test_collect_and_the_contracts_it_reads_load_no_torch():
    """Tables, figures and the workflow's DAG read score files and split directories: no model stack."""
    code = ("import sys, ensemw2s.collect, ensemw2s.scores, ensemw2s.splitdir, ensemw2s.metrics; "
            "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reruns_are_byte_identical_whatever_the_input_order(run, tmp_path):
    cfg, scores, boosting, out, _ = run
    again = write_metrics(cfg, list(reversed(scores)), list(reversed(boosting)), tmp_path / "again.csv")
    assert again.read_bytes() == out.read_bytes()
    record = read_json(tmp_path / "again.csv.provenance.json")  # the time lives here, apart
    assert record["step"] == "metrics" and record["config_keys"] == ["evaluation.bootstrap"]
    assert set(record["inputs"]) == {str(p) for p in [*scores, *boosting]}


def test_zero_gap_gives_empty_pgr_not_inf(tmp_path, make_config):
    root = tmp_path / "run"
    flat = lambda split, score: 0.5  # noqa: E731
    files = [
        score_file(root / "e.json", dict(role="expert", dataset="d", seed=0, weak_model="w", strong_model="",
                                         ensemble="boost", round=1), flat),
        score_file(root / "c.json", dict(role="ceiling", dataset="d", seed=0, weak_model="", strong_model="s",
                                         ensemble="", round=0), flat),
        score_file(root / "s.json", dict(role="student", dataset="d", seed=0, weak_model="w", strong_model="s",
                                         ensemble="boost", round=1), lambda split, score: 0.6),
    ]
    rows = read_rows(write_metrics(make_config(), files, [], tmp_path / "m.csv"))
    pgr = find(rows, metric="pgr_vs_weak")
    assert pgr and all(r["value"] == "" and r["note"] == "gap <= 0" for r in pgr)
    assert all(r["value"] == "" for r in find(rows, metric="pgr_vs_weak_raw"))
    assert all(float(r["value"]) == 0.0 for r in find(rows, metric="gap_ceiling_minus_weak"))
    assert "inf" not in (tmp_path / "m.csv").read_text()


def test_refuses_scores_of_different_rows(tmp_path, make_config):
    scores, _ = fake_run(tmp_path / "run", seeds=(0,), rounds=1, ensembles=("boost",), variants=("boost",))
    ceiling = next(p for p in scores if "/ceiling/" in str(p))
    s = read_json(ceiling)
    s["splits"]["test_id"]["uids"] = list(reversed(s["splits"]["test_id"]["uids"]))
    write_json(ceiling, s)
    with pytest.raises(UserError, match="scored different rows of test_id"):
        write_metrics(make_config(), scores, [], tmp_path / "m.csv")


def test_refuses_two_files_for_one_model(tmp_path, make_config):
    scores, _ = fake_run(tmp_path / "run", seeds=(0,), rounds=1, ensembles=("boost",), variants=("boost",))
    copy = tmp_path / "copy.json"
    copy.write_bytes(scores[0].read_bytes())
    with pytest.raises(UserError, match="describe the same model"):
        write_metrics(make_config(), [*scores, copy], [], tmp_path / "m.csv")


AA_ACC = {  # seed -> (student, replicate): per-question acc of the A/A control, 10 questions, chosen by hand
    0: ([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 1, 0, 0, 0, 0]),  # d: one -1, one +1
    1: ([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),  # d: six +1
}


def aa_score_files(root: Path) -> list[Path]:
    """Score files (test_id only, with picks) of a student and its replicate on two seeds (AA_ACC)."""
    files = []
    for seed, (student, replicate) in AA_ACC.items():
        for role, x in (("student", student), ("replicate", replicate)):
            meta = {"role": role, "weak_model": "w", "strong_model": "s", "dataset": "d", "seed": seed, "round": 1,
                    "ensemble": "boost"}
            block = {"n": 10, "acc": sum(x) / 10, "uids": [f"q{i}" for i in range(10)],
                     "per_example": {"acc": x, "pick": [0 if v else 1 for v in x], "gold": [0] * 10}}
            path = root / f"s{seed}" / f"{role}.json"
            write_json(path, {"meta": meta, "splits": {"test_id": block}, "tokens_processed": 1})
            files.append(path)
    return files


def test_aa_difference_of_a_replicate_by_hand(tmp_path, make_config):
    """The A/A control: replicate minus student (same supervisor), McNemar SE, normal CI, and the note
    where the CI excludes 0 (AA_ACC)."""
    files = aa_score_files(tmp_path)
    rows = read_rows(write_metrics(make_config(), files, [], tmp_path / "metrics.csv"))
    z, z_power = 1.959963984540054, 0.8416212335729143
    # var of a mean paired difference = (p10 + p01 - (p10 - p01)^2) / n, in points (x 100)
    se0 = 100 * math.sqrt((0.1 + 0.1 - 0.0) / 10)  # 14.142
    se1 = 100 * math.sqrt((0.6 + 0.0 - 0.36) / 10)  # 15.492
    se_all = math.sqrt(se0**2 + se1**2) / 2  # seed-stratified: mean of the two, 10.488
    for seed, value, se, note in ((0, 0.0, se0, ""), (1, 60.0, se1, "A/A CI excludes 0: the CIs are too narrow"),
                                  ("all", 30.0, se_all, "A/A CI excludes 0: the CIs are too narrow")):
        row = one(rows, role="replicate", seed=seed, eval_split="test_id", score="acc", metric="aa_difference")
        assert (row["weak_model"], row["strong_model"], row["ensemble"], row["round"]) == ("w", "s", "boost", "1")
        assert float(row["value"]) == pytest.approx(value, abs=1e-9)
        assert float(row["ci_low"]) == pytest.approx(value - z * se, rel=1e-8)
        assert float(row["ci_high"]) == pytest.approx(value + z * se, rel=1e-8)
        assert row["note"] == note
        mde = one(rows, role="replicate", seed=seed, eval_split="test_id", score="acc", metric="aa_difference_mde")
        assert float(mde["value"]) == pytest.approx((z + z_power) * se, rel=1e-8)
    # by hand: seed 0 [-27.72, 27.72] includes 0; seed 1 [29.64, 90.36] and pooled [9.44, 50.56] do not
    assert float(one(rows, seed="all", metric="aa_difference", eval_split="test_id")["ci_low"]) == pytest.approx(9.444,
                                                                                                             abs=1e-3)
    sd = one(rows, seed="all", metric="aa_difference_seed_sd", eval_split="test_id")
    assert float(sd["value"]) == pytest.approx(60 / math.sqrt(2), rel=1e-8)  # SD of (0, 60)
    # the replicate's own accuracy rows, as any scored model's
    assert float(one(rows, role="replicate", seed=1, metric="acc", eval_split="test_id")["value"]) == 0.8
    assert not find(rows, role="student", metric="aa_difference")
