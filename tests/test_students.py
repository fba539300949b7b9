"""Students learn from pseudo-labels only and select on their supervisor's val answers; the ceiling alone
reads the gold answers of student_pool, and alone selects on gold val."""
import json
import shutil

import pytest
import torch

from ensemw2s import students
from ensemw2s.errors import UserError
from ensemw2s.io import read_jsonl, write_jsonl
from ensemw2s.models import load_causal_lm
from tests.test_rounds import write_split_dir

TRAINING = {"epochs": 1, "batch_size": 3, "learning_rate": 0.01, "max_length": 64}


@pytest.fixture
def cfg(make_config):
    models = {"weak": {"source": "tiny", "tiny": {}}, "strong": {"source": "tiny", "tiny": {}}}
    return make_config(models=models, training={"expert": TRAINING, "student": TRAINING})


def pseudo_labels(data, path, split="student_pool"):
    """An ensemble's answers for a split: deliberately not the gold ones."""
    rows = [{"uid": r["uid"], "prompt": r["prompt"], "answer": "pseudo answer"} for r in read_jsonl(data / f"{split}.jsonl")]
    write_jsonl(path, rows)
    return path


def train(cfg, data, base, out, labels=None, gold=False, val_labels=None):
    students.train_student(cfg, strong="strong", seed=0, data=data, base=base, labels=labels, gold=gold, out=out,
                           val_labels=val_labels)
    return load_causal_lm(out / "model").state_dict(), json.loads((out / "train.json").read_text())


def spy_fit(monkeypatch) -> list:
    """Record the val rows each fit selects on."""
    seen, real = [], students.fit
    monkeypatch.setattr(students, "fit", lambda *a, **kw: seen.append(kw["val_rows"]) or real(*a, **kw))
    return seen


def test_student_is_the_same_whether_or_not_gold_exists(cfg, tiny_model_dir, tmp_path):
    """Neither student_pool's gold nor val.jsonl (gold answers too) plays any part in a student."""
    data = write_split_dir(tmp_path / "data")
    labels = pseudo_labels(data, tmp_path / "pseudo.jsonl")
    val_labels = pseudo_labels(data, tmp_path / "pseudo.val.jsonl", split="val")
    with_gold, info = train(cfg, data, tiny_model_dir, tmp_path / "a", labels=labels, val_labels=val_labels)
    assert info["role"] == "student" and info["n_rows"] == 6 and info["tokens_processed"] > 0
    assert info["selected_on"] == str(val_labels)
    assert not (tmp_path / "a.ckpt").exists()
    fit_stats = json.loads((tmp_path / "a" / "fit.json").read_text())
    assert fit_stats["resumed_from"] is None and len(fit_stats["val_losses"]) == TRAINING["epochs"]
    record = json.loads((tmp_path / "a.provenance.json").read_text())
    assert record["step"] == "train_student" and record["config_keys"] == ["models.strong", "training.student"]
    assert set(record["inputs"]) == {str(labels), str(val_labels), str(data / "student_pool.jsonl"), str(tiny_model_dir)}
    shutil.rmtree(data / "gold")
    (data / "val.jsonl").unlink()
    without_gold, _ = train(cfg, data, tiny_model_dir, tmp_path / "b", labels=labels, val_labels=val_labels)
    assert all(torch.equal(with_gold[k], without_gold[k]) for k in with_gold)
    base = load_causal_lm(tiny_model_dir).state_dict()
    assert not torch.equal(with_gold["model.embed_tokens.weight"], base["model.embed_tokens.weight"])


def test_a_student_selects_on_its_supervisors_val_answers(cfg, tiny_model_dir, tmp_path, monkeypatch):
    """The val rows the epoch is chosen on are the val label file's, whose answers differ from gold;
    the same training with gold-valued val answers gives other val losses, so the losses follow the file."""
    data = write_split_dir(tmp_path / "data")
    labels = pseudo_labels(data, tmp_path / "pseudo.jsonl")
    val_labels = pseudo_labels(data, tmp_path / "pseudo.val.jsonl", split="val")
    seen = spy_fit(monkeypatch)
    train(cfg, data, tiny_model_dir, tmp_path / "a", labels=labels, val_labels=val_labels)
    gold_val = read_jsonl(data / "val.jsonl")
    assert seen[0] == read_jsonl(val_labels)
    assert all(r["answer"] == "pseudo answer" != g["answer"] for r, g in zip(seen[0], gold_val))
    gold_like = tmp_path / "gold-like.val.jsonl"  # the supervisor answering exactly gold
    write_jsonl(gold_like, [{"uid": r["uid"], "prompt": r["prompt"], "answer": r["answer"]} for r in gold_val])
    train(cfg, data, tiny_model_dir, tmp_path / "b", labels=labels, val_labels=gold_like)
    losses = [json.loads((tmp_path / d / "fit.json").read_text())["val_losses"] for d in ("a", "b")]
    assert losses[0] != losses[1]


def test_ceiling_trains_on_gold_and_selects_on_gold_val(cfg, tiny_model_dir, tmp_path, monkeypatch):
    data = write_split_dir(tmp_path / "data")
    role, rows = students.training_rows(data, labels=None, gold=True)
    gold = {r["uid"]: r["answer"] for r in read_jsonl(data / "gold" / "student_pool.jsonl")}
    assert role == "ceiling" and [r["answer"] for r in rows] == [gold[r["uid"]] for r in rows]
    seen = spy_fit(monkeypatch)
    _, info = train(cfg, data, tiny_model_dir, tmp_path / "ceiling", gold=True)
    assert info["role"] == "ceiling" and info["n_rows"] == 6 and info["selected_on"] == str(data / "val.jsonl")
    assert seen == [read_jsonl(data / "val.jsonl")]
    record = json.loads((tmp_path / "ceiling.provenance.json").read_text())
    assert {str(data / "gold" / "student_pool.jsonl"), str(data / "val.jsonl")} <= set(record["inputs"])
    assert record["extra"]["role"] == "ceiling"


def test_what_each_role_may_select_on(tmp_path):
    data = write_split_dir(tmp_path / "data")
    val_labels = pseudo_labels(data, tmp_path / "pseudo.val.jsonl", split="val")
    select = students.selection_rows
    with pytest.raises(UserError, match="pass --val-labels"):
        select(data, "student", None, select_on_val=True)
    with pytest.raises(UserError, match="the ceiling selects its epoch on val's gold answers"):
        select(data, "ceiling", val_labels, select_on_val=True)
    with pytest.raises(UserError, match="select_on_val is false"):
        select(data, "student", val_labels, select_on_val=False)
    assert select(data, "student", None, select_on_val=False) == select(data, "ceiling", None, False) == (None, None)
    gold_val = [{**r, "choices": [r["answer"], "other"], "gold": 0} for r in read_jsonl(data / "val.jsonl")]
    write_jsonl(data / "val.jsonl", gold_val)  # as prepare-data writes val: with `gold`
    with pytest.raises(UserError, match="row 1: carries `gold`"):
        select(data, "student", data / "val.jsonl", select_on_val=True)
    with pytest.raises(UserError, match="read only by the ceiling"):
        select(data, "student", data / "gold" / "student_pool.jsonl", select_on_val=True)
    write_jsonl(val_labels, [{"uid": "u100", "prompt": "Question: ?\nAnswer:", "answer": " "}])
    with pytest.raises(UserError, match="row 1: a val label row needs a prompt and a non-empty answer"):
        select(data, "student", val_labels, select_on_val=True)
    write_jsonl(val_labels, [])
    with pytest.raises(UserError, match="no val answers to select on"):
        select(data, "student", val_labels, select_on_val=True)


def test_without_selection_a_student_trains_fixed_epochs(make_config, tiny_model_dir, tmp_path, monkeypatch):
    models = {"weak": {"source": "tiny", "tiny": {}}, "strong": {"source": "tiny", "tiny": {}}}
    cfg = make_config(models=models, training={"expert": TRAINING, "student": {**TRAINING, "select_on_val": False}})
    data = write_split_dir(tmp_path / "data")
    seen = spy_fit(monkeypatch)
    _, info = train(cfg, data, tiny_model_dir, tmp_path / "a", labels=pseudo_labels(data, tmp_path / "pseudo.jsonl"))
    assert seen == [None] and info["selected_on"] is None
    assert not any("val" in p for p in json.loads((tmp_path / "a.provenance.json").read_text())["inputs"])


def test_only_the_ceiling_reads_gold(tmp_path):
    data = write_split_dir(tmp_path / "data")
    with pytest.raises(UserError, match="read only by the ceiling"):
        students.training_rows(data, labels=data / "gold" / "student_pool.jsonl", gold=False)
    with pytest.raises(UserError, match="exactly one of --labels"):
        students.training_rows(data, labels=tmp_path / "pseudo.jsonl", gold=True)


def test_labels_must_match_the_pool(tmp_path):
    data = write_split_dir(tmp_path / "data")
    pool = read_jsonl(data / "student_pool.jsonl")
    labels = pseudo_labels(data, tmp_path / "pseudo.jsonl")
    rows = read_jsonl(labels)
    write_jsonl(labels, rows[1:])  # pseudolabel.py drops empty answers: those rows are not trained on
    assert [r["uid"] for r in students.training_rows(data, labels=labels, gold=False)[1]] == [r["uid"] for r in pool[1:]]
    gold = read_jsonl(data / "gold" / "student_pool.jsonl")
    write_jsonl(data / "gold" / "student_pool.jsonl", gold[1:])  # the ceiling needs every gold answer
    with pytest.raises(UserError, match="no answer for student_pool row 0"):
        students.training_rows(data, labels=None, gold=True)
    write_jsonl(labels, rows + [{"uid": "stray", "answer": "x"}])
    with pytest.raises(UserError, match="1 answers for uids that student_pool does not have"):
        students.training_rows(data, labels=labels, gold=False)
    write_jsonl(labels, [dict(rows[0], prompt="Question: other\nAnswer:")] + rows[1:])
    with pytest.raises(UserError, match="prompt of uid"):
        students.training_rows(data, labels=labels, gold=False)
    # pool order wins over label order
    write_jsonl(labels, rows[::-1])
    assert [r["uid"] for r in students.training_rows(data, labels=labels, gold=False)[1]] == [r["uid"] for r in pool]


def test_a_pool_with_answers_is_a_leak(tmp_path):
    data = write_split_dir(tmp_path / "data")
    pool = read_jsonl(data / "student_pool.jsonl")
    write_jsonl(data / "student_pool.jsonl", [dict(pool[0], answer="gold")] + pool[1:])
    with pytest.raises(UserError, match=r"row 1: field\(s\) answer are not in the student_pool allow-list"):
        students.training_rows(data, labels=None, gold=True)


def test_a_replicate_changes_the_training_seed_and_only_it(cfg, tiny_model_dir, tmp_path, monkeypatch):
    """--replicate N (the A/A control): the same rows, settings and val answers, another seed, recorded."""
    import hashlib

    by_hand = lambda seed, n: int(hashlib.sha256(json.dumps([seed, "replicate", n], separators=(",", ":"))  # noqa: E731
                                               .encode()).hexdigest()[:16], 16) % 2**31
    assert students.replicate_seed(0, 0) == 0 and students.replicate_seed(7, 0) == 7  # replicate 0: the student
    assert students.replicate_seed(0, 1) == by_hand(0, 1) != students.replicate_seed(0, 2) == by_hand(0, 2)
    assert students.replicate_seed(1, 1) == by_hand(1, 1) != by_hand(0, 1)
    with pytest.raises(UserError, match="--replicate must be 0"):
        students.replicate_seed(0, -1)
    data = write_split_dir(tmp_path / "data")
    labels = pseudo_labels(data, tmp_path / "pseudo.jsonl")
    val_labels = pseudo_labels(data, tmp_path / "pseudo.val.jsonl", split="val")
    calls, real = [], students.fit
    monkeypatch.setattr(students, "fit", lambda *a, **kw: calls.append((a, kw)) or real(*a, **kw))
    weights, infos = {}, {}
    for n in (0, 1):
        students.train_student(cfg, strong="strong", seed=0, data=data, base=tiny_model_dir, labels=labels, gold=False,
                               out=tmp_path / f"r{n}", val_labels=val_labels, replicate=n)
        weights[n] = load_causal_lm(tmp_path / f"r{n}" / "model").state_dict()
        infos[n] = json.loads((tmp_path / f"r{n}" / "train.json").read_text())
    (args0, kw0), (args1, kw1) = calls
    # fit(model, tokenizer, rows, spec, seed, ckpt, val_rows=...): rows, spec and val rows equal, the seed not
    assert args0[2] == args1[2] and args0[3] == args1[3] and kw0 == kw1
    assert (args0[4], args1[4]) == (0, by_hand(0, 1))
    assert {k: infos[0][k] for k in ("seed", "replicate", "train_seed")} == {"seed": 0, "replicate": 0, "train_seed": 0}
    assert {k: infos[1][k] for k in ("seed", "replicate", "train_seed")} == {"seed": 0, "replicate": 1,
                                                                            "train_seed": by_hand(0, 1)}
    record = json.loads((tmp_path / "r1.provenance.json").read_text())
    assert record["extra"]["replicate"] == 1 and record["extra"]["train_seed"] == by_hand(0, 1)
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # another seed, another model
    with pytest.raises(UserError, match="the ceiling has no replicates"):
        students.train_student(cfg, strong="strong", seed=0, data=data, base=tiny_model_dir, labels=None, gold=True,
                               out=tmp_path / "c", replicate=1)
