"""evaluate.py: local lm-eval tasks, the score file, and agreement with lm-eval's own numbers."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ensemw2s import steps
from ensemw2s import config as config_mod
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.evaluate import evaluate, score_generation, task_name, write_tasks
from ensemw2s.io import read_json, write_json, write_jsonl
from ensemw2s.provenance import record_path
from tests.conftest import BASE_CONFIG

QUESTIONS = [
    ("What color is the zorblat?", ["bright red", "in the blue forest", "carbon dioxide"], 0),
    ("Where does the vemora live?", ["bright red", "in the blue forest", "carbon dioxide"], 1),
    ("Which gas do plants absorb?", ["bright red", "in the blue forest", "carbon dioxide"], 2),
    ("What jumps over the lazy dog?", ["the quick brown fox", "the blue forest", "red"], 0),
    ("Which answer is B)?", ["A)", "B)", "C)", "D)"], 1),
]
SPLITS = ("val", "test_id", "test_ood")
META = {"role": "expert", "weak_model": "weak", "ensemble": "boost", "round": "1", "seed": "0"}


def write_split_dir(root: Path) -> Path:
    """Hand-written split files in the docs/architecture.md row format (extra dataset fields kept)."""
    for k, split in enumerate(SPLITS):
        rows = []
        for i, (q, choices, gold) in enumerate(QUESTIONS[k:] + QUESTIONS[:k]):
            rows.append({"id": f"{split}-{i}", "question": q, "uid": f"{split}-uid-{i}",
                         "prompt": f"Question: {q}\nAnswer:",
                         "answer": choices[gold], "choices": choices, "gold": gold, "difficulty": float(i),
                         "hard": split == "test_ood", "source": "hand"})
        write_jsonl(root / f"{split}.jsonl", rows)
    return root


def make_cfg(root: Path, **evaluation) -> config_mod.Config:
    raw = copy.deepcopy(BASE_CONFIG)
    raw["results_dir"] = str(root / "results")
    raw["evaluation"] = {**raw["evaluation"], "batch_size": 4, "max_new_tokens": 6, "device": "cpu", **evaluation}
    return config_mod.from_dict(raw)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_model_dir):
    """One evaluate of the tiny model (an ensemble of one), shared by the read-only tests."""
    root = tmp_path_factory.mktemp("eval")
    data = write_split_dir(root / "data")
    cfg = make_cfg(root)
    out = root / "results" / "test" / "scores" / "expert.json"
    score = evaluate(cfg, "synthetic", data, tiny_model_dir, None, META, None, out)
    return cfg, data, out, score


def test_score_file_fields(scored):
    cfg, data, out, score = scored
    assert read_json(out) == score
    assert score["meta"] == {"role": "expert", "weak_model": "weak", "strong_model": "", "dataset": "synthetic",
                             "seed": 0, "round": 1, "ensemble": "boost"}
    assert set(score["splits"]) == set(SPLITS)
    for split in SPLITS:
        block = score["splits"][split]
        rows = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
        assert block["uids"] == [r["uid"] for r in rows]
        assert block["n"] == len(rows)
        for m in ("acc", "acc_norm", "exact_match"):
            values = block["per_example"][m]
            assert len(values) == len(rows) and set(values) <= {0, 1}
            assert block[m] == pytest.approx(sum(values) / len(values))


def test_tokens_processed_estimate_is_bounded_by_hand(scored, tiny_tokenizer):
    cfg, data, _, score = scored
    n_tok = lambda s: len(tiny_tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    mc = prompts = 0
    for split in SPLITS:
        for line in (data / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            mc += sum(n_tok(row["prompt"]) + n_tok(" " + c) for c in row["choices"])
            prompts += n_tok(row["prompt"])
    n_rows = len(SPLITS) * len(QUESTIONS)
    # generations add between 0 and max_new_tokens tokens each (decoded text may re-tokenise a little shorter)
    assert mc + prompts <= score["tokens_processed"] <= mc + prompts + n_rows * cfg.evaluation.max_new_tokens


def test_provenance_record_beside_the_score_file(scored, tiny_model_dir):
    cfg, data, out, score = scored
    rec = read_json(record_path(out))
    assert rec["step"] == "evaluate" and rec["config_keys"] == sorted(steps.keys(cfg, "evaluate"))
    assert rec["tokens_processed"] == score["tokens_processed"] and rec["wall_time_s"] > 0
    assert set(rec["inputs"]) == {str(data / f"{s}.jsonl") for s in SPLITS} | {str(tiny_model_dir)}


def test_numbers_equal_lm_eval_simple_evaluate(scored, tiny_model_dir):
    """The suite's numbers are lm-eval's: same tasks through lm-eval's own entry point and HFLM (batch size 1)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    cfg, data, _, score = scored
    tasks_dir = write_tasks(cfg, "synthetic", data)
    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    names = [task_name("synthetic", s, k) for s in SPLITS for k in ("mc", "gen")]
    res = simple_evaluate(model="hf", model_args={"pretrained": str(tiny_model_dir)}, tasks=names, task_manager=tm,
                          batch_size=1, device="cpu", log_samples=True, bootstrap_iters=0)
    for split in SPLITS:
        mc, gen = (res["results"][task_name("synthetic", split, k)] for k in ("mc", "gen"))
        block = score["splits"][split]
        assert (block["acc"], block["acc_norm"], block["exact_match"]) == (
            mc["acc,none"], mc["acc_norm,none"], gen["exact_match,none"])
        samples = sorted(res["samples"][task_name("synthetic", split, "mc")], key=lambda s: s["doc_id"])
        assert block["per_example"]["acc"] == [int(s["acc"]) for s in samples]


def test_task_yamls(scored):
    from lm_eval.tasks import TaskManager

    cfg, data, _, _ = scored
    tasks_dir = write_tasks(cfg, "synthetic", data)
    assert write_tasks(cfg, "synthetic", data) == tasks_dir  # content-addressed: reused
    assert tasks_dir.is_relative_to(cfg.run_dir.resolve())
    gen_text = (tasks_dir / f"{task_name('synthetic', 'test_id', 'gen')}.yaml").read_text()
    assert "process_results: !function ensemw2s.evaluate.score_generation" in gen_text
    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    assert sorted(tm.all_tasks) == sorted(task_name("synthetic", s, k) for s in SPLITS for k in ("mc", "gen"))
    loaded = tm.load([task_name("synthetic", "test_id", k) for k in ("mc", "gen")])["tasks"]
    mc = loaded[task_name("synthetic", "test_id", "mc")].config
    gen = loaded[task_name("synthetic", "test_id", "gen")].config
    assert (mc.output_type, mc.doc_to_text, mc.doc_to_choice, mc.doc_to_target, mc.target_delimiter) == (
        "multiple_choice", "prompt", "choices", "gold", " ")
    assert [m["metric"] for m in mc.metric_list] == ["acc", "acc_norm"]
    assert gen.output_type == "generate_until" and gen.process_results is score_generation
    assert gen.generation_kwargs == {"until": ["\n", "Question:"], "do_sample": False, "max_gen_toks": 6}
    assert mc.dataset_kwargs["cache_dir"].startswith(str(cfg.run_dir.resolve()))
    projected = [json.loads(x) for x in (tasks_dir / "test_id.jsonl").read_text().splitlines()]
    assert set(projected[0]) == {"uid", "prompt", "answer", "choices", "gold"}


def test_generation_task_scores_normalised_exact_match(tmp_path):
    """Through lm-eval itself: a scripted model's generations are scored after normalisation."""
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    class Scripted(LM):
        """Generates a fixed text per prompt; prefers the shortest continuation."""

        def __init__(self, texts):
            super().__init__()
            self.texts = texts

        def generate_until(self, requests):
            return [self.texts.get(r.args[0], "") for r in requests]

        def loglikelihood(self, requests):
            return [(-float(len(r.args[1])), False) for r in requests]

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    data = write_split_dir(tmp_path / "data")
    cfg = make_cfg(tmp_path, splits=["test_id"])
    rows = [json.loads(x) for x in (data / "test_id.jsonl").read_text().splitlines()]
    texts = {rows[0]["prompt"]: f" The {rows[0]['answer'].upper()}.", rows[1]["prompt"]: " bright red, maybe"}
    tasks_dir = write_tasks(cfg, "synthetic", data)
    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    res = simple_evaluate(model=Scripted(texts), tasks=[task_name("synthetic", "test_id", k) for k in ("mc", "gen")],
                          task_manager=tm, log_samples=True, bootstrap_iters=0)
    gen = sorted(res["samples"][task_name("synthetic", "test_id", "gen")], key=lambda s: s["doc_id"])
    assert [s["exact_match"] for s in gen] == [1, 0, 0, 0, 0]
    mc = sorted(res["samples"][task_name("synthetic", "test_id", "mc")], key=lambda s: s["doc_id"])
    shortest = [min(range(len(r["choices"])), key=lambda i: len(" " + r["choices"][i])) for r in rows]
    assert [s["acc"] for s in mc] == [float(g == r["gold"]) for g, r in zip(shortest, rows)]


def test_score_generation_hook():
    assert score_generation({"answer": "carbon dioxide"}, [" Carbon dioxide."]) == {"exact_match": 1}
    assert score_generation({"answer": "carbon dioxide"}, [" carbon"]) == {"exact_match": 0}


def test_limit_scores_the_first_rows(tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    cfg = make_cfg(tmp_path, limit=2, splits=["test_ood"])
    score = evaluate(cfg, "synthetic", data, tiny_model_dir, None, META, None, tmp_path / "s.json")
    assert list(score["splits"]) == ["test_ood"]
    assert score["splits"]["test_ood"]["uids"] == ["test_ood-uid-0", "test_ood-uid-1"]
    assert score["splits"]["test_ood"]["n"] == 2


def test_lora_adapter_scores_like_its_base(tmp_path, tiny_model_dir, scored):
    """A fresh LoRA adapter (B = 0) is the identity: it must give the base model's scores."""
    from peft import LoraConfig, get_peft_model

    from ensemw2s.models import load_causal_lm

    adapter = tmp_path / "adapter"
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    get_peft_model(load_causal_lm(tiny_model_dir), lora).save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    cfg, data, _, base = scored
    score = evaluate(cfg, "synthetic", data, adapter, None, META, None, tmp_path / "lora.json")
    assert score["splits"] == base["splits"]


def test_one_expert_ensemble_scores_like_the_expert(tmp_path, tiny_model_dir, scored):
    """A manifest of one expert (any weight) gives exactly the scores of that expert as a model."""
    from ensemw2s.models import load_tokenizer, tokenizer_fingerprint

    manifest = tmp_path / "r1.json"
    write_json(manifest, {"experts": [str(tiny_model_dir)], "weights": [0.7], "combine": "prob",
                          "tokenizer": tokenizer_fingerprint(load_tokenizer(tiny_model_dir))})
    cfg, data, _, expert = scored
    meta = {**META, "role": "ensemble"}
    score = evaluate(cfg, "synthetic", data, None, manifest, meta, None, tmp_path / "ens.json")
    assert score["meta"]["role"] == "ensemble"
    for split in SPLITS:
        assert score["splits"][split]["per_example"] == expert["splits"][split]["per_example"]
    assert score["tokens_processed"] == expert["tokens_processed"]  # one member model


def test_bad_inputs_fail_early_with_the_fix(tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    cfg = make_cfg(tmp_path)
    out = tmp_path / "s.json"
    with pytest.raises(UserError, match="applies to --manifest only"):
        evaluate(cfg, "synthetic", data, tiny_model_dir, None, META, tmp_path / "cache", out)
    with pytest.raises(UserError, match="directory not found"):
        evaluate(cfg, "synthetic", data, tmp_path / "nope", None, META, None, out)
    (data / "val.jsonl").unlink()
    with pytest.raises(UserError, match="run `ensemw2s prepare-data`"):
        evaluate(cfg, "synthetic", data, tiny_model_dir, None, META, None, out)
    write_jsonl(data / "val.jsonl", [{"uid": "u", "prompt": "Q", "choices": ["a"], "gold": 0}])
    with pytest.raises(DataFileError, match=r"val.jsonl line 1: missing field\(s\) answer"):
        evaluate(cfg, "synthetic", data, tiny_model_dir, None, META, None, out)
    assert not out.exists()


def test_picks_and_gold_agree_with_acc(scored):
    """format 2: per_example pick/gold, one per uid; gold is the split's gold index and acc == (pick == gold)."""
    _, data, _, score = scored
    for split in SPLITS:
        block = score["splits"][split]
        rows = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
        pick, gold = block["per_example"]["pick"], block["per_example"]["gold"]
        assert len(pick) == len(gold) == len(block["uids"]) == len(rows)
        assert gold == [r["gold"] for r in rows]
        assert all(0 <= p < len(r["choices"]) and isinstance(p, int) for p, r in zip(pick, rows))
        assert block["per_example"]["acc"] == [int(p == g) for p, g in zip(pick, gold)]


def test_mc_pick_by_hand():
    from ensemw2s.evaluate import mc_pick

    doc = {"uid": "u", "gold": 2}
    # filtered_resps: (loglikelihood, is_greedy) per choice; the largest wins, the first of equal ones
    assert mc_pick({"doc": doc, "target": 2, "acc": 1.0,
                    "filtered_resps": [(-3.0, False), (-2.5, False), (-0.5, True)]}) == (2, 2)
    assert mc_pick({"doc": doc, "target": 2, "acc": 0.0,
                    "filtered_resps": [(-1.0, False), (-1.0, False), (-4.0, False)]}) == (0, 2)
    # resps (each wrapped in a list) where filtered_resps is absent; gold from the doc without a target
    assert mc_pick({"doc": doc, "acc": 0.0, "resps": [[(-2.0, False)], [(-1.0, True)], [(-3.0, False)]]}) == (1, 2)
    with pytest.raises(AssertionError, match="disagrees"):
        mc_pick({"doc": doc, "target": 2, "acc": 1.0, "filtered_resps": [(-1.0, True), (-2.0, False), (-3.0, False)]})
