"""Students learn from pseudo-labels only; the ceiling alone reads the gold answers of student_pool."""
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


def pseudo_labels(data, path):
    """An ensemble's answers for student_pool: deliberately not the gold ones."""
    rows = [{"uid": r["uid"], "prompt": r["prompt"], "answer": "pseudo answer"} for r in read_jsonl(data / "student_pool.jsonl")]
    write_jsonl(path, rows)
    return path


def train(cfg, data, base, out, labels=None, gold=False):
    students.train_student(cfg, strong="strong", seed=0, data=data, base=base, labels=labels, gold=gold, out=out)
    return load_causal_lm(out / "model").state_dict(), json.loads((out / "train.json").read_text())


def test_student_is_the_same_whether_or_not_gold_exists(cfg, tiny_model_dir, tmp_path):
    data = write_split_dir(tmp_path / "data")
    labels = pseudo_labels(data, tmp_path / "pseudo.jsonl")
    with_gold, info = train(cfg, data, tiny_model_dir, tmp_path / "a", labels=labels)
    assert info["role"] == "student" and info["n_rows"] == 6 and info["tokens_processed"] > 0
    assert not (tmp_path / "a.ckpt").exists()
    assert json.loads((tmp_path / "a" / "fit.json").read_text())["resumed_from"] is None
    record = json.loads((tmp_path / "a.provenance.json").read_text())
    assert record["step"] == "train_student" and record["config_keys"] == ["models.strong", "training.student"]
    assert str(labels) in record["inputs"] and not any("gold" in p for p in record["inputs"])
    shutil.rmtree(data / "gold")
    without_gold, _ = train(cfg, data, tiny_model_dir, tmp_path / "b", labels=labels)
    assert all(torch.equal(with_gold[k], without_gold[k]) for k in with_gold)
    base = load_causal_lm(tiny_model_dir).state_dict()
    assert not torch.equal(with_gold["model.embed_tokens.weight"], base["model.embed_tokens.weight"])


def test_ceiling_trains_on_gold(cfg, tiny_model_dir, tmp_path):
    data = write_split_dir(tmp_path / "data")
    role, rows = students.training_rows(data, labels=None, gold=True)
    gold = {r["uid"]: r["answer"] for r in read_jsonl(data / "gold" / "student_pool.jsonl")}
    assert role == "ceiling" and [r["answer"] for r in rows] == [gold[r["uid"]] for r in rows]
    _, info = train(cfg, data, tiny_model_dir, tmp_path / "ceiling", gold=True)
    assert info["role"] == "ceiling" and info["n_rows"] == 6
    record = json.loads((tmp_path / "ceiling.provenance.json").read_text())
    assert str(data / "gold" / "student_pool.jsonl") in record["inputs"] and record["extra"]["role"] == "ceiling"


def test_only_the_ceiling_reads_gold(tmp_path):
    data = write_split_dir(tmp_path / "data")
    with pytest.raises(UserError, match="read only by the ceiling"):
        students.training_rows(data, labels=data / "gold" / "student_pool.jsonl", gold=False)
    with pytest.raises(UserError, match="only the ceiling may read"):
        students.read_gold(data, role="student")
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
    with pytest.raises(UserError, match="must not carry an answer"):
        students.read_pool(data)
