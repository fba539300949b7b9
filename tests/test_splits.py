"""Difficulty strategies, seeded disjoint splits, leak checks, and the files prepare-data writes."""
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from ensemw2s import catalog, cli, data, splitdir, splits
from ensemw2s.errors import UserError
from ensemw2s.io import read_jsonl, sha256_file, sha256_text, write_jsonl
from ensemw2s.splitdir import SPLITS
from ensemw2s.splits import check_no_leak, prepare_data
from ensemw2s.strategies import cross_fit
from tests.conftest import SHARED_DATA
from tests.test_strategies import FakeRater

SMALL = {"weak_train": 60, "val": 20, "test_id": 30, "student_pool": 50, "test_ood": 30}


def read_splits(out: Path) -> dict[str, list[dict]]:
    return {name: read_jsonl(out / f"{name}.jsonl") for name in SPLITS}


def synthetic_config(make_config, **entry):
    return make_config(datasets=[{"name": "synthetic", "sizes": SMALL, **entry}])


def run_cli(config: Path, dataset: str, out: Path, *extra: str) -> int:
    return cli.main(["prepare-data", "--config", str(config), "--dataset", dataset, "--seed", "0", "--out", str(out), *extra])


# ---------------------------------------------------------------------------------------------
# the split files


@pytest.mark.parametrize("pool", ["easy", "hard"])
def test_synthetic_splits_sizes_tiers_and_disjointness(make_config, tmp_path, pool):
    prepare_data(synthetic_config(make_config, student_pool=pool), "synthetic", 0, tmp_path / "out")
    got = read_splits(tmp_path / "out")
    assert {k: len(v) for k, v in got.items()} == SMALL
    for name in ("weak_train", "val", "test_id"):
        assert {r["source"] for r in got[name]} == {"easy"} and not any(r["hard"] for r in got[name])
    assert {r["source"] for r in got["test_ood"]} == {"hard"} and all(r["hard"] for r in got["test_ood"])
    assert {r["source"] for r in got["student_pool"]} == {pool}  # the pool keeps `source`, not `hard`
    # disjoint by content, not only by uid
    content = {name: {sha256_text(r["prompt"]) for r in rows} for name, rows in got.items()}
    names = list(content)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not content[a] & content[b], (a, b)
    assert all(set(r) >= {"uid", "prompt", "answer", "choices", "gold", "difficulty", "hard", "source"}
               for name in ("weak_train", "val", "test_id", "test_ood") for r in got[name])


def test_the_pool_is_easy_by_default_and_follows_the_knob(make_config, tmp_path):
    """easy (default): held-out easy questions, disjoint from weak_train, val and test_id; hard: the
    hard tier, while weak_train, val and test_id stay the same rows."""
    default = synthetic_config(make_config)
    assert default.dataset("synthetic").student_pool == default.raw["datasets"][0]["student_pool"] == "easy"
    assert make_config().dataset("arc").student_pool == "easy"  # a registry dataset outside the config too
    out = {}
    for pool in ("easy", "hard"):
        cfg = synthetic_config(make_config, **({} if pool == "easy" else {"student_pool": "hard"}))
        prepare_data(cfg, "synthetic", 0, tmp_path / pool)
        out[pool] = read_splits(tmp_path / pool)
        assert json.loads((tmp_path / pool / "manifest.json").read_text())["student_pool"] == pool
        assert json.loads((tmp_path / f"{pool}.provenance.json").read_text())["extra"]["student_pool"] == pool
    examples = data.examples(cfg.dataset("synthetic"), cfg.data_dir)
    tier = {r["uid"]: r["source"] for r in examples}
    for pool, got in out.items():
        assert {tier[r["uid"]] for r in got["student_pool"]} == {pool}
        taken = {r["uid"] for name in ("weak_train", "val", "test_id", "test_ood") for r in got[name]}
        assert not taken & {r["uid"] for r in got["student_pool"]}
    for name in ("weak_train", "val", "test_id"):
        assert out["easy"][name] == out["hard"][name]


def test_student_pool_carries_no_gold_and_gold_is_apart(make_config, tmp_path):
    prepare_data(synthetic_config(make_config), "synthetic", 0, tmp_path / "out")
    pool = read_jsonl(tmp_path / "out" / "student_pool.jsonl")
    gold = read_jsonl(tmp_path / "out" / "gold" / "student_pool.jsonl")
    assert all(not {"answer", "gold", "label"} & set(r) for r in pool)
    assert all(set(r) == set(splitdir.POOL_FIELDS) for r in pool)
    assert [g["uid"] for g in gold] == [r["uid"] for r in pool]
    assert all(set(g) == {"uid", "answer", "gold"} for g in gold)
    assert all(r["choices"][g["gold"]] == g["answer"] for r, g in zip(pool, gold))


def sciq_like(split: str, i: int) -> dict:
    """A SciQ row: its `support` passage names the correct answer, as SciQ's usually do."""
    words = " ".join(["very"] * (i % 7))
    return {"question": f"Which {words} particle {split} {i} carries the charge?", "correct_answer": f"ion {i}",
            "distractor1": f"atom {i}", "distractor2": f"proton {i}", "distractor3": f"quark {i}",
            "support": f"In experiment {i}, the charge is carried by the ion {i}."}


def test_student_pool_rows_keep_only_the_allow_list(make_config, tmp_path):
    """No field outside POOL_FIELDS survives into student_pool: not SciQ's `support` (it contains the
    answer), nor `difficulty` (here, the length strategy's count of the answer's words), nor any answer
    field (test_splitdir.py: the one reader of the pool refuses a file that carries one)."""
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "data" / "sciq" / f"{split}.jsonl", [sciq_like(split, i) for i in range(40)])
    sizes = {"weak_train": 20, "val": 10, "test_id": 10, "student_pool": 15, "test_ood": 20}
    cfg = make_config(data_dir=str(tmp_path / "data"),
                      datasets=[{"name": "sciq", "sizes": sizes, "difficulty": {"strategy": "length"}}])
    prepare_data(cfg, "sciq", 0, tmp_path / "out")
    pool = read_jsonl(tmp_path / "out" / "student_pool.jsonl")
    assert len(pool) == 15 and all(set(r) == {"uid", "prompt", "choices", "source"} for r in pool)
    assert all({"support", "difficulty", "correct_answer"} <= set(r) for r in read_jsonl(tmp_path / "out" / "test_id.jsonl"))
    assert splitdir.read_pool(tmp_path / "out") == pool


def test_student_pool_keeps_the_definitions_pool_fields(make_config, tmp_path):
    """A definition's own allow-list: its fields (here `topic`, and no `source`) are what student_pool keeps,
    recorded in manifest.json, and what the pool's reader then allows."""
    rows = [{"q": f"What is thing {i} {'really ' * (i % 4)}made of?", "options": ["wood", "stone"], "key": i % 2,
             "topic": f"t{i % 3}", "hint": "it floats" if i % 2 == 0 else "it sinks"} for i in range(30)]
    write_jsonl(tmp_path / "data" / "things" / "all.jsonl", rows)
    (tmp_path / "things.yaml").write_text(
        "parts: [{folder: things, source: Things}]\nsplits: [all]\n"
        "fields: {question: q, choices: {list: options}, answer: {index: key}}\n"
        "pool_fields: [uid, prompt, choices, topic]\nstrategies: [length]\n"
        "defaults: {difficulty: {strategy: length}, sizes: {weak_train: 8, val: 3, test_id: 3, student_pool: 1, test_ood: 10}}\n")
    cfg = make_config(data_dir=str(tmp_path / "data"),
                      datasets=[{"name": "things", "definition": str(tmp_path / "things.yaml")}])
    prepare_data(cfg, "things", 0, tmp_path / "out")
    pool = read_jsonl(tmp_path / "out" / "student_pool.jsonl")
    assert len(pool) == 1 and set(pool[0]) == {"uid", "prompt", "choices", "topic"}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["pool_fields"] == ["uid", "prompt", "choices", "topic"]
    assert splitdir.read_pool(tmp_path / "out") == pool
    assert all({"hint", "key", "source"} <= set(r) for r in read_jsonl(tmp_path / "out" / "test_ood.jsonl"))
    record = json.loads((tmp_path / "out.provenance.json").read_text())
    assert str(tmp_path / "things.yaml") in record["inputs"]  # the definition file is an input of the splits


def test_same_inputs_same_bytes_and_the_seed_matters(make_config, tmp_path):
    cfg = synthetic_config(make_config)
    for out in ("a", "b"):
        prepare_data(cfg, "synthetic", 0, tmp_path / out)
    prepare_data(cfg, "synthetic", 1, tmp_path / "c")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 7
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "weak_train.jsonl").read_bytes() != (tmp_path / "c" / "weak_train.jsonl").read_bytes()
    # the provenance record (it carries the time) lies beside the split directory, not in it
    record = json.loads((tmp_path / "a.provenance.json").read_text())
    assert record["step"] == "prepare_data" and record["config_keys"] == ["datasets.synthetic"]
    assert list(record["inputs"]) == [str(catalog.DATASETS.get("synthetic"))]  # generated rows: only the definition
    assert record["extra"]["seed"] == 0 and record["wall_time_s"] > 0


def test_manifest_records_the_run_and_hashes_every_file(make_config, tmp_path):
    cfg = synthetic_config(make_config)
    prepare_data(cfg, "synthetic", 0, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sizes"] == SMALL and manifest["seed"] == 0 and manifest["strategy"]["strategy"] == "source"
    assert manifest["pool_fields"] == ["uid", "prompt", "choices", "source"]  # the definition's default
    assert set(manifest["files"]) == {f"{s}.jsonl" for s in SPLITS} | {"gold/student_pool.jsonl"}
    for rel, digest in manifest["files"].items():
        assert sha256_file(tmp_path / "out" / rel) == digest
    other = make_config(datasets=[{"name": "synthetic", "sizes": SMALL, "options": {"world_seed": 1}}])
    prepare_data(other, "synthetic", 0, tmp_path / "other")
    assert json.loads((tmp_path / "other" / "manifest.json").read_text())["config_hash"] != manifest["config_hash"]


def test_a_split_too_small_names_dataset_split_and_counts(make_config, tmp_path):
    cfg = make_config(datasets=[{"name": "synthetic", "sizes": {**SMALL, "test_ood": 5000}}])
    with pytest.raises(UserError, match=r"dataset 'synthetic': split test_ood needs 5000 hard rows but only \d+ are left "
                                         r"\(\d+ hard rows available, 5000 requested for test_ood, with "
                                         r"student_pool: easy\)"):
        prepare_data(cfg, "synthetic", 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    easy = make_config(datasets=[{"name": "synthetic", "sizes": {**SMALL, "student_pool": 5000}}])
    with pytest.raises(UserError, match=r"split student_pool needs 5000 easy rows but only \d+ are left \(\d+ easy rows "
                                         r"available, 5110 requested for weak_train \+ val \+ test_id \+ student_pool, "
                                         r"with student_pool: easy\).*datasets\[\]\.student_pool"):
        prepare_data(easy, "synthetic", 0, tmp_path / "out")
    hard = make_config(datasets=[{"name": "synthetic", "sizes": {**SMALL, "test_ood": 5000}, "student_pool": "hard"}])
    with pytest.raises(UserError, match=r"5050 requested for student_pool \+ test_ood, with student_pool: hard\)"):
        prepare_data(hard, "synthetic", 0, tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# strategies


def test_length_strategy_calls_the_longest_hard(make_config, tmp_path):
    prepare_data(synthetic_config(make_config, difficulty={"strategy": "length", "hard_fraction": 0.4}), "synthetic", 0,
                 tmp_path / "out")
    got = read_splits(tmp_path / "out")
    easy = [r["difficulty"] for n in ("weak_train", "val", "test_id") for r in got[n]]
    hard = [r["difficulty"] for r in got["test_ood"]]
    assert max(easy) <= min(hard)
    sample = got["test_id"][0]
    assert sample["difficulty"] == len(sample["prompt"].split()) + len(sample["answer"].split())


def fake_score(row: dict) -> float:
    """FakeRater's score of a row."""
    return int(row["uid"][:6], 16) / 16**6


def test_model_strategy_never_rates_a_row_with_a_model_that_saw_it(make_config, tmp_path):
    rater = FakeRater()
    cfg = synthetic_config(make_config, difficulty={"strategy": "model", "rater": "weak", "folds": 4, "hard_fraction": 0.5})
    prepare_data(cfg, "synthetic", 0, tmp_path / "out", raters={"weak": rater})
    assert len(rater.calls) == 4
    scored = [u for _, batch in rater.calls for u in batch]
    assert sorted(scored) == sorted(r["uid"] for r in data.examples(cfg.dataset("synthetic"), cfg.data_dir))
    for trained, batch in rater.calls:
        assert not trained & set(batch)
    got = read_splits(tmp_path / "out")
    rated = [r for name in ("weak_train", "val", "test_id", "test_ood") for r in got[name]]
    # difficulty = the held-out score's rank in [0, 1], in the score's order; the hard half is the higher
    assert all(0 <= r["difficulty"] <= 1 for r in rated)
    assert sorted(rated, key=fake_score) == sorted(rated, key=lambda r: (r["difficulty"], fake_score(r)))
    assert max(fake_score(r) for n in ("weak_train", "val", "test_id") for r in got[n]) <= min(
        fake_score(r) for r in got["test_ood"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["raters"] == ["weak"]


def test_a_rater_panel_rates_with_each_model_and_is_recorded(make_config, tmp_path):
    """Both raters fit every fold; two raters that agree give the splits of one of them alone (the mean of
    two equal ranks is that rank); the manifest and the provenance record name the panel."""
    weak, strong = FakeRater(), FakeRater()
    panel = {"strategy": "model", "rater": ["weak", "strong"], "folds": 3}
    prepare_data(synthetic_config(make_config, difficulty=panel), "synthetic", 0, tmp_path / "panel",
                 raters={"weak": weak, "strong": strong})
    assert len(weak.calls) == len(strong.calls) == 3
    manifest = json.loads((tmp_path / "panel" / "manifest.json").read_text())
    assert manifest["raters"] == ["weak", "strong"] and manifest["strategy"]["rater"] == ["weak", "strong"]
    assert json.loads((tmp_path / "panel.provenance.json").read_text())["extra"]["raters"] == ["weak", "strong"]
    prepare_data(synthetic_config(make_config, difficulty={**panel, "rater": "weak"}), "synthetic", 0,
                 tmp_path / "one", raters={"weak": FakeRater()})
    assert read_splits(tmp_path / "panel") == read_splits(tmp_path / "one")


def test_one_rating_serves_every_seed(make_config, tmp_path):
    """rate_data fits the panel's folds once; each seed's splits are cut from that rating (the same
    difficulty per question, other splits), byte for byte what prepare_data writes when it rates itself."""
    cfg = synthetic_config(make_config, difficulty={"strategy": "model", "rater": "weak", "folds": 3})
    rater = FakeRater()
    splits.rate_data(cfg, "synthetic", tmp_path / "ratings", raters={"weak": rater})
    assert len(rater.calls) == 3
    for seed in (0, 1):
        prepare_data(cfg, "synthetic", seed, tmp_path / f"s{seed}", ratings=tmp_path / "ratings")
    assert len(rater.calls) == 3  # no seed rated again
    difficulty = [{r["uid"]: r["difficulty"] for name, rows in read_splits(tmp_path / f"s{seed}").items()
                   if name != "student_pool" for r in rows} for seed in (0, 1)]  # the pool's rows show no rating
    shared = difficulty[0].keys() & difficulty[1].keys()
    assert shared and all(difficulty[0][u] == difficulty[1][u] for u in shared)
    assert read_splits(tmp_path / "s0")["weak_train"] != read_splits(tmp_path / "s1")["weak_train"]
    prepare_data(cfg, "synthetic", 0, tmp_path / "alone", raters={"weak": FakeRater()})
    for rel in [f"{name}.jsonl" for name in SPLITS] + ["gold/student_pool.jsonl", "manifest.json"]:
        assert (tmp_path / "s0" / rel).read_bytes() == (tmp_path / "alone" / rel).read_bytes(), rel
    manifest = json.loads((tmp_path / "ratings" / "manifest.json").read_text())
    assert manifest["rating_seed"] == splits.RATING_SEED and manifest["raters"] == ["weak"]
    assert manifest["files"] == {splits.RATED_FILE: sha256_file(tmp_path / "ratings" / splits.RATED_FILE)}
    record = json.loads((tmp_path / "s1.provenance.json").read_text())
    assert str(tmp_path / "ratings") in record["inputs"]
    other = synthetic_config(make_config, difficulty={"strategy": "model", "rater": "weak", "folds": 4})
    with pytest.raises(UserError, match=r"another config entry.*rerun `ensemw2s rate-data --dataset synthetic`"):
        prepare_data(other, "synthetic", 0, tmp_path / "stale", ratings=tmp_path / "ratings")
    with pytest.raises(UserError, match=r"no manifest.json; write the ratings with `ensemw2s rate-data"):
        prepare_data(cfg, "synthetic", 0, tmp_path / "none", ratings=tmp_path / "missing")
    assert not (tmp_path / "stale").exists() and not (tmp_path / "none").exists()


def test_the_cli_rates_once_and_splits_from_the_rating(config_file, tmp_path):
    path = config_file(datasets=[{"name": "synthetic", "sizes": SMALL}])
    assert cli.main(["rate-data", "--config", str(path), "--dataset", "synthetic", "--out", str(tmp_path / "r")]) == 0
    assert run_cli(path, "synthetic", tmp_path / "s0", "--ratings", str(tmp_path / "r")) == 0
    assert run_cli(path, "synthetic", tmp_path / "alone") == 0
    assert read_splits(tmp_path / "s0") == read_splits(tmp_path / "alone")


def test_model_strategy_without_a_rater_asks_for_one(make_config, tmp_path):
    cfg = synthetic_config(make_config, difficulty={"strategy": "model", "rater": ["weak", "strong"]})
    with pytest.raises(UserError, match=r"each rater \(weak, strong\); pass --rater-model strong=PATH"):
        prepare_data(cfg, "synthetic", 0, tmp_path / "out", rater_models={"weak": tmp_path})
    with pytest.raises(UserError, match=r"--rater-model tiny=...: 'tiny' is not a rater of difficulty.rater \(weak, strong\)"):
        prepare_data(cfg, "synthetic", 0, tmp_path / "out",
                     rater_models={"weak": tmp_path, "strong": tmp_path, "tiny": tmp_path})


@pytest.mark.parametrize("flags, message", [
    (["--rater-model", "weak"], "--rater-model 'weak': expected NAME=PATH"),
    (["--rater-model", "weak=/a", "--rater-model", "weak=/b"], "--rater-model weak=...: given twice"),
    (["--rater-model", "strong=/a"], "pass --rater-model weak=PATH"),
])
def test_cli_rater_model_is_name_equals_path(config_file, tmp_path, capsys, flags, message):
    config = config_file(datasets=[{"name": "synthetic", "sizes": SMALL, "difficulty": {"strategy": "model", "rater": "weak"}}])
    assert run_cli(config, "synthetic", tmp_path / "out", *flags) == 2
    assert message in capsys.readouterr().err


def test_real_model_rater_on_a_tiny_model(make_config, tiny_model_dir):
    cfg = make_config(training={"expert": {"epochs": 1, "batch_size": 8, "max_length": 64, "select_on_val": False}})
    rows = data.examples(cfg.dataset("synthetic"), cfg.data_dir)[:30]
    rater = splits.model_rater(cfg, tiny_model_dir, "weak", seed=0)
    sizes = []

    def recorded(train, held):
        sizes.append((len(train), len(held)))
        return rater(train, held)

    scores = cross_fit(rows, recorded, 3, seed=0)
    assert len(sizes) == 3 and all(t + h == 30 for t, h in sizes) and sum(h for _, h in sizes) == 30
    assert len(scores) == 30 and all(math.isfinite(s) and s > 0 for s in scores)
    # a random tiny model scores about log(vocabulary) nats per answer token
    assert abs(sum(scores) / len(scores) - math.log(300)) < 2


def test_leak_check_refuses_a_shared_question():
    ok = {"weak_train": [{"uid": "a"}], "val": [{"uid": "b"}], "test_ood": [{"uid": "c"}]}
    check_no_leak(ok)
    with pytest.raises(splits.LeakError, match="uid c is in both test_ood and weak_train"):
        check_no_leak({**ok, "weak_train": [{"uid": "a"}, {"uid": "c"}]})
    with pytest.raises(splits.LeakError, match="uid a is in both weak_train and val"):
        check_no_leak({"weak_train": [{"uid": "a"}], "val": [{"uid": "a"}]})


# ---------------------------------------------------------------------------------------------
# the CLI on the real data


def test_cli_arc_source_strategy_easy_and_challenge(config_file, tmp_path):
    sizes = {"weak_train": 300, "val": 100, "test_id": 200, "student_pool": 300, "test_ood": 200}
    config = config_file(datasets=[{"name": "arc", "sizes": sizes}], data_dir=str(SHARED_DATA))
    assert run_cli(config, "arc", tmp_path / "arc") == 0
    got = read_splits(tmp_path / "arc")
    assert {k: len(v) for k, v in got.items()} == sizes
    challenge_uids = {r["uid"] for r in got["test_ood"] if r["source"] == "ARC-Challenge"}
    for name in splits.TIERS["easy"]["easy"]:  # the default pool: ARC-Easy questions, as weak_train
        assert {r["source"] for r in got[name]} == {"ARC-Easy"}
    # an Easy row lands in test_ood only as the twin of a Challenge question
    assert all(r["source"] == "ARC-Challenge" or r["uid"] in challenge_uids for r in got["test_ood"])
    assert all("answerKey" not in r for r in got["student_pool"])


ARC_GRADES = {"file": "arc_annotations/arc-challenge-easy-annotations.json", "field": "grade",
              "key": {"ARC-Easy": "ARCEZ_{id}", "ARC-Challenge": "ARCCH_{id}"},
              "easy": ["Grade 03", "Grade 04", "Grade 05"], "hard": ["Grade 08"]}


def test_cli_arc_human_grades_split_and_count_the_rows_left_out(config_file, tmp_path):
    """data_dir/README.md: 5120 of the 7787 ARC rows are annotated, so 2667 are not; of those annotated, grades
    6 and 7 and the two subjects (263 + 792 + 408 + 191 = 1654) are neither easy nor hard. Easy splits hold
    grades 3-5, test_ood grade 8."""
    sizes = {"weak_train": 300, "val": 100, "test_id": 200, "student_pool": 300, "test_ood": 200}
    difficulty = {"strategy": "annotation", "annotation": ARC_GRADES}
    config = config_file(datasets=[{"name": "arc", "sizes": sizes, "difficulty": difficulty}], data_dir=str(SHARED_DATA))
    assert run_cli(config, "arc", tmp_path / "arc") == 0
    manifest = json.loads((tmp_path / "arc" / "manifest.json").read_text())
    assert manifest["rows"]["all"] == 7787 and manifest["raters"] == []
    assert manifest["rows"]["left_out"] == {"not_annotated": 2667, "neither_easy_nor_hard": 1654}
    assert manifest["rows"]["hard"] == 2032  # the grade-8 rows (no easy-graded row repeats a grade-8 question)
    annotations = json.loads((SHARED_DATA / ARC_GRADES["file"]).read_text())
    grade = {}
    for name, rows in read_splits(tmp_path / "arc").items():
        if name != "student_pool":  # its public rows keep no id
            grade[name] = {annotations[ARC_GRADES["key"][r["source"]].format(**r)]["grade"] for r in rows}
    assert {g for name in ("weak_train", "val", "test_id") for g in grade[name]} <= {"Grade 03", "Grade 04", "Grade 05"}
    assert grade["test_ood"] == {"Grade 08"}
    provenance = json.loads((tmp_path / "arc.provenance.json").read_text())
    assert str(SHARED_DATA / ARC_GRADES["file"]) in provenance["inputs"]


def test_cli_sciq_repeated_questions_stay_in_one_split(config_file, tmp_path):
    config = config_file(datasets=[{"name": "sciq"}], data_dir=str(SHARED_DATA))
    assert run_cli(config, "sciq", tmp_path / "sciq") == 0
    got = read_splits(tmp_path / "sciq")
    where = defaultdict(set)
    count = defaultdict(int)
    for name, rows in got.items():
        for r in rows:
            where[r["uid"]].add(name)
            count[r["uid"]] += 1
    assert all(len(s) == 1 for s in where.values())
    assert sum(n > 1 for n in count.values()) >= 5  # repeated questions are in the files, each within one split
    pool = got["student_pool"]
    assert not any({"correct_answer", "distractor1", "distractor2", "distractor3"} & set(r) for r in pool)


def test_cli_unknown_dataset_suggests_a_name(config_file, tmp_path, capsys):
    assert run_cli(config_file(), "sciqq", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown dataset 'sciqq'. Did you mean 'sciq'?" in err


def test_cli_missing_data_dir_names_path_and_flag(config_file, tmp_path, capsys):
    code = run_cli(config_file(datasets=[{"name": "sciq"}]), "sciq", tmp_path / "out", "--data-dir", str(tmp_path / "none"))
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'none' / 'sciq'} not found" in err and "--data-dir" in err


def test_cli_bad_json_line_names_file_and_line(config_file, tmp_path, capsys):
    data = tmp_path / "data" / "sciq"
    data.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text((SHARED_DATA / "sciq" / f"{split}.jsonl").open().readline())
    (data / "test.jsonl").write_text((data / "test.jsonl").read_text() + '{"question": \n')
    assert run_cli(config_file(datasets=[{"name": "sciq"}]), "sciq", tmp_path / "out", "--data-dir", str(tmp_path / "data")) == 2
    assert f"{data / 'test.jsonl'} line 2: invalid JSON" in capsys.readouterr().err


def test_subsample_keeps_whole_questions_in_order():
    from ensemw2s.splits import subsample

    rows = [{"uid": f"q{i // 2}", "i": i} for i in range(40)]  # 20 questions, 2 rows each
    picked = subsample(rows, 10, seed=3)
    assert len(picked) == 10
    assert [r["i"] for r in picked] == sorted(r["i"] for r in picked)  # original order
    uids = {r["uid"] for r in picked}
    assert all(sum(r["uid"] == u for r in picked) == 2 for u in uids)  # no question split
    assert subsample(rows, 10, seed=3) == picked and subsample(rows, 10, seed=4) != picked
    assert subsample(rows, None, seed=3) == rows
