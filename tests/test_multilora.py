"""multilora.py: T LoRA adapters on one base give what T separate PeftModels give, from one base copy."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.registry import get_model

from ensemw2s.ensemble import Ensemble, SeparateExperts, _left_pad, _positions, load_ensemble
from ensemw2s.io import write_json
from ensemw2s.models import load_causal_lm, tokenizer_fingerprint
from ensemw2s.multilora import LoRAStack, load_lora_stack, shared_base
from ensemw2s.token_cache import expert_token_logprobs
from tests.conftest import assert_loglikelihoods_close, output_tolerance
from tests.test_ensemble import PROMPTS, choice_requests, livened, scoring_requests
from tests.test_lmeval_model import loglikelihood_args, requests

# Stacked and separate adapters compute the same math in other orders (one batched matmul over T
# adapters vs T PeftModels), so they agree to float32 rounding, not bit for bit: every tolerance below is
# conftest's bound 2 * k * u * magnitude (k = the tiny forward's chain of accumulations, u = 2^-24),
# relative to the largest value compared. Seen on an AMD EPYC: 5.5e-5 on llama log-probabilities up to
# 14.6, whose bound is 2 * (864 + 300) * 2^-24 * 14.6 = 2.0e-3; an adapter applied wrongly moves them > 0.1.
# distinct adapters: other ranks, targets, scalings; peft maps each onto its modules
LLAMA_LORAS = [
    dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
    dict(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True),
    dict(r=3, lora_alpha=3, target_modules=["o_proj", "down_proj"], rank_pattern={"down_proj": 1}),
]
GPT2_LORAS = [
    dict(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True),
    dict(r=4, lora_alpha=2, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_adapter(base_dir: Path, out: Path, seed: int, **lora) -> Path:
    """A LoRA adapter of base_dir whose B matrices are large and random: its distributions differ visibly
    from the base's and from the other adapters' (peft's default B = 0 would make every adapter the base)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_causal_lm(base_dir), LoraConfig(task_type="CAUSAL_LM", **lora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5, generator=g)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_base(tiny_model_dirs, tmp_path_factory):
    return livened(tiny_model_dirs[0], tmp_path_factory.mktemp("ml_base") / "llama", seed=21)


@pytest.fixture(scope="module")
def adapter_dirs(llama_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("ml_adapters")
    return [make_adapter(llama_base, root / f"a{i}", seed=i, **cfg) for i, cfg in enumerate(LLAMA_LORAS)]


@pytest.fixture(scope="module")
def gpt2_adapter_dirs(tiny_gpt2_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ml_gpt2")
    base = livened(tiny_gpt2_dir, root / "base", seed=22)
    return [make_adapter(base, root / f"a{i}", seed=10 + i, **cfg) for i, cfg in enumerate(GPT2_LORAS)]


@pytest.fixture(scope="module")
def peft_models(adapter_dirs):
    """The reference: every adapter as its own PeftModel on its own copy of the base."""
    return [load_causal_lm(d) for d in adapter_dirs]


@pytest.fixture(scope="module")
def shared(adapter_dirs):
    return Ensemble.from_pretrained(adapter_dirs, [1.0, 2.0, 0.5], "prob", device="cpu")


def batch(tok):
    ids, mask = _left_pad([tok.encode(p) for p in PROMPTS], "cpu")  # (B, L), rows of several lengths
    return ids, mask, _positions(mask)


# ---------------------------------------------------------------------------------------------
# one forward over the base == T PeftModels


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_stacked_distributions_equal_separate_peft_models(arch, adapter_dirs, gpt2_adapter_dirs, tiny_tokenizer):
    dirs = adapter_dirs if arch == "llama" else gpt2_adapter_dirs
    stack = load_lora_stack(dirs)
    ids, mask, pos = batch(tiny_tokenizer)
    with torch.no_grad():
        logits, _ = stack.logits(ids, mask, pos, ids.shape[1])  # (T, B, L, V): every position
        got = F.log_softmax(logits, -1)
        expected = torch.stack([F.log_softmax(load_causal_lm(d)(input_ids=ids, attention_mask=mask,
                                                                position_ids=pos).logits, -1) for d in dirs])
    real = mask.bool()  # padded positions are masked, their outputs meaningless
    assert (got - expected).abs()[:, real].max() <= output_tolerance(expected[:, real], logits.shape[-1])
    assert (got[0] - got[1]).abs()[real].max() > 0.1  # the adapters really differ


def test_from_pretrained_shares_one_base(shared, adapter_dirs, llama_base):
    assert isinstance(shared.runner, LoRAStack)
    base_params = list(load_causal_lm(llama_base).parameters())
    held = {p.data_ptr() for m in shared.experts for p in m.parameters()}
    assert len(held) == len(base_params)  # one copy of the base, the adapters' stacks beside it
    assert not any("lora" in name for name, _ in shared.runner.base.named_modules())  # peft's layers are gone


@pytest.mark.parametrize("combine", ["prob", "logprob", "vote"])
def test_shared_base_ensemble_equals_the_ensemble_of_peft_models(combine, adapter_dirs, peft_models, tiny_tokenizer):
    weights = [1.0, 2.0, 0.5]
    shared = Ensemble.from_pretrained(adapter_dirs, weights, combine, device="cpu")
    separate = Ensemble(peft_models, weights, combine, tiny_tokenizer)
    assert isinstance(separate.runner, SeparateExperts)
    ids, mask, _ = batch(tiny_tokenizer)
    want = separate.next_token_logprobs(ids, mask)
    assert (shared.next_token_logprobs(ids, mask) - want).abs().max() <= output_tolerance(want, len(tiny_tokenizer))

    separate.eos_ids = shared.eos_ids = set()
    free = [g.token_ids for g in separate.generate(PROMPTS, 12)]
    separate.eos_ids = shared.eos_ids = {free[1][4]}  # some rows end early: they leave the stacked cache
    expected = separate.generate(PROMPTS, 12, batch_size=3)
    assert shared.generate(PROMPTS, 12, batch_size=3) == expected
    assert any(g.finish == "eos" for g in expected) and any(g.finish == "length" for g in expected)

    contexts, conts = scoring_requests(separate, tiny_tokenizer)
    got, want = shared.loglikelihood(contexts, conts, batch_size=3), separate.loglikelihood(contexts, conts, batch_size=3)
    assert_loglikelihoods_close([lp for lp, _ in got], [lp for lp, _ in want], [len(c) for c in conts],
                                len(tiny_tokenizer))
    assert [g for _, g in got] == [g for _, g in want]
    assert any(g for _, g in want) and not all(g for _, g in want)


def test_shared_base_choices_share_one_run_of_their_context(shared, peft_models, tiny_tokenizer):
    """Multiple-choice requests: the stacked cache of each context, copied to one row per choice, gives
    what each adapter's own PeftModel gives on each (context, choice) in full."""
    contexts, conts = choice_requests(tiny_tokenizer)
    got = shared.loglikelihood(contexts, conts, batch_size=6)  # the choices of a context split over batches
    separate = Ensemble(peft_models, [1.0, 2.0, 0.5], "prob", tiny_tokenizer)
    want = [separate.loglikelihood([c], [k])[0] for c, k in zip(contexts, conts)]  # one request: one full forward
    assert_loglikelihoods_close([lp for lp, _ in got], [lp for lp, _ in want], [len(c) for c in conts],
                                len(tiny_tokenizer))
    assert [g for _, g in got] == [g for _, g in want]


def test_a_bfloat16_base_keeps_float32_updates_as_peft_does(adapter_dirs, tiny_tokenizer):
    shared = Ensemble.from_pretrained(adapter_dirs, [1.0, 2.0, 0.5], "prob", device="cpu", dtype="bfloat16")
    separate = Ensemble([load_causal_lm(d, dtype="bfloat16") for d in adapter_dirs], [1.0, 2.0, 0.5], "prob",
                        tiny_tokenizer)
    assert next(shared.runner.base.parameters()).dtype == torch.bfloat16
    ids, mask, _ = batch(tiny_tokenizer)
    got, want = shared.next_token_logprobs(ids, mask), separate.next_token_logprobs(ids, mask)
    assert (got - want).abs().max() < 0.1  # bfloat16 keeps 8 bits: one unit in the last place of 4..8 is 0.03
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_adapter_views_are_the_peft_models(shared, peft_models, tiny_tokenizer):
    contexts, conts = scoring_requests(shared, tiny_tokenizer)
    for view, peft_model in zip(shared.experts, peft_models):
        got = expert_token_logprobs(view, contexts, conts, batch_size=3)
        want = expert_token_logprobs(peft_model, contexts, conts, batch_size=3)
        tol = output_tolerance(want.target_logprobs, len(tiny_tokenizer))
        assert (got.target_logprobs - want.target_logprobs).abs().max() <= tol
        assert torch.equal(got.argmax_ids, want.argmax_ids)
    ids = torch.tensor([tiny_tokenizer.encode(PROMPTS[0])])
    with torch.no_grad():  # called positionally, as HF code calls a model
        got, want = shared.experts[2](ids).logits, peft_models[2](ids).logits
        assert (got - want).abs().max() <= output_tolerance(want)  # logits


def test_manifest_and_lmeval_model_use_the_shared_base(tmp_path, adapter_dirs, peft_models, tiny_tokenizer,
                                                       monkeypatch):
    manifest = tmp_path / "r3.json"
    write_json(manifest, {"experts": [str(d) for d in adapter_dirs], "weights": [1.0, 2.0, 0.5], "combine": "prob",
                          "tokenizer": tokenizer_fingerprint(tiny_tokenizer)})
    assert isinstance(load_ensemble(manifest, device="cpu").runner, LoRAStack)
    assert get_model("ensemw2s")(manifest=str(manifest), device="cpu").max_length == 128  # the base's positions

    kw = dict(manifest=str(manifest), batch_size=3, device="cpu", max_length=32)
    direct, cached = get_model("ensemw2s")(**kw), get_model("ensemw2s")(**kw, cache=str(tmp_path / "cache"))
    assert isinstance(direct.ensemble.runner, LoRAStack)
    args = loglikelihood_args(direct)
    reqs = requests("loglikelihood", args)
    reference = Ensemble(peft_models, [1.0, 2.0, 0.5], "prob", tiny_tokenizer)
    monkeypatch.setattr(direct.ensemble, "loglikelihood", reference.loglikelihood)  # lm-eval's requests, PeftModels
    expected = direct.loglikelihood(reqs)
    monkeypatch.undo()
    n_tokens = [len(direct.tok_encode(cont)) for _, cont in args]
    want = [lp for lp, _ in expected]
    assert_loglikelihoods_close([lp for lp, _ in direct.loglikelihood(reqs)], want, n_tokens, len(tiny_tokenizer))
    assert_loglikelihoods_close([lp for lp, _ in cached.loglikelihood(reqs)], want, n_tokens, len(tiny_tokenizer))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3  # one token cache per adapter view


# ---------------------------------------------------------------------------------------------
# what cannot share a base loads as separate models


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    (dst / "adapter_config.json").write_text(json.dumps({**cfg, **changes}))
    return dst


def test_base_paths_are_compared_resolved(tmp_path, adapter_dirs, llama_base, monkeypatch):
    monkeypatch.chdir(llama_base.parent)
    relative = _edit_config(adapter_dirs[1], tmp_path / "rel", base_model_name_or_path=f"./{llama_base.name}")
    assert shared_base([adapter_dirs[0], relative]) == str(llama_base)


def test_adapters_that_cannot_share_a_base_load_separately(tmp_path, adapter_dirs, tiny_model_dirs, llama_base,
                                                           tiny_tokenizer):
    other_base = livened(tiny_model_dirs[1], tmp_path / "other_base", seed=5)
    cases = {
        "a full checkpoint among the experts": [adapter_dirs[0], llama_base],
        "two bases": [adapter_dirs[0], make_adapter(other_base, tmp_path / "other", seed=3, **LLAMA_LORAS[0])],
        "DoRA": [adapter_dirs[0], make_adapter(llama_base, tmp_path / "dora", seed=4, r=2,
                                               target_modules=["q_proj"], use_dora=True)],
        "modules_to_save": [adapter_dirs[0], make_adapter(llama_base, tmp_path / "mts", seed=5, r=2,
                                                          target_modules=["q_proj"], modules_to_save=["lm_head"])],
        "LoRA on the embedding": [adapter_dirs[0], make_adapter(llama_base, tmp_path / "emb", seed=6, r=2,
                                                                target_modules=["embed_tokens", "q_proj"])],
    }
    ids, mask, _ = batch(tiny_tokenizer)
    for why, dirs in cases.items():
        assert load_lora_stack(dirs) is None, why
        ens = Ensemble.from_pretrained(dirs, [1.0, 1.0], device="cpu")
        assert isinstance(ens.runner, SeparateExperts), why
        reference = Ensemble([load_causal_lm(d) for d in dirs], [1.0, 1.0], "prob", tiny_tokenizer)  # unmerged
        want = reference.next_token_logprobs(ids, mask)  # separate adapters are merged into their bases: rounding
        assert (ens.next_token_logprobs(ids, mask) - want).abs().max() <= output_tolerance(want, len(tiny_tokenizer)), why
