"""pseudolabel.py: ensemble answers for student_pool (and val), in input order, no gold read, empty answers
dropped, and the sanity counts of the answers in the sidecar."""
import json
from pathlib import Path

import pytest

import ensemw2s.pseudolabel as pl
from ensemw2s.ensemble import Generation, load_ensemble
from ensemw2s.errors import UserError
from ensemw2s.io import read_jsonl, write_json, write_jsonl
from ensemw2s.models import load_tokenizer, tokenizer_fingerprint
from tests.test_ensemble import livened, reference_decode

PROMPTS = [
    "Question: What color is the zorblat?\nChoices: A) red B) blue\nAnswer:",
    "Question: Which gas do plants absorb?\nAnswer:",
    "Question: Where does the vemora live? the quick brown fox jumps over the lazy dog\nAnswer:",
    "Question: What is 0123456789?\nAnswer:",
    "Question: Why?\nAnswer:",
]
MAX_NEW = 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("pl")
    dirs = [livened(d, root / f"e{i}", seed=20 + i) for i, d in enumerate(tiny_model_dirs[:2])]
    path = root / "r2.json"
    write_json(path, {"experts": [str(d) for d in dirs], "weights": [1.3, 0.6], "combine": "prob",
                      "tokenizer": tokenizer_fingerprint(load_tokenizer(dirs[0]))})
    return path


@pytest.fixture
def data(tmp_path):
    rows = [{"uid": f"u{i}", "prompt": p, "choices": ["red", "blue"], "source": "easy"} for i, p in enumerate(PROMPTS)]
    write_jsonl(tmp_path / "data" / "student_pool.jsonl", rows)
    write_jsonl(tmp_path / "data" / "gold" / "student_pool.jsonl", [{"uid": "u0", "answer": "red", "gold": 0}])
    return tmp_path / "data"


@pytest.fixture
def cfg(make_config):
    return make_config(evaluation={"batch_size": 2, "max_new_tokens": MAX_NEW, "device": "cpu"})


def reference_answers(manifest, stop) -> list[tuple[str, int]]:
    """(answer, tokens generated) per prompt: uncached one-prompt-at-a-time decoding, cut at the first stop."""
    ens = load_ensemble(manifest, device="cpu")
    out = []
    for p in PROMPTS:
        full = reference_decode(ens, ens.tokenizer.encode(p), MAX_NEW)
        n = next((k + 1 for k in range(len(full)) if any(s in ens.tokenizer.decode(full[:k + 1]) for s in stop)),
                 len(full))
        body = full[:n - 1] if full[n - 1] in ens.eos_ids else full[:n]
        text = ens.tokenizer.decode(body, skip_special_tokens=True)
        cut = min([text.find(s) for s in stop if s in text], default=len(text))
        out.append((text[:cut].strip(), n))
    return out


def test_answers_in_input_order_and_meta(cfg, manifest, data, tmp_path, monkeypatch):
    free = reference_answers(manifest, pl.STOP)
    # a stop string that empties one answer (its first character), so the drop is exercised
    first = next(a[0] for a, _ in free if a)
    stop = (*pl.STOP, first)
    monkeypatch.setattr(pl, "STOP", stop)
    expected = reference_answers(manifest, stop)
    assert any(not a for a, _ in expected) and any(a for a, _ in expected)

    out = tmp_path / "pseudo" / "r2.jsonl"
    pl.pseudo_label(cfg, manifest, data, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kept = [(i, a) for i, (a, _) in enumerate(expected) if a]
    assert rows == [{"uid": f"u{i}", "prompt": PROMPTS[i], "answer": a, "choices": ["red", "blue"]} for i, a in kept]

    meta = json.loads(pl.meta_path(out).read_text())
    assert pl.meta_path(out).name == "r2.jsonl.meta.json"
    assert meta["n"] == len(kept) and meta["n_pool"] == len(PROMPTS)
    assert meta["empty_answers"] == len(PROMPTS) - len(kept)
    assert meta["tokens_generated"] == sum(n for _, n in expected)
    assert sum(meta["finish"].values()) == len(PROMPTS) and meta["wall_time_s"] >= 0
    assert meta["truncated"] == meta["finish"].get("length", 0)
    assert meta["mean_answer_tokens"] == meta["tokens_generated"] / len(PROMPTS) and "val" not in meta
    record = json.loads((tmp_path / "pseudo" / "r2.jsonl.provenance.json").read_text())
    assert record["step"] == "pseudo_label" and record["extra"]["empty_answers"] == meta["empty_answers"]
    assert set(record["inputs"]) == {str(manifest), str(data / "student_pool.jsonl")}
    assert record["tokens_processed"] > 2 * meta["tokens_generated"]  # two experts, prompts and answers

    again = tmp_path / "again.jsonl"
    pl.pseudo_label(cfg, manifest, data, again)
    assert again.read_bytes() == out.read_bytes()


def test_gold_is_never_read(cfg, manifest, data, tmp_path):
    with pytest.raises(UserError, match="must not read the gold"):
        pl.pseudo_label(cfg, manifest, data / "gold", tmp_path / "x.jsonl")
    leaked = tmp_path / "leaked"
    write_jsonl(leaked / "student_pool.jsonl", [{"uid": "u0", "prompt": "Q", "choices": [], "answer": "red"}])
    with pytest.raises(UserError, match=r"field\(s\) answer are not in the student_pool allow-list"):
        pl.pseudo_label(cfg, manifest, leaked, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_pool_files(cfg, manifest, tmp_path):
    with pytest.raises(UserError, match="file not found"):
        pl.pseudo_label(cfg, manifest, tmp_path / "nowhere", tmp_path / "x.jsonl")
    write_jsonl(tmp_path / "a" / "student_pool.jsonl", [{"uid": "u0", "choices": []}])
    with pytest.raises(UserError, match="missing field"):
        pl.pseudo_label(cfg, manifest, tmp_path / "a", tmp_path / "x.jsonl")
    write_jsonl(tmp_path / "b" / "student_pool.jsonl", [])
    with pytest.raises(UserError, match="no rows"):
        pl.pseudo_label(cfg, manifest, tmp_path / "b", tmp_path / "x.jsonl")


class StubEnsemble:
    """Fixed generations per prompt, so the sidecar's counts can be worked by hand."""

    experts = ("e1", "e2")

    def __init__(self, generations: dict[str, Generation]):
        self.generations = generations

    def generate(self, prompts, max_new_tokens, stop, batch_size):
        return [self.generations[p] for p in prompts]

    def encode(self, text):
        return text.split()


def test_sanity_counts_and_val_answers_worked_by_hand(cfg, tmp_path, monkeypatch):
    """truncated: finish 'length'; matches_choice: normalised answer equals a normalised choice (an empty
    answer matches nothing, even a choice that normalises to nothing); mean_answer_tokens: tokens / rows.
    The val answers are the ensemble's, in their own file, with no gold field of val.jsonl."""
    eos = 0
    pool = [  # (uid, choices, generated text, tokens, finish)
        ("u0", ["red", "blue"], "The Red.", [5, 6, 7, eos], "eos"),  # match after normalisation
        ("u1", ["red", "blue"], "blue sky", [8] * MAX_NEW, "length"),  # truncated, no match
        ("u2", ["The", "x"], "", [eos], "eos"),  # empty: dropped; "the" normalises to "" yet no match
        ("u3", ["carbon dioxide", "oxygen"], " Carbon   dioxide", [9, 9, 9, 9, 9], "stop"),  # match
        ("u4", ["red", "blue"], "redblue", [7] * MAX_NEW, "length"),  # truncated, no match
    ]
    val = [("v0", ["red", "blue"], "red", [5, eos], "eos"), ("v1", ["red", "blue"], "", [eos], "eos")]
    prompts = {uid: f"Question: {uid}?\nAnswer:" for uid, *_ in pool + val}
    data = tmp_path / "data"
    write_jsonl(data / "student_pool.jsonl", [{"uid": u, "prompt": prompts[u], "choices": c} for u, c, *_ in pool])
    write_jsonl(data / "val.jsonl", [{"uid": u, "prompt": prompts[u], "choices": c, "answer": c[1], "gold": 1,
                                      "difficulty": 1.0} for u, c, *_ in val])
    gens = {prompts[u]: Generation(tokens, text, finish) for u, _, text, tokens, finish in pool + val}
    monkeypatch.setattr(pl, "load_ensemble", lambda manifest, device: StubEnsemble(gens))
    out, val_out = tmp_path / "pseudo" / "r1.jsonl", tmp_path / "pseudo" / "r1.val.jsonl"
    write_json(tmp_path / "r1.json", {"stub": True})  # hashed into provenance; the stub ensemble ignores it
    pl.pseudo_label(cfg, tmp_path / "r1.json", data, out, val_out=val_out)

    meta = json.loads(pl.meta_path(out).read_text())
    assert {k: v for k, v in meta.items() if k not in ("wall_time_s", "val")} == {
        "n": 4, "n_pool": 5, "empty_answers": 1, "tokens_generated": 4 + 8 + 1 + 5 + 8,
        "finish": {"eos": 2, "length": 2, "stop": 1}, "truncated": 2, "matches_choice": 2,
        "mean_answer_tokens": 26 / 5,
    }
    assert {k: v for k, v in meta["val"].items() if k != "wall_time_s"} == {
        "n": 1, "n_rows": 2, "empty_answers": 1, "tokens_generated": 3, "finish": {"eos": 2}, "truncated": 0,
        "matches_choice": 1, "mean_answer_tokens": 1.5}
    assert [r["answer"] for r in read_jsonl(out)] == ["The Red.", "blue sky", "Carbon   dioxide", "redblue"]
    assert read_jsonl(val_out) == [{"uid": "v0", "prompt": prompts["v0"], "answer": "red", "choices": ["red", "blue"]}]
    # one record per file, each with its own inputs and tokens (two experts over prompts and answers)
    records = {p: json.loads(Path(f"{p}.provenance.json").read_text()) for p in (out, val_out)}
    assert set(records[out]["inputs"]) == {str(tmp_path / "r1.json"), str(data / "student_pool.jsonl")}
    assert set(records[val_out]["inputs"]) == {str(tmp_path / "r1.json"), str(data / "val.jsonl")}
    assert records[val_out]["step"] == "pseudo_label" and records[val_out]["extra"]["truncated"] == 0
    prompt_tokens = {p: sum(len(prompts[u].split()) for u, *_ in rows) for p, rows in ((out, pool), (val_out, val))}
    assert records[out]["tokens_processed"] == 2 * (prompt_tokens[out] + 26)
    assert records[val_out]["tokens_processed"] == 2 * (prompt_tokens[val_out] + 3)
