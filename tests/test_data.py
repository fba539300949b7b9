"""Dataset entries: loading (local JSONL, hub, generated), formatting into examples, clear errors."""
import json
from itertools import islice
from pathlib import Path

import pytest

from ensemw2s.data import DATASETS, build_prompt, question_uid
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import sha256_text
from tests.conftest import SHARED_DATA

QUARTZ_ROWS = [  # allenai/quartz's hub schema
    {"id": "QRQA-10116-3", "question": "If Mona makes her car less heavy, it will use more or less fuel?",
     "choices": {"text": ["more", "less"], "label": ["A", "B"]}, "answerKey": "B",
     "para": "Lighter cars use less fuel.", "para_id": "QRSent-10116",
     "para_anno": {"effect_prop": "fuel use", "cause_dir_str": "lighter", "effect_dir_str": "less"},
     "question_anno": {"more_effect_dir": "", "less_effect_dir": "less"}},
    {"id": "QRQA-10116-4", "question": "Tom's bike is heavier than Ann's. Whose bike needs  more force to speed up?",
     "choices": {"text": ["Tom's", "Ann's"], "label": ["A", "B"]}, "answerKey": "A",
     "para": "Heavier things need more force.", "para_id": "QRSent-10117", "para_anno": {}, "question_anno": {}},
]


def head(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in islice(fh, n)]


def write_rows(folder: Path, split: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def local_copy(tmp_path: Path, folder: str, n: int = 4) -> Path:
    """The first n rows of each official split of a shared dataset, copied into tmp_path/<folder>/."""
    for split in ("train", "validation", "test"):
        write_rows(tmp_path / folder, split, head(SHARED_DATA / folder / f"{split}.jsonl", n))
    return tmp_path


def quartz_dir(tmp_path: Path) -> Path:
    for split, rows in (("train", QUARTZ_ROWS), ("validation", QUARTZ_ROWS[:1]), ("test", QUARTZ_ROWS[1:])):
        write_rows(tmp_path / "quartz", split, rows)
    return tmp_path


def examples(make_config, name: str, data_dir: Path | str, **entry) -> list[dict]:
    cfg = make_config(datasets=[{"name": name, "load_from": "local", **entry}], data_dir=str(data_dir))
    return DATASETS.get(name).examples(cfg.dataset(name), cfg.data_dir)


DATA_DIRS = {  # one small data directory per registered dataset
    "sciq": lambda tmp: local_copy(tmp, "sciq"),
    "arc": lambda tmp: local_copy(local_copy(tmp, "arc_easy"), "arc_challenge"),
    "quartz": quartz_dir,
    "synthetic": lambda tmp: tmp,
}


def test_every_dataset_is_covered_here():
    assert set(DATA_DIRS) == set(DATASETS.names())


@pytest.mark.parametrize("name", sorted(DATA_DIRS))
def test_every_dataset_formats_rows_into_examples(make_config, tmp_path, name):
    rows = examples(make_config, name, DATA_DIRS[name](tmp_path))
    entry = DATASETS.get(name)
    assert rows
    for ex in rows:
        choices = ex["choices"]
        assert ex["answer"] == choices[ex["gold"]] and ex["answer"] == ex["answer"].strip() != ""
        assert ex["uid"] == sha256_text(" ".join(ex["question"].lower().split()))
        # one format by default: the question, then the answer cue, without the lettered choices
        assert ex["prompt"] == f"Question: {ex['question'].strip()}\nAnswer:"
        assert {f.split(".")[0] for f in entry.fields} <= set(ex)  # the row's own fields are kept (the pool: splits.py)
    d = entry.defaults
    assert set(d["sizes"]) == {"weak_train", "val", "test_id", "student_pool", "test_ood"}
    assert d["difficulty"]["strategy"] in entry.strategies
    assert ("source" in entry.strategies) == bool(entry.hard_sources)


def test_sciq_choices_are_shuffled_by_the_question_alone(make_config, tmp_path):
    rows = examples(make_config, "sciq", local_copy(tmp_path, "sciq"))
    assert len(rows) == 12 and {r["source"] for r in rows} == {"SciQ"}
    first = rows[4]  # validation line 1
    assert first["question"] == "Who proposed the theory of evolution by natural selection?"
    assert first["answer"] == "darwin" and sorted(first["choices"]) == sorted(["darwin", "Linnaeus", "shaw", "Scopes"])
    assert first["prompt"] == "Question: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert len({r["gold"] for r in rows}) > 1  # the answer is not always choice A
    again = examples(make_config, "sciq", tmp_path)
    assert [r["choices"] for r in again] == [r["choices"] for r in rows]


def test_arc_pools_both_configs_and_maps_numeric_labels(make_config, tmp_path):
    local_copy(tmp_path, "arc_challenge")
    write_rows(tmp_path / "arc_easy", "train", head(SHARED_DATA / "arc_easy" / "train.jsonl", 5))
    for split in ("validation", "test"):
        write_rows(tmp_path / "arc_easy", split, [])
    rows = examples(make_config, "arc", tmp_path)
    assert [r["source"] for r in rows] == ["ARC-Easy"] * 5 + ["ARC-Challenge"] * 12
    numeric = rows[4]  # NYSEDREGENTS_2006_8_10: labels 1-4, answerKey "3"
    assert numeric["id"] == "NYSEDREGENTS_2006_8_10" and numeric["gold"] == 2 and numeric["answer"] == "how they formed"
    assert numeric["choices"] == ["their color", "their shape", "how they formed", "the minerals they contain"]


def test_quartz_from_its_hub_schema(make_config, tmp_path):
    rows = examples(make_config, "quartz", quartz_dir(tmp_path))
    assert [r["answer"] for r in rows] == ["less", "Tom's", "less", "Tom's"]
    assert rows[1]["prompt"] == "Question: Tom's bike is heavier than Ann's. Whose bike needs  more force to speed up?\nAnswer:"
    assert rows[0]["para"] == "Lighter cars use less fuel." and rows[0]["source"] == "QuaRTz"


def test_sciq_and_arc_prompts_show_no_lettered_list_unless_asked(make_config, tmp_path):
    # the lettered list drives zero-shot multiple-choice scoring of small models to chance; lm-eval's own
    # sciq / arc tasks show the question and "Answer:" only, and training and scoring read the same `prompt`
    data = DATA_DIRS["arc"](DATA_DIRS["sciq"](tmp_path))
    for name in ("sciq", "arc"):
        cfg = make_config(datasets=[{"name": name, "load_from": "local"}], data_dir=str(data))
        assert cfg.dataset(name).show_choices is False
        assert cfg.raw["datasets"][0]["show_choices"] is False  # resolved into the config that provenance records
        default = DATASETS.get(name).examples(cfg.dataset(name), cfg.data_dir)
        shown = examples(make_config, name, data, show_choices=True)
        assert len(default) == len(shown) > 0
        for plain, ex in zip(default, shown):
            question = ex["question"].strip()
            assert plain["prompt"] == f"Question: {question}\nAnswer:"
            listed = "".join(f"{letter}. {c}\n" for letter, c in zip("ABCDE", ex["choices"]))
            assert ex["prompt"] == f"Question: {question}\n{listed}Answer:"


def test_show_choices_is_a_switch(make_config, tmp_path):
    hidden = examples(make_config, "quartz", quartz_dir(tmp_path))
    assert hidden[0]["prompt"] == "Question: If Mona makes her car less heavy, it will use more or less fuel?\nAnswer:"
    shown = examples(make_config, "quartz", tmp_path, show_choices=True)
    assert shown[1]["prompt"] == ("Question: Tom's bike is heavier than Ann's. Whose bike needs  more force to speed up?\n"
                                  "A. Tom's\nB. Ann's\nAnswer:")


def test_repeated_questions_share_a_uid():
    assert question_uid("What  is a cell?") == question_uid(" what is a CELL? ")
    assert question_uid("What is a cell?") != question_uid("What is a cells?")


def test_missing_folder_names_the_path_and_the_flag(make_config, tmp_path):
    with pytest.raises(UserError, match=r"local folder .*nowhere/sciq not found; point --data-dir"):
        examples(make_config, "sciq", tmp_path / "nowhere")


def test_bad_json_line_names_file_and_line(make_config, tmp_path):
    local_copy(tmp_path, "sciq")
    path = tmp_path / "sciq" / "validation.jsonl"
    path.write_text(path.read_text() + "\n{not json\n")
    with pytest.raises(DataFileError, match=rf"{path} line 6: invalid JSON"):
        examples(make_config, "sciq", tmp_path)


def test_missing_field_names_file_line_and_field(make_config, tmp_path):
    local_copy(tmp_path, "arc_easy")
    local_copy(tmp_path, "arc_challenge")
    path = tmp_path / "arc_challenge" / "test.jsonl"
    rows = head(path, 4)
    del rows[2]["choices"]["label"]
    path.write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))  # a blank first line
    with pytest.raises(UserError, match=rf"{path} line 4: missing field 'choices.label'"):
        examples(make_config, "arc", tmp_path)


@pytest.mark.parametrize("change, match", [
    ({"answerKey": "E"}, r"line 2: answerKey 'E' is not one of the choice labels"),
    ({"choices": {"text": ["   ", "x"], "label": ["A", "B"]}, "answerKey": "A"}, r"line 2: the correct choice is empty"),
])
def test_unusable_rows_are_user_errors(make_config, tmp_path, change, match):
    quartz_dir(tmp_path)
    write_rows(tmp_path / "quartz", "train", [QUARTZ_ROWS[0], {**QUARTZ_ROWS[1], **change}])
    with pytest.raises(UserError, match=match):
        examples(make_config, "quartz", tmp_path)


def test_hub_rows_are_loaded_per_official_split(make_config, monkeypatch):
    calls = []

    def load_dataset(hub_id, config=None):
        calls.append((hub_id, config))
        return {"test": QUARTZ_ROWS[1:], "train": QUARTZ_ROWS[:1], "extra": QUARTZ_ROWS}

    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    cfg = make_config(datasets=[{"name": "quartz", "load_from": "hub"}])
    rows = DATASETS.get("quartz").examples(cfg.dataset("quartz"), cfg.data_dir)
    assert calls == [("allenai/quartz", None)]
    assert [r["id"] for r in rows] == ["QRQA-10116-3", "QRQA-10116-4"]  # train, then test; no unofficial split


def test_unreachable_hub_says_to_load_locally(make_config, monkeypatch):
    def offline(hub_id, config=None):
        raise ConnectionError(f"Couldn't reach '{hub_id}' on the Hub")

    monkeypatch.setattr("datasets.load_dataset", offline)
    cfg = make_config(datasets=[{"name": "arc", "load_from": "hub"}])
    with pytest.raises(UserError, match=r"allenai/ai2_arc \(ARC-Easy\).*cannot be reached.*load_from: local"):
        DATASETS.get("arc").examples(cfg.dataset("arc"), cfg.data_dir)


def test_corpus_only_where_a_dataset_has_one():
    docs = DATASETS.get("synthetic").corpus(5, 0)
    assert len(docs) == 5 and all(isinstance(d, str) and d for d in docs)
    assert DATASETS.get("synthetic").corpus(5, 0, {"world_seed": 3}) != docs
    with pytest.raises(UserError, match="no unlabeled corpus"):
        DATASETS.get("sciq").corpus(5, 0)


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(UserError, match="unknown dataset 'sciqq'. Did you mean 'sciq'"):
        DATASETS.get("sciqq")
