"""lmeval_model.py: the `ensemw2s` lm-eval model; one expert must score and generate as lm-eval's HFLM."""
import subprocess
import sys

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.models.huggingface import HFLM

import ensemw2s.ensemble as ensemble_mod
from ensemw2s.errors import UserError
from ensemw2s.io import write_json
from ensemw2s.lmeval_model import EnsembleLM
from ensemw2s.models import load_tokenizer, tokenizer_fingerprint
from tests.test_ensemble import livened

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
    for (lp, greedy), (hf_lp, hf_greedy) in zip(got, expected):
        assert lp == pytest.approx(hf_lp, abs=1e-4)
        assert greedy == hf_greedy
    assert expected[1][1] and not expected[0][1]


def test_loglikelihood_rolling_matches_hflm(hflm, ours):
    args = [("the quick brown fox",), (LONG,), (LONG + LONG,)]
    assert len(ours.tok_encode(LONG + LONG)) > 2 * MAX_LENGTH  # several windows
    expected = hflm.loglikelihood_rolling(requests("loglikelihood_rolling", args))
    assert ours.loglikelihood_rolling(requests("loglikelihood_rolling", args)) == pytest.approx(expected, abs=1e-4)


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

    monkeypatch.setattr(ensemble_mod, "expert_token_logprobs", recompute)
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
