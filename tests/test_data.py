"""Datasets as data: definition files (ensemw2s/catalog.py), their layouts read into examples
(ensemw2s/data.py), loading from local JSONL, the hub and a generator, and clear errors."""
import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
import yaml

from ensemw2s import catalog, synthetic
from ensemw2s.catalog import DefinitionError, definition
from ensemw2s.data import BadRow, Question, build_prompt, corpus, example, examples, question_uid
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
MMLU_SPLITS = ("dev", "validation", "test")


def uid(text: str) -> str:
    return sha256_text(" ".join(text.lower().split()))


def head(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in islice(fh, n)]


def write_rows(folder: Path, split: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def local_copy(tmp_path: Path, folder: str, n: int = 4, splits=("train", "validation", "test")) -> Path:
    """The first n rows of each official split of a shared dataset, copied into tmp_path/<folder>/."""
    for split in splits:
        write_rows(tmp_path / folder, split, head(SHARED_DATA / folder / f"{split}.jsonl", n))
    return tmp_path


def quartz_dir(tmp_path: Path) -> Path:
    for split, rows in (("train", QUARTZ_ROWS), ("validation", QUARTZ_ROWS[:1]), ("test", QUARTZ_ROWS[1:])):
        write_rows(tmp_path / "quartz", split, rows)
    return tmp_path


def read(make_config, name: str, data_dir: Path | str, **entry) -> list[dict]:
    cfg = make_config(datasets=[{"name": name, "load_from": "local", **entry}], data_dir=str(data_dir))
    return examples(cfg.dataset(name), cfg.data_dir)


DATA_DIRS = {  # one small data directory per dataset of the package
    "sciq": lambda tmp: local_copy(tmp, "sciq"),
    "arc": lambda tmp: local_copy(local_copy(tmp, "arc_easy"), "arc_challenge"),
    "quartz": quartz_dir,
    "mmlu": lambda tmp: local_copy(tmp, "mmlu", splits=MMLU_SPLITS),
    "synthetic": lambda tmp: tmp,
}


# ---------------------------------------------------------------------------------------------
# the package's definitions


def test_every_dataset_is_covered_here():
    assert set(DATA_DIRS) == set(catalog.DATASETS.names())


@pytest.mark.parametrize("name", sorted(DATA_DIRS))
def test_every_dataset_formats_rows_into_examples(make_config, tmp_path, name):
    rows = read(make_config, name, DATA_DIRS[name](tmp_path))
    d = definition(name)
    assert rows
    for ex in rows:
        choices = ex["choices"]
        assert ex["answer"] == choices[ex["gold"]] and ex["answer"] == ex["answer"].strip() != ""
        assert ex["uid"] == uid(ex["question"])
        # one format by default: the question, then the answer cue, without the lettered choices
        assert ex["prompt"] == f"Question: {ex['question'].strip()}\nAnswer:"
        assert {f.split(".")[0] for f in d.fields.required()} <= set(ex)  # the row's own fields are kept
    assert set(d.defaults["sizes"]) == {"weak_train", "val", "test_id", "student_pool", "test_ood"}
    assert d.defaults["difficulty"]["strategy"] in d.strategies
    assert d.pool_fields == ("uid", "prompt", "choices", "source")


def test_the_synthetic_definition_states_the_generators_defaults():
    """The options written in synthetic.yaml are the generator's own defaults, key for key."""
    assert definition("synthetic").defaults["options"] == synthetic.DEFAULTS


def test_the_package_ships_the_definitions_and_their_schema():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"datasets/*.yaml"' in pyproject and '"schemas/*.yaml"' in pyproject
    assert catalog.schema()["title"] == "ensemw2s dataset definition"


def test_catalog_imports_no_torch():
    code = "import ensemw2s.catalog, sys; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# each layout, on hand-written rows (the expected examples are those of the code before definitions)


def test_correct_and_distractors_layout_shuffles_by_the_question_alone():
    row = {"question": "What gas do plants take in to make sugar?", "distractor3": "oxygen", "distractor1": "helium",
           "distractor2": "argon", "correct_answer": "carbon dioxide", "support": "Plants take in carbon dioxide."}
    got = example(definition("sciq"), row, "SciQ", show_choices=False)
    assert list(got.items()) == [*row.items(), ("uid", uid(row["question"])),
                                 ("prompt", "Question: What gas do plants take in to make sugar?\nAnswer:"),
                                 ("answer", "carbon dioxide"), ("choices", ["argon", "helium", "oxygen", "carbon dioxide"]),
                                 ("gold", 3), ("source", "SciQ")]


def test_text_and_label_layout_maps_numeric_labels_and_strips_choices():
    row = {"id": "NYSED_1", "question": "Which is a mineral?",
           "choices": {"text": ["wood", " quartz ", "glass"], "label": ["1", "2", "3"]}, "answerKey": "2"}
    got = example(definition("arc"), row, "ARC-Challenge", show_choices=True)
    assert list(got.items()) == [("id", "NYSED_1"), ("question", "Which is a mineral?"),
                                 ("choices", ["wood", "quartz", "glass"]), ("answerKey", "2"),
                                 ("uid", uid("Which is a mineral?")),
                                 ("prompt", "Question: Which is a mineral?\nA. wood\nB. quartz\nC. glass\nAnswer:"),
                                 ("answer", "quartz"), ("gold", 1), ("source", "ARC-Challenge")]


def test_list_and_index_layout_with_a_source_field(make_config, tmp_path):
    row = {"question": "Find 2 + 2.", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"], "answer": 1}
    for split in MMLU_SPLITS:
        write_rows(tmp_path / "mmlu", split, [row] if split == "validation" else [])
    (got,) = read(make_config, "mmlu", tmp_path)
    assert list(got.items()) == [("question", "Find 2 + 2."), ("subject", "elementary_mathematics"),
                                 ("choices", ["3", "4", "5", "22"]), ("answer", "4"), ("uid", uid("Find 2 + 2.")),
                                 ("prompt", "Question: Find 2 + 2.\nAnswer:"), ("gold", 1),
                                 ("source", "elementary_mathematics")]


def test_generated_layout_keeps_the_generators_row(make_config):
    cfg = make_config()
    first = examples(cfg.dataset("synthetic"), cfg.data_dir)[0]
    row = synthetic.questions(cfg.dataset("synthetic").options)[0]
    assert row["id"] == "synthetic-00000" and row["question"] == "What is the Mas-vi-mad afraid of?"
    assert list(first.items()) == [*row.items(), ("uid", uid(row["question"])),
                                   ("prompt", "Question: What is the Mas-vi-mad afraid of?\nAnswer:"),
                                   ("answer", "nedru toads"), ("gold", 0)]
    assert first["choices"] == ["nedru toads", "metvi crabs", "sunzu owls", "mozbu eels"] and first["source"] == "easy"


def test_sciq_choices_are_shuffled_by_the_question_alone(make_config, tmp_path):
    rows = read(make_config, "sciq", local_copy(tmp_path, "sciq"))
    assert len(rows) == 12 and {r["source"] for r in rows} == {"SciQ"}
    first = rows[4]  # validation line 1
    assert first["question"] == "Who proposed the theory of evolution by natural selection?"
    assert first["answer"] == "darwin" and sorted(first["choices"]) == sorted(["darwin", "Linnaeus", "shaw", "Scopes"])
    assert first["prompt"] == "Question: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert len({r["gold"] for r in rows}) > 1  # the answer is not always choice A
    again = read(make_config, "sciq", tmp_path)
    assert [r["choices"] for r in again] == [r["choices"] for r in rows]


def test_arc_pools_both_configs_and_maps_numeric_labels(make_config, tmp_path):
    local_copy(tmp_path, "arc_challenge")
    write_rows(tmp_path / "arc_easy", "train", head(SHARED_DATA / "arc_easy" / "train.jsonl", 5))
    for split in ("validation", "test"):
        write_rows(tmp_path / "arc_easy", split, [])
    rows = read(make_config, "arc", tmp_path)
    assert [r["source"] for r in rows] == ["ARC-Easy"] * 5 + ["ARC-Challenge"] * 12
    numeric = rows[4]  # NYSEDREGENTS_2006_8_10: labels 1-4, answerKey "3"
    assert numeric["id"] == "NYSEDREGENTS_2006_8_10" and numeric["gold"] == 2 and numeric["answer"] == "how they formed"
    assert numeric["choices"] == ["their color", "their shape", "how they formed", "the minerals they contain"]


def test_quartz_from_its_hub_schema(make_config, tmp_path):
    rows = read(make_config, "quartz", quartz_dir(tmp_path))
    assert [r["answer"] for r in rows] == ["less", "Tom's", "less", "Tom's"]
    assert rows[1]["prompt"] == "Question: Tom's bike is heavier than Ann's. Whose bike needs  more force to speed up?\nAnswer:"
    assert rows[0]["para"] == "Lighter cars use less fuel." and rows[0]["source"] == "QuaRTz"


def test_mmlu_from_the_shared_copy(make_config):
    """All three official splits, dev first; the subject is the source; the hard subjects are real ones."""
    rows = read(make_config, "mmlu", SHARED_DATA)
    assert len(rows) == 285 + 1531 + 14042
    first = rows[0]  # dev line 1
    assert first["question"] == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    assert first["choices"] == ["0", "1", "2", "3"] and first["gold"] == 1 and first["answer"] == "1"
    assert first["source"] == first["subject"] == "abstract_algebra"
    subjects, hard_sources = {r["source"] for r in rows}, definition("mmlu").hard_sources
    assert len(subjects) == 57 and hard_sources < subjects
    hard = sum(r["source"] in hard_sources for r in rows)
    assert hard == 3849  # college_* and professional_*
    assert make_config(datasets=[{"name": "mmlu"}]).dataset("mmlu").difficulty.strategy == "source"


def test_sciq_and_arc_prompts_show_no_lettered_list_unless_asked(make_config, tmp_path):
    # the lettered list drives zero-shot multiple-choice scoring of small models to chance; lm-eval's own
    # sciq / arc tasks show the question and "Answer:" only, and training and scoring read the same `prompt`
    data = DATA_DIRS["arc"](DATA_DIRS["sciq"](tmp_path))
    for name in ("sciq", "arc"):
        cfg = make_config(datasets=[{"name": name, "load_from": "local"}], data_dir=str(data))
        assert cfg.dataset(name).show_choices is False
        assert cfg.raw["datasets"][0]["show_choices"] is False  # resolved into the config that provenance records
        default = examples(cfg.dataset(name), cfg.data_dir)
        shown = read(make_config, name, data, show_choices=True)
        assert len(default) == len(shown) > 0
        for plain, ex in zip(default, shown):
            question = ex["question"].strip()
            assert plain["prompt"] == f"Question: {question}\nAnswer:"
            listed = "".join(f"{letter}. {c}\n" for letter, c in zip("ABCDE", ex["choices"]))
            assert ex["prompt"] == f"Question: {question}\n{listed}Answer:"


def test_show_choices_is_a_switch(make_config, tmp_path):
    hidden = read(make_config, "quartz", quartz_dir(tmp_path))
    assert hidden[0]["prompt"] == "Question: If Mona makes her car less heavy, it will use more or less fuel?\nAnswer:"
    shown = read(make_config, "quartz", tmp_path, show_choices=True)
    assert shown[1]["prompt"] == ("Question: Tom's bike is heavier than Ann's. Whose bike needs  more force to speed up?\n"
                                  "A. Tom's\nB. Ann's\nAnswer:")
    assert build_prompt("Why?", ["a", "b"], True) == "Question: Why?\nA. a\nB. b\nAnswer:"


def test_repeated_questions_share_a_uid():
    assert question_uid("What  is a cell?") == question_uid(" what is a CELL? ")
    assert question_uid("What is a cell?") != question_uid("What is a cells?")


# ---------------------------------------------------------------------------------------------
# a dataset of one's own: a definition file named by the config entry


def write_definition(tmp_path: Path, **changes) -> Path:
    """A definition for rows {qid, query, options: {text, label}, key, level} in <data_dir>/mine/{a,b}.jsonl."""
    raw = {"parts": [{"folder": "mine"}], "splits": ["a", "b"],
           "fields": {"id": "qid", "question": "query", "choices": {"text": "options.text", "label": "options.label"},
                      "answer": {"label": "key"}, "source": "level"},
           "hard_sources": ["hard"], "strategies": ["source", "length"],
           "defaults": {"difficulty": {"strategy": "source"},
                        "sizes": {"weak_train": 2, "val": 1, "test_id": 1, "student_pool": 1, "test_ood": 1}}}
    raw.update(changes)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


MINE = [{"qid": "m1", "query": "Which is larger?", "options": {"text": ["ant", "whale"], "label": ["x", "y"]},
         "key": "y", "level": "easy"},
        {"qid": "m2", "query": "Which is colder?", "options": {"text": ["ice", "fire"], "label": ["x", "y"]},
         "key": "x", "level": "hard"}]


def mine(make_config, tmp_path, **entry):
    write_rows(tmp_path / "data" / "mine", "a", MINE[:1])
    write_rows(tmp_path / "data" / "mine", "b", MINE[1:])
    return make_config(data_dir=str(tmp_path / "data"),
                       datasets=[{"name": "my_set", "definition": str(tmp_path / "mine.yaml"), **entry}])


def test_a_definition_file_adds_a_dataset_under_any_name(make_config, tmp_path):
    write_definition(tmp_path)
    cfg = mine(make_config, tmp_path)
    spec = cfg.dataset("my_set")
    assert spec.definition == str(tmp_path / "mine.yaml") and spec.difficulty.strategy == "source"
    assert spec.sizes == {"weak_train": 2, "val": 1, "test_id": 1, "student_pool": 1, "test_ood": 1}
    rows = examples(spec, cfg.data_dir)
    assert [(r["qid"], r["answer"], r["gold"], r["source"]) for r in rows] == [("m1", "whale", 1, "easy"),
                                                                             ("m2", "ice", 0, "hard")]
    assert definition("my_set", tmp_path / "mine.yaml").hard_sources == {"hard"}


def reversed_choices(row: dict) -> Question:
    """A formatter (tests): the choices in reverse order."""
    if not row["options"]:
        raise BadRow("no options")
    return Question(row["query"], row["options"][::-1], len(row["options"]) - 1 - row["key"])


def test_a_formatter_names_python_for_a_layout_fields_cannot_describe(make_config, tmp_path):
    write_definition(tmp_path, formatter="tests.test_data:reversed_choices", fields={"source": "level"})
    cfg = mine(make_config, tmp_path)
    write_rows(tmp_path / "data" / "mine", "a", [{"query": "Pick b.", "options": ["a", "b", "c"], "key": 1, "level": "easy"}])
    write_rows(tmp_path / "data" / "mine", "b", [{"query": "Pick c.", "options": [], "key": 0, "level": "hard"}])
    with pytest.raises(UserError, match=r"mine/b.jsonl line 1: no options"):
        examples(cfg.dataset("my_set"), cfg.data_dir)
    write_rows(tmp_path / "data" / "mine", "b", [])
    (got,) = examples(cfg.dataset("my_set"), cfg.data_dir)
    assert got["choices"] == ["c", "b", "a"] and got["answer"] == "b" and got["gold"] == 1 and got["source"] == "easy"


def test_a_row_id_is_named_in_errors(make_config, tmp_path):
    write_definition(tmp_path)
    cfg = mine(make_config, tmp_path)
    write_rows(tmp_path / "data" / "mine", "b", [{**MINE[1], "key": "z"}])
    with pytest.raises(UserError, match=r"mine/b.jsonl line 1 \(id m2\): key 'z' is not one of the choice labels \['x', 'y'\]"):
        examples(cfg.dataset("my_set"), cfg.data_dir)


def test_an_index_that_is_no_integer_is_a_bad_row(make_config, tmp_path):
    for split in MMLU_SPLITS:
        write_rows(tmp_path / "mmlu", split, [{"question": "q?", "subject": "s", "choices": ["a", "b"], "answer": "B"}])
    with pytest.raises(UserError, match=r"dev.jsonl line 1: answer 'B' is not a choice index \(an integer\)"):
        read(make_config, "mmlu", tmp_path)


BASE = {"parts": [{"folder": "mine", "source": "Mine"}], "fields": {"question": "q", "choices": {"list": "c"},
        "answer": {"index": "a"}}, "strategies": ["length"],
        "defaults": {"difficulty": {"strategy": "length"},
                     "sizes": {"weak_train": 2, "val": 1, "test_id": 1, "student_pool": 1, "test_ood": 1}}}


@pytest.mark.parametrize("change, match", [
    ({"stratgies": ["length"]}, r"key stratgies: unknown key. Did you mean 'strategies'\?"),
    ({"fields": {**BASE["fields"], "anwser": {}}}, r"key fields.anwser: unknown key. Did you mean 'answer'\?"),
    ({"defaults": {**BASE["defaults"], "sizes": {**BASE["defaults"]["sizes"], "val": 0}}},
     r"key defaults.sizes.val: 0 is less than the minimum of 1"),
    ({"fields": None}, r"key fields: None is not of type 'object'"),
    ({"generator": "mine:rows"}, r"key parts: declare either parts .* or generator .*, exactly one"),
    ({"generator": "not a target", "parts": None}, r"key generator: 'not a target' does not match"),
    ({"parts": [{"folder": "mine"}]}, r"key fields.source: the rows' source is not declared"),
    ({"fields": {"question": "q", "choices": {"list": "c"}, "answer": {"index": "a", "label": "k"}}},
     r"key fields.answer: name exactly one of index, label, or correct"),
    ({"fields": {"question": "q", "answer": {"correct": "c"}}}, r"key fields.answer: correct and distractors go together"),
    ({"fields": {"question": "q", "choices": {"list": "c"}, "answer": {"correct": "c", "distractors": ["d"]}}},
     r"key fields.choices: not used with answer.correct"),
    ({"fields": {"question": "q", "choices": {"text": "t"}, "answer": {"index": "a"}}},
     r"key fields.choices: text and label go together"),
    ({"fields": {"question": "q", "choices": {"list": "c"}, "answer": {"label": "k"}}},
     r"key fields.answer.label: needs choices.text and choices.label"),
    ({"fields": {"choices": {"list": "c"}, "answer": {"index": "a"}}}, r"key fields.question: missing"),
    ({"strategies": ["length", "sorce"]}, r"key strategies\[1\]: unknown difficulty strategy 'sorce'. Did you mean 'source'\?"),
    ({"strategies": ["source", "length"]}, r"key hard_sources: the source strategy needs hard_sources"),
    ({"strategies": ["model"]}, r"key defaults.difficulty.strategy: 'length' is not one of strategies \(model\)"),
    ({"pool_fields": ["uid", "choices"]}, r"key pool_fields: must hold uid, prompt .*; add prompt"),
    ({"pool_fields": ["uid", "prompt", "a", "gold"]}, r"key pool_fields: a, gold would reveal or hint at the gold answer"),
])
def test_a_bad_definition_names_the_file_and_the_key(tmp_path, change, match):
    raw = {**BASE, **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None or k == "fields"}))
    with pytest.raises(UserError, match=rf"dataset definition {path}: {match}"):
        definition("bad", path)


def test_an_unreadable_definition_file(tmp_path):
    with pytest.raises(DefinitionError, match=rf"dataset 'x': definition file {tmp_path / 'none.yaml'} not found"):
        definition("x", tmp_path / "none.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("fields: {question: q\nstrategies: [length]\n")
    with pytest.raises(DefinitionError, match=rf"dataset definition {path} line 2: not valid YAML"):
        definition("x", path)
    path.write_text("- a list\n")
    with pytest.raises(DefinitionError, match=r"must be a mapping of keys, got list"):
        definition("x", path)


def test_a_generator_that_cannot_be_imported_names_the_key(make_config, tmp_path):
    path = tmp_path / "gen.yaml"
    raw = {**BASE, "generator": "ensemw2s.synthetic:nothing_here", "fields": {**BASE["fields"], "source": "s"}}
    del raw["parts"]
    path.write_text(yaml.safe_dump(raw))
    cfg = make_config(datasets=[{"name": "gen", "definition": str(path)}])
    with pytest.raises(DefinitionError, match=rf"{path}: key generator: cannot import 'ensemw2s.synthetic:nothing_here'"):
        examples(cfg.dataset("gen"), cfg.data_dir)


# ---------------------------------------------------------------------------------------------
# loading errors


def test_missing_folder_names_the_path_and_the_flag(make_config, tmp_path):
    with pytest.raises(UserError, match=r"local folder .*nowhere/sciq not found; point --data-dir"):
        read(make_config, "sciq", tmp_path / "nowhere")


def test_missing_split_file_names_the_official_splits(make_config, tmp_path):
    write_rows(tmp_path / "mmlu", "dev", [])
    with pytest.raises(UserError, match=r"mmlu/validation.jsonl not found; a local copy holds one JSONL per official "
                                        r"split \(dev, validation, test\)"):
        read(make_config, "mmlu", tmp_path)


def test_bad_json_line_names_file_and_line(make_config, tmp_path):
    local_copy(tmp_path, "sciq")
    path = tmp_path / "sciq" / "validation.jsonl"
    path.write_text(path.read_text() + "\n{not json\n")
    with pytest.raises(DataFileError, match=rf"{path} line 6: invalid JSON"):
        read(make_config, "sciq", tmp_path)


def test_missing_field_names_file_line_and_field(make_config, tmp_path):
    local_copy(tmp_path, "arc_easy")
    local_copy(tmp_path, "arc_challenge")
    path = tmp_path / "arc_challenge" / "test.jsonl"
    rows = head(path, 4)
    del rows[2]["choices"]["label"]
    path.write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))  # a blank first line
    with pytest.raises(UserError, match=rf"{path} line 4 \(id {rows[2]['id']}\): missing field 'choices.label' "
                                        r"\(a arc row needs question, choices.text, choices.label, answerKey\)"):
        read(make_config, "arc", tmp_path)


@pytest.mark.parametrize("change, match", [
    ({"answerKey": "E"}, r"line 2 \(id QRQA-10116-4\): answerKey 'E' is not one of the choice labels"),
    ({"choices": {"text": ["   ", "x"], "label": ["A", "B"]}, "answerKey": "A"}, r"line 2 \(id QRQA-10116-4\): the correct choice is empty"),
    ({"choices": {"text": ["a", "b", "c"], "label": ["A", "B"]}}, r"line 2 \(id QRQA-10116-4\): 3 choice texts but 2 labels"),
])
def test_unusable_rows_are_user_errors(make_config, tmp_path, change, match):
    quartz_dir(tmp_path)
    write_rows(tmp_path / "quartz", "train", [QUARTZ_ROWS[0], {**QUARTZ_ROWS[1], **change}])
    with pytest.raises(UserError, match=match):
        read(make_config, "quartz", tmp_path)


def test_hub_rows_are_loaded_per_official_split(make_config, monkeypatch):
    calls = []

    def load_dataset(hub_id, config=None):
        calls.append((hub_id, config))
        return {"test": QUARTZ_ROWS[1:], "train": QUARTZ_ROWS[:1], "extra": QUARTZ_ROWS} if hub_id == "allenai/quartz" else {}

    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    cfg = make_config(datasets=[{"name": "quartz", "load_from": "hub"}])
    rows = examples(cfg.dataset("quartz"), cfg.data_dir)
    assert calls == [("allenai/quartz", None)]
    assert [r["id"] for r in rows] == ["QRQA-10116-3", "QRQA-10116-4"]  # train, then test; no unofficial split
    examples(make_config(datasets=[{"name": "mmlu", "load_from": "hub"}]).dataset("mmlu"), cfg.data_dir)
    assert calls[-1] == ("cais/mmlu", "all")


def test_unreachable_hub_says_to_load_locally(make_config, monkeypatch):
    def offline(hub_id, config=None):
        raise ConnectionError(f"Couldn't reach '{hub_id}' on the Hub")

    monkeypatch.setattr("datasets.load_dataset", offline)
    cfg = make_config(datasets=[{"name": "arc", "load_from": "hub"}])
    with pytest.raises(UserError, match=r"allenai/ai2_arc \(ARC-Easy\).*cannot be reached.*load_from: local"):
        examples(cfg.dataset("arc"), cfg.data_dir)


def test_corpus_only_where_a_dataset_has_one(make_config):
    synth = make_config().dataset("synthetic")
    docs = corpus(synth, 5, 0)
    assert len(docs) == 5 and all(isinstance(d, str) and d for d in docs)
    other = make_config(datasets=[{"name": "synthetic", "options": {"world_seed": 3}}]).dataset("synthetic")
    assert corpus(other, 5, 0) != docs
    with pytest.raises(UserError, match="no unlabeled corpus"):
        corpus(make_config().dataset("sciq"), 5, 0)


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(UserError, match="unknown dataset 'sciqq'. Did you mean 'sciq'"):
        definition("sciqq")

