"""splitdir.py: the split-directory contract: one reader per file kind, each reading only what its role may
see, and the gold answers of student_pool for the ceiling alone."""
from pathlib import Path

import pytest

from ensemw2s import splitdir
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import write_json, write_jsonl


def labelled(uid: str, question: str, choices: list[str], gold: int) -> dict:
    """A row of weak_train / val / test_* as prepare-data writes it (a dataset field and difficulty included)."""
    return {"id": uid, "uid": uid, "prompt": f"Question: {question}\nAnswer:", "answer": choices[gold],
            "choices": choices, "gold": gold, "difficulty": 1.5, "hard": False, "source": "hand"}


ROWS = [labelled("u1", "What color is the sky?", ["blue", "green"], 0),
        labelled("u2", "Which gas do plants absorb?", ["oxygen", "carbon dioxide"], 1),
        labelled("u3", "Where does the vemora live?", ["in the forest", "at sea"], 0)]


def split_dir(root: Path) -> Path:
    """Every file of a split directory, the pool written through `pool_row` as prepare-data does."""
    for split in ("weak_train", "val", "test_id", "test_ood"):
        write_jsonl(root / f"{split}.jsonl", ROWS)
    write_jsonl(root / "student_pool.jsonl", [splitdir.pool_row(r) for r in ROWS])
    write_jsonl(root / splitdir.GOLD_FILE, [{"uid": r["uid"], "answer": r["answer"], "gold": r["gold"]} for r in ROWS])
    return root


def test_refuse_gold_refuses_only_the_gold_folder(tmp_path):
    data = split_dir(tmp_path / "data")
    assert splitdir.refuse_gold(str(data / "val.jsonl")) == data / "val.jsonl"
    assert splitdir.refuse_gold(tmp_path / "gold.jsonl") == tmp_path / "gold.jsonl"  # a file named gold is fine
    with pytest.raises(UserError, match="read only by the ceiling"):
        splitdir.refuse_gold(data / "gold" / "student_pool.jsonl")
    with pytest.raises(UserError, match="read only by the ceiling"):  # however the path is spelled
        splitdir.refuse_gold(data / "gold" / ".." / "gold" / "student_pool.jsonl")


def test_experts_cannot_read_student_pool_or_gold(tmp_path):
    data = split_dir(tmp_path / "data")
    with pytest.raises(UserError, match="only by the ceiling"):
        splitdir.read_split(data / "gold", "weak_train")
    with pytest.raises(UserError, match="train and select only on weak_train, val, not 'student_pool'"):
        splitdir.read_split(data, "student_pool")
    with pytest.raises(UserError, match="not 'test_id'"):
        splitdir.read_split(data, "test_id")
    assert splitdir.read_split(data, "weak_train") == ROWS  # whole rows: training builds its text from them


def test_training_rows_need_uid_prompt_and_an_answer(tmp_path):
    data = split_dir(tmp_path / "data")
    write_jsonl(data / "weak_train.jsonl", [ROWS[0], {k: v for k, v in ROWS[1].items() if k != "uid"}])
    with pytest.raises(DataFileError, match=r"weak_train.jsonl line 2: missing field\(s\) uid"):
        splitdir.read_split(data, "weak_train")
    write_jsonl(data / "val.jsonl", [ROWS[0], ROWS[1], {**ROWS[2], "answer": "  "}])
    with pytest.raises(DataFileError, match="val.jsonl line 3: empty answer"):
        splitdir.read_split(data, "val")


def test_val_questions_keep_no_answer(tmp_path):
    data = split_dir(tmp_path / "data")
    assert splitdir.read_val_questions(data) == [{"uid": r["uid"], "prompt": r["prompt"], "choices": r["choices"]}
                                                 for r in ROWS]
    write_jsonl(data / "val.jsonl", [{"uid": "u1", "prompt": "Q"}])
    with pytest.raises(UserError, match=r"val.jsonl line 1: missing field\(s\) choices"):
        splitdir.read_val_questions(data)


def test_task_rows_are_the_fields_lm_eval_reads_up_to_the_limit(tmp_path):
    data = split_dir(tmp_path / "data")
    assert splitdir.read_task_rows(data, "test_id", limit=2) == [
        {"uid": "u1", "prompt": "Question: What color is the sky?\nAnswer:", "answer": "blue",
         "choices": ["blue", "green"], "gold": 0},
        {"uid": "u2", "prompt": "Question: Which gas do plants absorb?\nAnswer:", "answer": "carbon dioxide",
         "choices": ["oxygen", "carbon dioxide"], "gold": 1},
    ]
    assert len(splitdir.read_task_rows(data, "test_ood", limit=None)) == 3
    with pytest.raises(UserError, match="evaluation scores only val, test_id, test_ood, not 'student_pool'"):
        splitdir.read_task_rows(data, "student_pool", limit=None)
    write_jsonl(data / "val.jsonl", [{"uid": "u", "prompt": "Q", "answer": "a"}])
    with pytest.raises(DataFileError, match=r"val.jsonl line 1: missing field\(s\) choices, gold"):
        splitdir.read_task_rows(data, "val", limit=None)
    write_jsonl(data / "val.jsonl", [])
    with pytest.raises(DataFileError, match="no rows to evaluate"):
        splitdir.read_task_rows(data, "val", limit=None)
    (data / "val.jsonl").unlink()
    with pytest.raises(UserError, match="split file not found; run `ensemw2s prepare-data`"):
        splitdir.read_task_rows(data, "val", limit=None)


def test_pool_rows_keep_only_the_allow_list():
    row = {**ROWS[0], "support": "The sky is blue."}
    assert splitdir.pool_row(row) == {"uid": "u1", "prompt": "Question: What color is the sky?\nAnswer:",
                                      "choices": ["blue", "green"], "source": "hand"}
    assert splitdir.pool_row(row, ("uid", "prompt", "support")) == {
        "uid": "u1", "prompt": "Question: What color is the sky?\nAnswer:", "support": "The sky is blue."}


def test_the_one_reader_of_student_pool_refuses_any_other_field(tmp_path):
    data = split_dir(tmp_path / "data")
    pool = [splitdir.pool_row(r) for r in ROWS]
    assert splitdir.read_pool(data) == pool
    for field, value in (("support", "the ion 3"), ("difficulty", 2.0), ("answer", "ion 3"), ("distractor1", "atom 3")):
        write_jsonl(data / "student_pool.jsonl", pool[:1] + [{**pool[1], field: value}] + pool[2:])
        with pytest.raises(UserError, match=rf"row 2: field\(s\) {field} are not in the student_pool allow-list"):
            splitdir.read_pool(data)
    write_jsonl(data / "student_pool.jsonl", [{"uid": "u", "choices": []}])
    with pytest.raises(UserError, match=r"line 1: missing field\(s\) prompt"):
        splitdir.read_pool(data)
    with pytest.raises(UserError, match=r"line 1: missing field\(s\) prompt"):
        splitdir.read_pool(data, required=("uid", "prompt", "choices"))
    with pytest.raises(UserError, match=r"must not read the gold answers.*parent of gold/"):
        splitdir.read_pool(data / "gold")


def test_the_manifest_may_name_the_pool_allow_list(tmp_path):
    data = split_dir(tmp_path / "data")
    pool = [{"uid": r["uid"], "prompt": r["prompt"], "support": "a passage"} for r in ROWS]
    write_jsonl(data / "student_pool.jsonl", pool)
    write_json(data / "manifest.json", {"dataset": "d", "seed": 0})  # no pool_fields: the default list
    with pytest.raises(UserError, match=r"field\(s\) support are not in the student_pool allow-list \(uid, prompt, "
                                        r"choices, source\)"):
        splitdir.read_pool(data)
    write_json(data / "manifest.json", {"dataset": "d", "seed": 0, "pool_fields": ["uid", "prompt", "support"]})
    assert splitdir.read_pool(data) == pool
    write_jsonl(data / "student_pool.jsonl", [splitdir.pool_row(r) for r in ROWS])  # choices and source
    with pytest.raises(UserError, match=r"field\(s\) choices, source are not in the student_pool allow-list"):
        splitdir.read_pool(data)
    write_json(data / "manifest.json", {"pool_fields": ["uid", "prompt", "answer"]})
    with pytest.raises(UserError, match="pool_fields names answer, the gold answer"):
        splitdir.read_pool(data)
    write_json(data / "manifest.json", {"pool_fields": "uid,prompt"})
    with pytest.raises(DataFileError, match="pool_fields must be a list of field names"):
        splitdir.read_pool(data)


def test_only_the_ceiling_reads_gold(tmp_path):
    data = split_dir(tmp_path / "data")
    assert splitdir.read_gold(data, role="ceiling") == [
        {"uid": "u1", "answer": "blue", "gold": 0}, {"uid": "u2", "answer": "carbon dioxide", "gold": 1},
        {"uid": "u3", "answer": "in the forest", "gold": 0}]
    for role in ("student", "expert"):
        with pytest.raises(UserError, match=f"role '{role}' asked for the gold answers.*only the ceiling may read"):
            splitdir.read_gold(data, role=role)
    write_jsonl(data / splitdir.GOLD_FILE, [{"uid": "u1", "answer": "blue"}])
    with pytest.raises(DataFileError, match=r"line 1: missing field\(s\) gold"):
        splitdir.read_gold(data, role="ceiling")

