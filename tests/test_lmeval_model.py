"""lmeval_model.py: the `ensemw2s` lm-eval model; one expert must score and generate as lm-eval's HFLM."""
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.models.huggingface import HFLM

import ensemw2s.token_cache as token_cache
from ensemw2s.errors import UserError
from ensemw2s.evaluate import evaluate, task_name, write_tasks
from ensemw2s.io import write_json
from ensemw2s.lmeval_model import EnsembleLM
from ensemw2s.models import load_tokenizer, tokenizer_fingerprint
from tests.conftest import assert_loglikelihoods_close, livened
from tests.test_evaluate import SPLITS, make_cfg, write_split_dir
from tests.test_readme_commands import ENSEMW2S

MAX_LENGTH = 32  # small, so that truncation and several rolling windows happen
LONG = "Question: Which gas do plants absorb? the quick brown fox jumps over the lazy dog 0123456789 " * 2


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def expert_dirs(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_lively")
    return [livened(d, root / f"e{i}", seed=10 + i) for i, d in enumerate(tiny_model_dirs[:2])]


@pytest.fixture(scope="module")
def hflm(expert_dirs):
    return HFLM(pretrained=str(expert_dirs[0]), device="cpu", batch_size=3, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def ours(expert_dirs):
    return get_model("ensemw2s")(experts=[str(expert_dirs[0])], weights=[1.0], batch_size=3, device="cpu",
                                 max_length=MAX_LENGTH)


def requests(kind: str, args: list) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def loglikelihood_args(lm: EnsembleLM) -> list[tuple[str, str]]:
    prompt = "Question: What color is the zorblat? Answer:"
    greedy = lm.tokenizer.decode(lm.ensemble.generate([prompt], 3)[0].token_ids)
    return [
        (prompt, " bright red"),
        (prompt, greedy),  # the greedy continuation: is_greedy True
        ("Question: Where does the vemora live? Answer: ", "in the blue forest"),  # trailing space moves over
        ("", "the quick brown fox"),  # empty context: the prefix token conditions
        (LONG, " carbon dioxide"),  # longer than max_length: truncated from the left
        (LONG, " A"),
    ]


def test_import_registers_the_model_without_hiding_lm_evals_own():
    code = ("import ensemw2s; from lm_eval.api.registry import model_registry as r; "
            "assert 'ensemw2s' in r and 'hf' in r, sorted(r.keys())")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert get_model("ensemw2s") is EnsembleLM


def test_loglikelihood_matches_hflm(hflm, ours):
    args = loglikelihood_args(ours)
    expected = hflm.loglikelihood(requests("loglikelihood", args))
    got = ours.loglikelihood(requests("loglikelihood", args))
    n_tokens = [len(ours.tok_encode(cont)) for _, cont in args]  # HFLM: full logits, other float32 rounding
    assert_loglikelihoods_close([lp for lp, _ in got], [lp for lp, _ in expected], n_tokens, len(ours.tokenizer))
    assert [g for _, g in got] == [g for _, g in expected]
    assert expected[1][1] and not expected[0][1]


def test_multiple_choice_matches_hflm(hflm, ours):
    """A multiple-choice task's requests: each context with 4 choices (scored from one run of the context
    here, each pair in full by HFLM), one question truncated to max_length (each choice in full here too)."""
    questions = ["Question: What color is the zorblat? Answer:", "Question: Which gas do plants absorb? Answer:",
                 "Q: 2 + 2?", LONG]
    choices = [" bright red", " carbon dioxide", " A", " in the blue forest"]
    args = [(q, c) for q in questions for c in choices]
    expected = hflm.loglikelihood(requests("loglikelihood", args))
    got = ours.loglikelihood(requests("loglikelihood", args))
    n_tokens = [len(ours.tok_encode(cont)) for _, cont in args]
    assert_loglikelihoods_close([lp for lp, _ in got], [lp for lp, _ in expected], n_tokens, len(ours.tokenizer))
    assert [g for _, g in got] == [g for _, g in expected]


def test_loglikelihood_rolling_matches_hflm(hflm, ours):
    args = [("the quick brown fox",), (LONG,), (LONG + LONG,)]
    assert len(ours.tok_encode(LONG + LONG)) > 2 * MAX_LENGTH  # several windows
    expected = hflm.loglikelihood_rolling(requests("loglikelihood_rolling", args))
    # every token of the text is scored, each over the vocabulary: conftest's bound, per text
    n_tokens = [len(ours.tok_encode(text)) for (text,) in args]
    assert_loglikelihoods_close(ours.loglikelihood_rolling(requests("loglikelihood_rolling", args)), expected, n_tokens,
                                len(ours.tokenizer))


def test_generate_until_matches_hflm(hflm, ours):
    prompts = ["Question: What color is the zorblat? Answer:", "Question: Which gas", LONG, "A)"]
    free = hflm.generate_until(requests("generate_until", [(p, {"until": ["never"], "max_gen_toks": 8})
                                                           for p in prompts]))
    stop = next(c for c in free[0][2:] if c.isalnum())  # a stop string that cuts some generations short
    args = [(p, {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}) for p in prompts]
    args += [(p, {"until": [stop], "max_gen_toks": 6}) for p in prompts]
    expected = hflm.generate_until(requests("generate_until", args))
    assert ours.generate_until(requests("generate_until", args)) == expected
    assert len(expected[4]) < len(free[0])


def test_token_cache_gives_the_direct_scores_and_is_reused(tmp_path, expert_dirs, monkeypatch):
    experts = "|".join(map(str, expert_dirs))
    kw = dict(experts=experts, weights="2|1", batch_size=3, device="cpu", max_length=MAX_LENGTH)
    direct = get_model("ensemw2s")(**kw)
    cached = get_model("ensemw2s")(**kw, cache=str(tmp_path / "cache"))
    reqs = requests("loglikelihood", loglikelihood_args(direct))
    expected = direct.loglikelihood(reqs)
    got = cached.loglikelihood(reqs)
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-6)
    assert all(d or not c for (_, c), (_, d) in zip(got, expected))  # top-k cache: is_greedy errs to False only
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # one file per expert

    def recompute(*a, **k):
        raise AssertionError("the cache should have been read, not recomputed")

    monkeypatch.setattr(token_cache, "expert_token_logprobs", recompute)
    assert cached.loglikelihood(reqs) == got


def test_manifest_argument(tmp_path, expert_dirs, ours):
    manifest = tmp_path / "r1.json"
    write_json(manifest, {"experts": [str(expert_dirs[0])], "weights": [0.8], "combine": "vote",
                          "tokenizer": tokenizer_fingerprint(load_tokenizer(expert_dirs[0]))})
    lm = get_model("ensemw2s")(manifest=str(manifest), batch_size=3, device="cpu", max_length=MAX_LENGTH)
    assert lm.get_model_info() == {"experts": [str(expert_dirs[0])], "weights": [0.8], "combine": "vote"}
    args = requests("loglikelihood", loglikelihood_args(ours))
    assert lm.loglikelihood(args) == ours.loglikelihood(args)  # one expert: every combiner is the expert


@pytest.mark.parametrize("kwargs, match", [
    ({}, "either experts"),
    ({"experts": "a", "manifest": "m.json"}, "either experts"),
    ({"experts": "a||b"}, "empty item"),
    ({"experts": "a", "batch_size": "auto"}, "must be an integer"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(UserError, match=match):
        get_model("ensemw2s")(**kwargs)


def test_sampling_is_refused(ours):
    with pytest.raises(UserError, match="greedily"):
        ours.generate_until(requests("generate_until", [("A)", {"do_sample": True, "temperature": 0.7})]))


def test_entry_point_for_lm_eval_releases_that_discover_plugins():
    """pyproject.toml declares the model in lm-eval's plugin group (read by releases after 0.4.13)."""
    declared = [ep for ep in entry_points(group="lm_eval.models") if ep.name == "ensemw2s"]
    assert declared, "no lm_eval.models entry point 'ensemw2s': reinstall the package (pip install --no-deps -e .)"
    assert declared[0].load() is EnsembleLM


def test_lm_eval_command_writes_the_suites_scores(tmp_path, expert_dirs):
    """The README's `ensemw2s lm-eval ...`, run as a user would (the installed script, a new process, a local
    task directory via --include_path), writes the numbers `ensemw2s evaluate` gives for the same ensemble."""
    data = write_split_dir(tmp_path / "data")
    cfg = make_cfg(tmp_path)
    manifest = tmp_path / "r2.json"
    write_json(manifest, {"experts": [str(d) for d in expert_dirs], "weights": [0.7, 0.3], "combine": "prob",
                          "tokenizer": tokenizer_fingerprint(load_tokenizer(expert_dirs[0]))})
    meta = {"role": "ensemble", "weak_model": "weak", "ensemble": "boost", "round": "2", "seed": "0"}
    suite = evaluate(cfg, "synthetic", data, None, manifest, meta, None, tmp_path / "scores.json")
    names = [task_name("synthetic", s, k) for s in SPLITS for k in ("mc", "gen")]
    out = tmp_path / "lm_eval_out"
    res = subprocess.run(
        [str(ENSEMW2S), "lm-eval", "--model", "ensemw2s", "--model_args", f"manifest={manifest}",
         "--include_path", str(write_tasks(cfg, "synthetic", data)), "--tasks", ",".join(names),
         "--batch_size", str(cfg.evaluation.batch_size), "--device", "cpu", "--output_path", str(out), "--log_samples"],
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    (results_file,) = out.rglob("results_*.json")
    written = json.loads(results_file.read_text())["results"]
    for split in SPLITS:
        mc, gen = (written[task_name("synthetic", split, k)] for k in ("mc", "gen"))
        block = suite["splits"][split]
        # the same requests through the same model code and batch size: equal, not merely close
        assert (mc["acc,none"], mc["acc_norm,none"], gen["exact_match,none"]) == (
            block["acc"], block["acc_norm"], block["exact_match"])
        for kind, metrics in (("mc", ("acc", "acc_norm")), ("gen", ("exact_match",))):
            (samples_file,) = out.rglob(f"samples_{task_name('synthetic', split, kind)}_*.jsonl")
            logged = sorted(map(json.loads, samples_file.read_text().splitlines()), key=lambda r: r["doc_id"])
            assert [r["doc"]["uid"] for r in logged] == block["uids"]
            for m in metrics:
                assert [int(r[m]) for r in logged] == block["per_example"][m]
