"""scores.py: the score-file contract, i.e. the meta `--meta` labels become and what a reader of a score file
may rely on."""
import pytest

from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import write_json
from ensemw2s.scores import META_DEFAULTS, SCORES, load_score, parse_meta

META = {"role": "expert", "weak_model": "weak", "ensemble": "boost", "round": "1", "seed": "0"}


def test_meta_is_checked():
    assert parse_meta({"role": "ceiling", "strong_model": "s", "seed": "3"}, "sciq")["round"] == 0
    with pytest.raises(UserError, match="Did you mean 'round'"):
        parse_meta({**META, "rouns": "1"}, "sciq")
    with pytest.raises(UserError, match="unknown role 'teacher'"):
        parse_meta({**META, "role": "teacher"}, "sciq")
    with pytest.raises(UserError, match="seed=N is required"):
        parse_meta({"role": "expert"}, "sciq")
    with pytest.raises(UserError, match="expected an integer"):
        parse_meta({**META, "round": "two"}, "sciq")
    with pytest.raises(UserError, match="disagrees with --dataset"):
        parse_meta({**META, "dataset": "arc"}, "sciq")


def test_meta_fills_every_key_and_makes_ints():
    assert parse_meta(META, "sciq") == {"role": "expert", "weak_model": "weak", "strong_model": "", "dataset": "sciq",
                                        "seed": 0, "round": 1, "ensemble": "boost"}
    assert list(parse_meta(META, "sciq")) == list(META_DEFAULTS)  # the file's meta keys, always all of them


def score(**splits) -> dict:
    meta = {**META_DEFAULTS, "role": "student", "weak_model": "w", "strong_model": "s", "dataset": "d", "seed": 0,
            "round": 2, "ensemble": "boost"}
    return {"meta": meta, "splits": splits, "tokens_processed": 10}


def test_a_valid_score_file_reads_back_unchanged(tmp_path):
    block = {"n": 3, "acc": 2 / 3, "acc_norm": 1 / 3, "exact_match": 0.0,
             "per_example": {"acc": [1, 1, 0], "acc_norm": [0, 1, 0], "exact_match": [0, 0, 0]},
             "uids": ["a", "b", "c"]}
    assert tuple(block["per_example"]) == SCORES
    write_json(tmp_path / "s.json", score(test_id=block))
    assert load_score(tmp_path / "s.json") == score(test_id=block)
    stopped = {**score(), "stopped": True, "stop_reason": "round 2: alpha <= 0", "tokens_processed": 0}
    write_json(tmp_path / "stopped.json", stopped)  # an expert whose round stopped: no splits
    assert load_score(tmp_path / "stopped.json")["splits"] == {}


def test_a_bad_score_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "s.json"
    for bad, message in (
        ({"acc": 0.5}, "not a score file"),
        ({**score(), "meta": {"role": "expert"}}, "meta lacks weak_model, strong_model, dataset, seed, round"),
        ({**score(), "meta": {**score()["meta"], "role": "teacher"}}, "meta.role 'teacher' is not one of"),
        (score(val={"per_example": {"acc": [1, 0]}, "uids": ["a"]}), "splits.val.per_example.acc has 2 values for 1"),
    ):
        write_json(path, bad)
        with pytest.raises(DataFileError, match=message):
            load_score(path)


def test_picks_and_the_replicate_role(tmp_path):
    """format 2: per_example pick/gold (one int per uid) read back; a truncated pick list is refused; the A/A
    control's role `replicate` is a role; files without picks stay valid."""
    from ensemw2s.scores import PICKS, ROLES

    assert PICKS == ("pick", "gold") and "replicate" in ROLES
    block = {"n": 3, "acc": 1 / 3, "per_example": {"acc": [1, 0, 0], "pick": [2, 0, 1], "gold": [2, 1, 0]},
             "uids": ["a", "b", "c"]}
    replicate = {**score(test_id=block), "meta": {**score()["meta"], "role": "replicate", "round": 1}}
    write_json(tmp_path / "r.json", replicate)
    assert load_score(tmp_path / "r.json") == replicate
    assert parse_meta({**META, "role": "replicate", "strong_model": "s"}, "sciq")["role"] == "replicate"
    write_json(tmp_path / "bad.json", score(test_id={**block, "per_example": {**block["per_example"], "pick": [2, 0]}}))
    with pytest.raises(DataFileError, match="per_example.pick has 2 values for 3 uids"):
        load_score(tmp_path / "bad.json")
