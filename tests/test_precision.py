"""bf16 on CPU: training (`training.*.precision: bf16`, Trainer's autocast) and scoring (`models[].dtype:
bfloat16`, the dtype a model is loaded and scored in) run, and stay within bf16 rounding of float32.

The bound (first order, as conftest's float32 tolerances, which assume no cancellation): along the
tiny forward every stage's output and every matmul's operands are rounded to bfloat16 (unit roundoff
u = 2^-8; accumulations stay float32), BF16_ROUNDINGS roundings deep, so a logit is within
BF16_ROUNDINGS * u * max|logit| of float32's, and a cross-entropy (log-softmax: the gold logit minus a
log-sum-exp) within twice that; a sum of n such terms within n times that.
"""
import json

import pytest
import torch

from ensemw2s import training
from ensemw2s.config import TrainingSpec
from ensemw2s.errors import UserError
from ensemw2s.evaluate import scoring_dtype
from ensemw2s.models import load_causal_lm, load_tokenizer
from tests.conftest import TINY

U_BF16 = 2.0**-8
# per layer of the fixtures' tiny Llama: norm, q/k/v, rotary, scores, softmax, values, o, residual, norm,
# gate/up, activation * up, down, residual = 13 stage outputs, 6 of them matmuls with 2 rounded operands;
# 2 layers, then the final norm and the lm head (one matmul)
BF16_ROUNDINGS = TINY["num_layers"] * (13 + 2 * 6) + 1 + 3


def ce_tolerance(max_logit: float) -> float:
    """Bound on |CE_bf16 - CE_fp32| of one token (module docstring)."""
    return 2 * BF16_ROUNDINGS * U_BF16 * max_logit


def _rows(n: int) -> list[dict]:
    return [{"uid": f"u{i}", "prompt": f"Question: what is thing {i}?\nAnswer:", "answer": "bright red" if i % 2 else "carbon"}
            for i in range(n)]


def _spec(precision: str) -> TrainingSpec:
    return TrainingSpec(epochs=1, learning_rate=3e-3, batch_size=4, grad_accum=1, max_length=64, weight_decay=0.0,
                        warmup_ratio=0.0, precision=precision, save_steps=4, select_on_val=False)


def _losses(out) -> list[float]:
    (state,) = out.glob("checkpoint-*/trainer_state.json")
    return [log["loss"] for log in json.loads(state.read_text())["log_history"] if "loss" in log]


def test_bf16_training_runs_on_cpu_within_bf16_rounding_of_fp32(tmp_path, tiny_model_dir, one_thread):
    tokenizer, rows = load_tokenizer(tiny_model_dir), _rows(16)
    base = load_causal_lm(tiny_model_dir)
    batch = training.WeightedCollator(tokenizer, 64)(rows[:4])
    with torch.no_grad():
        max_logit = float(training.answer_logits(base, batch).abs().max())
    fitted = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        fitted[precision] = training.fit(load_causal_lm(tiny_model_dir), tokenizer, rows, _spec(precision), seed=0,
                                         out_dir=tmp_path / precision)
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert len(fp32) == len(bf16) == 4 and all(torch.isfinite(torch.tensor(bf16)))
    # step 1 scores the same weights: the loss (a mean of per-token CEs) within one token's bound
    assert bf16[0] != fp32[0], "bf16 did not reach training: the losses are float32's bit for bit"
    assert abs(bf16[0] - fp32[0]) <= ce_tolerance(max_logit), (bf16[0], fp32[0], ce_tolerance(max_logit))
    # bf16 trained (weights stay float32: autocast), as fp32 did
    before = base.state_dict()["lm_head.weight"]
    for model in fitted.values():
        assert model.dtype == torch.float32 and not torch.equal(model.state_dict()["lm_head.weight"], before)


def test_fp16_training_on_cpu_is_a_user_error(tmp_path, tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("fp16 is supported on a CUDA GPU")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU; use precision fp32 or bf16"):
        training.fit(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir), _rows(4), _spec("fp16"), seed=0,
                     out_dir=tmp_path / "fp16")


def test_bf16_scoring_is_within_bf16_rounding_of_fp32(tiny_model_dir, one_thread):
    from ensemw2s.ensemble import Ensemble

    tokenizer = load_tokenizer(tiny_model_dir)
    contexts = [tokenizer(r["prompt"]).input_ids for r in _rows(6)]
    conts = [tokenizer(" " + r["answer"], add_special_tokens=False).input_ids for r in _rows(6)]
    fp32 = Ensemble.from_pretrained([tiny_model_dir], [1.0], device="cpu", dtype="float32")
    bf16 = Ensemble.from_pretrained([tiny_model_dir], [1.0], device="cpu", dtype="bfloat16")
    assert next(bf16.experts[0].parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        max_logit = max(float(fp32.experts[0](torch.tensor([c + x])).logits.abs().max()) for c, x in zip(contexts, conts))
    want = fp32.loglikelihood(contexts, conts, batch_size=3)
    got = bf16.loglikelihood(contexts, conts, batch_size=3)
    assert [g for g, _ in got] != [w for w, _ in want], "bf16 did not reach scoring"
    for (g, _), (w, _), cont in zip(got, want, conts):
        assert abs(g - w) <= len(cont) * ce_tolerance(max_logit), (g, w, len(cont) * ce_tolerance(max_logit))


def test_a_model_is_scored_in_its_entrys_dtype(make_config):
    models = {"weak": {"source": "tiny", "tiny": {}}, "strong": {"source": "tiny", "tiny": {}, "dtype": "bfloat16"}}
    cfg = make_config(models=models)
    for role, dtype in [("student", "bfloat16"), ("ceiling", "bfloat16"), ("strong_base", "bfloat16"),
                        ("expert", "float32"), ("ensemble", "float32")]:
        assert scoring_dtype(cfg, {"role": role, "weak_model": "weak", "strong_model": "strong"}) == dtype
    assert scoring_dtype(cfg, {"role": "student", "weak_model": "", "strong_model": ""}) == "float32"
