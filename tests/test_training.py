"""Token-weighted fine-tuning: collator masks, the weighted loss, fit (resume, selection), probes."""
import shutil

import pytest
import torch
import torch.nn.functional as F

from ensemw2s import training
from ensemw2s.boosting import reweight_multipliers
from ensemw2s.config import TrainingSpec
from ensemw2s.errors import UserError
from ensemw2s.models import load_causal_lm, load_tokenizer
from tests.conftest import TINY_FORWARD_OPS, float32_tolerance, output_tolerance

FACTS = [
    ("What color is the zorblat", "bright red"),
    ("Where does the vemora live", "in the blue forest"),
    ("Which gas do plants absorb", "carbon dioxide"),
]


def qa_rows(n: int, start: int = 0) -> list[dict]:
    """n hand-made QA rows in the split format (uid, prompt, answer)."""
    rows = []
    for i in range(start, start + n):
        question, answer = FACTS[i % len(FACTS)]
        rows.append({"uid": f"u{i}", "prompt": f"Question: {question} {i}?\nAnswer:", "answer": answer})
    return rows


def spec(**changes) -> TrainingSpec:
    base = dict(epochs=1, learning_rate=3e-3, batch_size=4, grad_accum=1, max_length=64, weight_decay=0.0,
                warmup_ratio=0.0, precision="fp32", save_steps=200, select_on_val=False)
    return TrainingSpec(**{**base, **changes})


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_answer_tokens_are_space_answer_then_eos(tiny_tokenizer):
    row = qa_rows(1)[0]
    (ids,) = training.answer_token_ids(tiny_tokenizer, [row], max_length=64)
    expected = tiny_tokenizer(" " + row["answer"], add_special_tokens=False).input_ids + [tiny_tokenizer.eos_token_id]
    assert ids.tolist() == expected
    # an over-long row loses prompt tokens from the left, never answer tokens
    prompt, answer = training.encode_row(tiny_tokenizer, row, max_length=len(expected) + 2)
    assert answer == expected and len(prompt) == 2
    assert prompt == tiny_tokenizer(row["prompt"]).input_ids[-2:]


def test_collator_masks_prompt_and_padding(tiny_tokenizer):
    rows = qa_rows(2)
    rows[0]["token_weights"] = torch.arange(1.0, 1.0 + len(training.answer_token_ids(tiny_tokenizer, rows[:1], 64)[0]))
    batch = training.WeightedCollator(tiny_tokenizer, 64)(rows)
    B, T = batch["input_ids"].shape
    for b, row in enumerate(rows):
        prompt, answer = training.encode_row(tiny_tokenizer, row, 64)
        p, L = len(prompt), len(answer)
        pad = T - p - L
        assert batch["input_ids"][b, pad:].tolist() == prompt + answer  # left padding: answers end together
        assert batch["attention_mask"][b].tolist() == [0] * pad + [1] * (p + L)
        assert batch["position_ids"][b, pad:].tolist() == list(range(p + L))  # as if unpadded
        assert batch["labels"][b].tolist() == [training.IGNORE] * (pad + p) + answer
        w = batch["token_weights"][b]
        assert w[: pad + p].abs().sum() == 0
    assert batch["token_weights"][1][batch["labels"][1] != training.IGNORE].tolist() == [1.0] * L  # default: 1
    L0 = len(training.encode_row(tiny_tokenizer, rows[0], 64)[1])
    assert batch["token_weights"][0, T - L0 : T - L0 + 3].tolist() == [1.0, 2.0, 3.0]


def test_answer_span_covers_the_longest_answer_and_the_position_before_it():
    labels = torch.tensor([[-100, -100, -100, 5, 6], [-100, -100, 7, 8, 9]])
    assert training.answer_span(labels) == 4  # positions 1..4: position 1 predicts token 2, the first label
    assert training.answer_span(torch.full((2, 3), -100)) == 1
    # the last 2 positions predict token 3 and nothing
    assert training.predicted_by_last(torch.tensor([[1, 2, 3]]), 2, -100).tolist() == [[3, -100]]


def test_collator_pads_with_eos_when_tokenizer_has_none(tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="</s>")  # GPT-2 style
    tok.padding_side = "right"  # must not matter: the collator always pads on the left
    assert tok.pad_token_id is None
    batch = training.WeightedCollator(tok, 64)(qa_rows(2))
    lengths = batch["attention_mask"].sum(1)
    short = int(lengths.argmin())
    T = batch["input_ids"].shape[1]
    assert batch["attention_mask"][short, -1] == 1  # real tokens last
    assert (batch["input_ids"][short, : T - lengths[short]] == tok.eos_token_id).all()


def test_weights_that_do_not_match_the_answer_are_refused(tiny_tokenizer):
    rows = qa_rows(1)
    rows[0]["token_weights"] = torch.ones(1)
    with pytest.raises(UserError, match="answer tokens"):
        training.WeightedCollator(tiny_tokenizer, 64)(rows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_uniform_weights_reproduce_plain_sft_loss(arch, tiny_model_dir, tiny_gpt2_dir):
    path = tiny_model_dir if arch == "llama" else tiny_gpt2_dir
    model, tok = load_causal_lm(path), load_tokenizer(path)
    collate = training.WeightedCollator(tok, 64)
    rows = qa_rows(3)
    batch = collate(rows)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], labels=batch["labels"])  # all logits, transformers' loss
        kept = training.answer_logits(model, batch)
        ours = training.weighted_lm_loss(kept, batch["labels"], batch["token_weights"])
        # each row alone, without padding: left padding and the position ids change nothing
        alone = [(model(**{k: v for k, v in collate([r]).items() if k != "token_weights"}).loss,
                  int((collate([r])["labels"] != training.IGNORE).sum())) for r in rows]
    assert kept.shape[1] < batch["input_ids"].shape[1]  # logits only where an answer token is predicted
    # the same math in other float32 orders (fewer logits rows, other batch shapes): conftest's bound over
    # the forward, the vocabulary's log-sum-exp and the mean over the answer tokens, relative to the loss
    n_answer = int((batch["labels"] != training.IGNORE).sum())
    tol = float32_tolerance(float(out.loss), TINY_FORWARD_OPS + len(tok) + n_answer)
    torch.testing.assert_close(ours, out.loss, rtol=0.0, atol=tol)
    unpadded = sum(loss * n for loss, n in alone) / sum(n for _, n in alone)
    torch.testing.assert_close(ours, unpadded, rtol=0.0, atol=tol)


def test_weighted_loss_hand_worked():
    # one row, T = 3, V = 2, uniform logits: CE = log 2 at both answer positions
    logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[training.IGNORE, 0, 1]])
    weights = torch.tensor([[0.0, 3.0, 0.5]])
    # (3 log 2 + 0.5 log 2) / 2 answer tokens
    assert training.weighted_lm_loss(logits, labels, weights).item() == pytest.approx(1.75 * torch.log(torch.tensor(2.0)).item())
    # the divisor is the number of answer tokens of the accumulated batch when Trainer passes it
    assert training.weighted_lm_loss(logits, labels, weights, num_items=7).item() == pytest.approx(3.5 * 0.6931471805599453 / 7)
    # logits of the last k >= answer_span positions only (left padding: the answers end the rows) give the same
    labels, weights = F.pad(labels, (1, 0), value=training.IGNORE), F.pad(weights, (1, 0))  # T = 4
    assert training.answer_span(labels) == 3
    full = torch.cat([torch.tensor([[[5.0, -5.0]]]), logits], dim=1)  # position 0 predicts padding: no loss
    kept = training.weighted_lm_loss(logits, labels, weights)  # the last 3 positions
    assert kept.item() == pytest.approx(1.75 * 0.6931471805599453)
    assert training.weighted_lm_loss(full, labels, weights).item() == pytest.approx(kept.item())


def test_zero_weight_tokens_get_zero_gradient(tiny_model_dir, tiny_tokenizer):
    model = load_causal_lm(tiny_model_dir)
    batch = training.WeightedCollator(tiny_tokenizer, 64)(qa_rows(2))
    answer = batch["labels"] != training.IGNORE
    weights = batch["token_weights"].clone()
    first = answer[0].nonzero()[0].item()
    weights[0, first] = 0.0  # the first answer token of row 0 is not drawn
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach().requires_grad_()
    training.weighted_lm_loss(logits, batch["labels"], weights).backward()
    grad_norm = logits.grad.norm(dim=-1)  # (B, T): position t predicts token t+1
    assert grad_norm[0, first - 1] == 0
    assert (grad_norm[0, first:-1][answer[0, first + 1 :]] > 0).all()  # the other answer tokens do learn
    # all answer weights zero: no parameter moves
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    training.weighted_lm_loss(out.logits, batch["labels"], torch.zeros_like(weights)).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())


def test_fit_with_uniform_reweight_equals_plain_sft(tiny_model_dir, tiny_tokenizer, tmp_path):
    rows = qa_rows(8)
    plain = training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, spec(), 0, tmp_path / "a")
    ids = training.answer_token_ids(tiny_tokenizer, rows, 64)
    n = sum(len(x) for x in ids)
    uniform = reweight_multipliers(torch.full((n,), 1 / n, dtype=torch.float64)).split([len(x) for x in ids])
    weighted = training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, spec(), 0, tmp_path / "b", token_weights=uniform)
    a, b = params(plain), params(weighted)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], params(load_causal_lm(tiny_model_dir))["model.embed_tokens.weight"])
    stats = training.read_fit_stats(tmp_path / "a")
    assert stats["global_step"] == 2 and stats["tokens_processed"] == training.count_tokens(tiny_tokenizer, rows, 64)


def test_gradient_accumulation_normalises_over_the_accumulated_batch(tiny_model_dir, tiny_tokenizer, tmp_path):
    # micro-batches with unequal answer-token counts: 2 x 2 accumulated must equal one batch of 4
    rows = qa_rows(8)
    rows[0]["answer"] = "a much longer answer than the others here"
    weights = [torch.rand(len(x)) for x in training.answer_token_ids(tiny_tokenizer, rows, 64)]
    one = training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, spec(batch_size=4), 0, tmp_path / "a",
                       token_weights=weights)
    accumulated = training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, spec(batch_size=2, grad_accum=2), 0,
                               tmp_path / "b", token_weights=weights)
    a, b = params(one), params(accumulated)
    for k in a:  # per-micro-batch normalisation would differ by ~1e-2 here
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=0)


def test_resume_after_a_killed_job_matches_an_uninterrupted_run(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    rows, s = qa_rows(8), spec(epochs=2, save_steps=2)  # 4 steps, checkpoints at 2 and 4
    straight = params(training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, s, 0, tmp_path / "straight"))

    calls = {"n": 0}
    real_loss = training.weighted_lm_loss

    def dies_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated SLURM kill")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "weighted_lm_loss", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, s, 0, tmp_path / "killed")
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-2"]
    # a later checkpoint the kill cut short while it was written (Trainer writes trainer_state.json last)
    partial = tmp_path / "killed" / "checkpoint-3"
    partial.mkdir()
    shutil.copy(tmp_path / "killed" / "checkpoint-2" / "model.safetensors", partial)

    monkeypatch.setattr(training, "weighted_lm_loss", real_loss)
    resumed = training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, s, 0, tmp_path / "killed")
    assert training.read_fit_stats(tmp_path / "killed")["resumed_from"].endswith("checkpoint-2")
    assert not partial.exists()
    resumed = params(resumed)
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k])


def test_stale_checkpoints_of_other_inputs_are_refused(tiny_model_dir, tiny_tokenizer, tmp_path):
    training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, qa_rows(4), spec(), 0, tmp_path)
    with pytest.raises(UserError, match="different training run"):
        training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, qa_rows(4), spec(), 1, tmp_path)


def test_select_on_val_keeps_the_best_epoch(tiny_model_dir, tiny_tokenizer, tmp_path):
    # val answers that training never shows: val loss is lowest early, then rises as the model fits its rows
    rows = qa_rows(8)
    val = [dict(r, answer="0123456789 quick lazy") for r in qa_rows(6, start=100)]
    s = spec(epochs=4, batch_size=8, learning_rate=0.2, select_on_val=True, save_steps=1)  # val fits one batch
    model = training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, s, 0, tmp_path, val_rows=val)
    stats = training.read_fit_stats(tmp_path)
    evals = stats["val_losses"]
    assert len(evals) == 4 and stats["best_val_loss"] == min(evals)
    assert evals.index(min(evals)) < 3  # an earlier epoch than the last is the best one here
    # the returned model is the best epoch's: its token-mean val loss is the best one
    losses = torch.cat(training.answer_token_losses(model, tiny_tokenizer, val, 8, 64))
    tol = float32_tolerance(min(evals), TINY_FORWARD_OPS + len(tiny_tokenizer) + len(losses))  # conftest's bound
    assert losses.mean().item() == pytest.approx(min(evals), abs=tol)


def test_non_finite_loss_names_the_step(tiny_model_dir, tiny_tokenizer, tmp_path):
    rows = qa_rows(4)
    weights = [torch.full((len(x),), float("nan")) for x in training.answer_token_ids(tiny_tokenizer, rows, 64)]
    with pytest.raises(UserError, match="at step 1"):
        training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, rows, spec(), 0, tmp_path, token_weights=weights)


def test_non_finite_val_loss_names_the_epoch(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    real_loss = training.weighted_lm_loss

    def nan_in_eval(*args, **kwargs):  # evaluation runs without gradients; training stays finite
        loss = real_loss(*args, **kwargs)
        return loss if torch.is_grad_enabled() else loss * float("nan")

    monkeypatch.setattr(training, "weighted_lm_loss", nan_in_eval)
    with pytest.raises(UserError, match="val loss is nan after epoch 1"):
        training.fit(load_causal_lm(tiny_model_dir), tiny_tokenizer, qa_rows(4), spec(select_on_val=True), 0, tmp_path,
                     val_rows=qa_rows(2, start=10))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_misses_are_teacher_forced_greedy_errors(arch, tiny_model_dir, tiny_gpt2_dir, tiny_tokenizer):
    # batched with padding (batch_size 2, unequal lengths) == one unpadded row at a time
    model, rows = load_causal_lm(tiny_model_dir if arch == "llama" else tiny_gpt2_dir), qa_rows(3)
    misses = training.answer_token_misses(model, tiny_tokenizer, rows, batch_size=2, max_length=64)
    losses = training.answer_token_losses(model, tiny_tokenizer, rows, batch_size=2, max_length=64)
    for row, miss, loss in zip(rows, misses, losses):
        prompt, answer = training.encode_row(tiny_tokenizer, row, 64)
        with torch.no_grad():  # one unpadded row: position t predicts token t+1
            logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        gold = torch.tensor(answer)
        assert miss.dtype == torch.bool and torch.equal(miss, logits.argmax(-1) != gold)
        want = torch.nn.functional.cross_entropy(logits, gold, reduction="none")  # unpadded: other rounding
        torch.testing.assert_close(loss, want, rtol=0.0, atol=output_tolerance(want, logits.shape[-1]))
