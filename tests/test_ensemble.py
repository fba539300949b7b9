"""ensemble.py: the identities of METHOD.md, batched and cached decoding == one token at a time, load_ensemble."""

import pytest
import torch

from ensemw2s.config import TinySpec
from ensemw2s.ensemble import (CONTINUATIONS_PER_CONTEXT, Ensemble, Generation, ScoringBatch, SharedContextBatch,
                               load_ensemble, scoring_batches)
from ensemw2s.errors import UserError
from ensemw2s.io import write_json
from ensemw2s.manifest import write_manifest
from ensemw2s.models import build_tiny_model, load_causal_lm, train_tokenizer
from tests.conftest import TINY, TOKENIZER_TEXTS, assert_loglikelihoods_close, livened, loglikelihood_tolerance

PROMPTS = [
    "Question: What color is the zorblat? Answer:",
    "Question: Which gas",
    "the quick brown fox jumps over the lazy dog 0123456789 Answer:",
    "A)",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir, tmp_path_factory):
    return load_causal_lm(livened(tiny_gpt2_dir, tmp_path_factory.mktemp("lively_gpt2"), seed=7))


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


def reference_decode(ens: Ensemble, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding one token at a time, recomputing the whole prefix (no cache, no padding)."""
    ids, out = list(prompt), []
    for _ in range(n):
        t = int(ens.next_token(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0])
        out.append(t)
        ids.append(t)
        if t in ens.eos_ids:
            break
    return out


def hf_greedy(model, tok, prompts: list[str], n: int, eos: int) -> list[list[int]]:
    """transformers' own greedy `generate` on a left-padded batch; each row cut after its first EOS."""
    ids = [tok.encode(p) for p in prompts]
    L = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (L - len(s)) + s for s in ids])
    mask = torch.tensor([[0] * (L - len(s)) + [1] * len(s) for s in ids])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             eos_token_id=eos, pad_token_id=tok.pad_token_id)
    rows = []
    for row in out[:, L:].tolist():
        rows.append(row[:row.index(eos) + 1] if eos in row else row)
    return rows


def own_loglikelihood(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """The model's own log p(cont | ctx): one unpadded forward pass, full logits."""
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1:-1]
    lp = torch.log_softmax(logits, -1)
    target = torch.tensor(cont)
    return float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


def scoring_requests(ens: Ensemble, tok) -> tuple[list[list[int]], list[list[int]]]:
    """Contexts of several lengths; continuations that are greedy (is_greedy True) and arbitrary ones."""
    contexts = [tok.encode(p) for p in PROMPTS]
    greedy = [reference_decode(ens, c, 4) for c in contexts]
    arbitrary = [tok.encode(" bright red"), tok.encode(" in the blue forest"), tok.encode(" carbon"),
                 tok.encode(" dioxide Question:")]
    return contexts + contexts, greedy + arbitrary


# ---------------------------------------------------------------------------------------------
# what an ensemble refuses


def test_unknown_combiner_suggests_a_name(experts, tok):
    with pytest.raises(UserError, match="Did you mean 'prob'"):
        Ensemble(experts[:1], [1.0], "porb", tok)


def test_experts_with_different_vocabularies_are_refused(experts, tok):
    other_tok = train_tokenizer([t.upper() for t in TOKENIZER_TEXTS], vocab_size=290)
    other = build_tiny_model(TinySpec(**TINY), other_tok)
    assert other.get_output_embeddings().weight.shape[0] != len(tok)
    with pytest.raises(UserError, match="vocabularies differ"):
        Ensemble([experts[0], other], [1.0, 1.0], "prob", tok)


# ---------------------------------------------------------------------------------------------
# one expert is the expert


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_one_expert_decodes_as_hf_generate(arch, experts, gpt2, tok):
    model = experts[0] if arch == "llama" else gpt2
    ens = Ensemble([model], [1.0], "prob", tok)
    ens.eos_ids = set()
    free = [g.token_ids for g in ens.generate(PROMPTS, 12)]
    # an EOS that ends some rows mid-batch, so finished rows leave the batch and the caches
    eos = free[0][4]
    ens.eos_ids = {eos}
    gens = ens.generate(PROMPTS, 12, batch_size=4)
    assert [g.token_ids for g in gens] == hf_greedy(model, tok, PROMPTS, 12, eos)
    assert gens[0].finish == "eos" and len(gens[0].token_ids) <= 5
    assert any(g.finish == "length" for g in gens)


def test_one_expert_scores_as_the_model_itself(experts, tok):
    ens = Ensemble(experts[:1], [2.5], "prob", tok)
    contexts, conts = scoring_requests(ens, tok)
    got = ens.loglikelihood(contexts, conts, batch_size=3)
    for (lp, greedy), ctx, cont in zip(got, contexts, conts):
        own_lp, own_greedy = own_loglikelihood(experts[0], ctx, cont)  # unbatched: other float32 rounding
        assert lp == pytest.approx(own_lp, abs=loglikelihood_tolerance(own_lp, len(cont), len(tok)))
        assert greedy == own_greedy
    assert any(g for _, g in got) and not all(g for _, g in got)


def test_a_lone_lora_adapter_expert_is_merged_and_scores_as_its_peft_model(expert_dirs, tmp_path, tok):
    from peft import LoraConfig, PeftModel, get_peft_model

    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero update
    get_peft_model(load_causal_lm(expert_dirs[0]), lora).save_pretrained(tmp_path / "adapter")
    ens = Ensemble.from_pretrained([tmp_path / "adapter"], [1.0], device="cpu")
    peft_model = load_causal_lm(tmp_path / "adapter")
    assert isinstance(peft_model, PeftModel) and not isinstance(ens.experts[0], PeftModel)  # merged: a plain model
    contexts, conts = scoring_requests(ens, tok)
    for (lp, greedy), ctx, cont in zip(ens.loglikelihood(contexts, conts, batch_size=3), contexts, conts):
        own_lp, own_greedy = own_loglikelihood(peft_model, ctx, cont)  # W x + B A x vs (W + B A) x: other rounding
        assert lp == pytest.approx(own_lp, abs=loglikelihood_tolerance(own_lp, len(cont), len(tok)))
        assert greedy == own_greedy
    eos = ens.generate(PROMPTS[:1], 5)[0].token_ids[3]
    ens.eos_ids = {eos}
    assert [g.token_ids for g in ens.generate(PROMPTS, 8)] == hf_greedy(peft_model, tok, PROMPTS, 8, eos)


@pytest.mark.parametrize("combine", ["prob", "logprob", "vote"])
def test_identical_experts_equal_one_of_them(combine, experts, tok):
    one = Ensemble(experts[:1], [1.0], combine, tok)
    same = Ensemble([experts[0]] * 3, [0.3, 1.0, 2.2], combine, tok)
    contexts, conts = scoring_requests(one, tok)
    for (a, ga), (b, gb), cont in zip(one.loglikelihood(contexts, conts), same.loglikelihood(contexts, conts), conts):
        assert a == pytest.approx(b, abs=loglikelihood_tolerance(b, len(cont), len(tok)))
        assert ga == gb
    assert [g.token_ids for g in one.generate(PROMPTS, 10)] == [g.token_ids for g in same.generate(PROMPTS, 10)]


# ---------------------------------------------------------------------------------------------
# batched and cached == one token at a time without a cache


@pytest.mark.parametrize("combine", ["prob", "logprob", "vote"])
def test_loglikelihood_is_the_stepwise_sum_of_ensemble_logprobs(combine, experts, tok):
    ens = Ensemble(experts, [2.0, 1.0, 0.5], combine, tok)
    contexts, conts = (x[1::2] for x in scoring_requests(ens, tok))
    got = ens.loglikelihood(contexts, conts, batch_size=3)
    for (lp, greedy), ctx, cont in zip(got, contexts, conts):
        total, all_greedy = 0.0, True
        for j, target in enumerate(cont):
            ids = torch.tensor([ctx + cont[:j]])
            mask = torch.ones_like(ids)
            total += float(ens.next_token_logprobs(ids, mask)[0, target])
            all_greedy &= int(ens.next_token(ids, mask)[0]) == target
        assert lp == pytest.approx(total, abs=loglikelihood_tolerance(total, len(cont), len(tok)))
        assert greedy == all_greedy
    assert any(g for _, g in got)


def test_loglikelihood_truncates_from_the_left_as_hflm(experts, tok):
    ens = Ensemble(experts, [1.0, 1.0, 1.0], "prob", tok)
    contexts, conts = scoring_requests(ens, tok)
    m = 12
    cut = [(ctx + cont)[-(m + 1):] for ctx, cont in zip(contexts, conts)]
    assert any(len(s) < len(ctx) + len(cont) for s, ctx, cont in zip(cut, contexts, conts))
    expected = ens.loglikelihood([s[:-len(c)] for s, c in zip(cut, conts)], conts)
    got = ens.loglikelihood(contexts, conts, max_length=m)
    assert_loglikelihoods_close([lp for lp, _ in got], [lp for lp, _ in expected], [len(c) for c in conts], len(tok))
    assert [g for _, g in got] == [g for _, g in expected]


def choice_requests(tok, answers=(" red", " in the blue forest", " carbon dioxide", " A")):
    """Multiple-choice shaped: every prompt (contexts of several lengths) with each of the answers."""
    contexts, choices = [tok.encode(p) for p in PROMPTS], [tok.encode(a) for a in answers]
    return [c for c in contexts for _ in choices], [a for _ in contexts for a in choices]


@pytest.mark.parametrize("batch_size, extra", [(4, ()), (1, (" A B",))])  # 1 and 5 choices: a context's split
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_choices_share_one_run_of_their_context(batch_size, extra, arch, experts, gpt2, tok):
    ens = Ensemble(experts if arch == "llama" else [gpt2, experts[1]], [2.0, 1.0, 0.5][:3 if arch == "llama" else 2],
                   "prob", tok)
    contexts, conts = choice_requests(tok, (" red", " in the blue forest", " carbon dioxide", " A", *extra))
    assert min(map(len, conts)) == 1 < max(map(len, conts))
    batches = list(scoring_batches(contexts, conts, batch_size, None, "cpu"))
    assert all(isinstance(b, SharedContextBatch) for b in batches)
    assert max(len(b.context_ids) for b in batches) <= batch_size
    assert max(len(b.index) for b in batches) <= CONTINUATIONS_PER_CONTEXT * batch_size
    assert sorted(i for b in batches for i in b.index) == list(range(len(contexts)))
    if batch_size >= len(PROMPTS):
        assert len(batches) == 1 and len(batches[0].context_ids) == len(PROMPTS)  # each context runs once
    got = ens.loglikelihood(contexts, conts, batch_size=batch_size)
    alone = [ens.loglikelihood([c], [k])[0] for c, k in zip(contexts, conts)]  # a lone request: one full forward
    assert_loglikelihoods_close([lp for lp, _ in got], [lp for lp, _ in alone], [len(c) for c in conts], len(tok))
    assert [g for _, g in got] == [g for _, g in alone]


def test_single_token_choices_need_only_the_context_run(experts, tok):
    ens = Ensemble(experts[:1], [1.0], "prob", tok)
    contexts = [tok.encode(p) for p in PROMPTS for _ in range(3)]
    conts = [[t] for _ in PROMPTS for t in (5, 17, 40)]  # one token each
    (batch,) = scoring_batches(contexts, conts, 64, None, "cpu")
    assert batch.targets.shape[1] == 1  # nothing to run after the context
    for (lp, greedy), ctx, cont in zip(ens.loglikelihood(contexts, conts), contexts, conts):
        own_lp, own_greedy = own_loglikelihood(experts[0], ctx, cont)
        assert lp == pytest.approx(own_lp, abs=loglikelihood_tolerance(own_lp, len(cont), len(tok)))
        assert greedy == own_greedy


def test_truncated_and_lone_requests_run_in_full(tok):
    contexts = [[5, 6, 7, 8], [5, 6, 7, 8], [9, 10], [9, 10], [11]]
    conts = [[1, 2], [3], [4], [4, 5, 6], [7]]
    kinds = {type(b): b.index for b in scoring_batches(contexts, conts, 8, 4, "cpu")}
    # [5..8] + [1, 2] is cut to 5 tokens (its context loses a token): neither choice of it shares; [11] is alone
    assert kinds == {SharedContextBatch: [2, 3], ScoringBatch: [0, 1, 4]}


@pytest.mark.parametrize("combine", ["prob", "logprob", "vote"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_decoding_equals_uncached_decoding(arch, combine, experts, gpt2, tok):
    models = experts if arch == "llama" else [gpt2, experts[1]]
    ens = Ensemble(models, [1.5, 1.0, 0.7][:len(models)], combine, tok)
    ens.eos_ids = set()
    reference = [reference_decode(ens, tok.encode(p), 10) for p in PROMPTS]
    ens.eos_ids = {reference[1][3]}  # ends some rows early: they leave the batch
    reference = [reference_decode(ens, tok.encode(p), 10) for p in PROMPTS]
    assert [g.token_ids for g in ens.generate(PROMPTS, 10, batch_size=3)] == reference


def test_decoding_stops_at_the_first_stop_string(experts, tok):
    ens = Ensemble(experts, [1.0, 2.0, 3.0], "prob", tok)
    ens.eos_ids = set()
    reference = [reference_decode(ens, tok.encode(p), 12) for p in PROMPTS]
    stop = next(s for s in (tok.decode([t]) for t in reference[0][3:]) if s.strip() and s.isprintable())
    for g, ref in zip(ens.generate(PROMPTS, 12, stop=[stop, "never"]), reference):
        first = next((k for k in range(len(ref)) if stop in tok.decode(ref[:k + 1])), None)
        if first is None:
            assert g == Generation(ref, tok.decode(ref), "length")
        else:
            assert g.token_ids == ref[:first + 1] and g.finish == "stop"
            assert g.text == tok.decode(ref[:first + 1]).split(stop)[0]
    assert ens.generate(PROMPTS[:1], 12, stop=[stop])[0].finish == "stop"


# ---------------------------------------------------------------------------------------------
# from a manifest


def test_load_ensemble_is_the_ensemble_the_manifest_names(tmp_path, expert_dirs, experts, make_config, tok):
    dirs = []
    for r, (alpha, model) in enumerate([(2.5, expert_dirs[0]), (0.5, expert_dirs[1])], start=1):
        dirs.append(tmp_path / f"r{r}")
        dirs[-1].mkdir()
        write_json(dirs[-1] / "boosting.json", {"round": r, "alpha": alpha, "stopped": False})
        (dirs[-1] / "model").symlink_to(model, target_is_directory=True)
    write_manifest(make_config(boosting={"rounds": 2, "combine": "vote"}), dirs, "boost", tmp_path / "alpha.json")
    ens = load_ensemble(tmp_path / "alpha.json", device="cpu")
    assert ens.combine == "vote" and torch.allclose(ens.weights, torch.tensor([2.5 / 3, 0.5 / 3]))
    contexts, conts = scoring_requests(ens, tok)
    direct = Ensemble(experts[:2], [2.5, 0.5], "vote", tok).loglikelihood(contexts, conts)
    got = ens.loglikelihood(contexts, conts)
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in direct], abs=1e-6)
    assert [g for _, g in got] == [g for _, g in direct]


def test_load_ensemble_refuses_a_changed_tokenizer_and_a_non_manifest(tmp_path, expert_dirs):
    write_json(tmp_path / "stale.json", {"experts": [str(expert_dirs[0])], "weights": [1.0], "combine": "prob",
                                         "tokenizer": "an older fingerprint"})
    with pytest.raises(UserError, match="tokenizer changed since the manifest was written"):
        load_ensemble(tmp_path / "stale.json", device="cpu")
    write_json(tmp_path / "bad.json", {"experts": []})
    with pytest.raises(UserError, match="not an ensemble manifest"):
        load_ensemble(tmp_path / "bad.json")
