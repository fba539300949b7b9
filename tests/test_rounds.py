"""One boosting round end to end on a tiny model: files, weights moving to misses, stop rule, guards."""
import json
import math
from pathlib import Path

import pytest
import torch

from ensemw2s import boosting, rounds, steps, training
from ensemw2s.errors import UserError
from ensemw2s.io import write_jsonl
from ensemw2s.manifest import write_manifest
from ensemw2s.models import load_causal_lm, load_tokenizer
from ensemw2s.training import answer_token_ids, answer_token_misses
from tests.conftest import ALL_VARIANTS
from tests.test_training import qa_rows

TRAINING = {"epochs": 2, "batch_size": 6, "learning_rate": 0.01, "max_length": 64}


def write_split_dir(root: Path, n_train: int = 12, n_val: int = 6, n_pool: int = 6) -> Path:
    """A split directory as prepare-data writes it (the fields this module reads)."""
    write_jsonl(root / "weak_train.jsonl", qa_rows(n_train))
    write_jsonl(root / "val.jsonl", qa_rows(n_val, start=100))
    pool = qa_rows(n_pool, start=200)
    write_jsonl(root / "student_pool.jsonl", [{"uid": r["uid"], "prompt": r["prompt"]} for r in pool])
    write_jsonl(root / "gold" / "student_pool.jsonl", [{"uid": r["uid"], "answer": r["answer"], "gold": 0} for r in pool])
    return root


@pytest.fixture
def cfg(make_config):
    def make(boosting=None, lora=None, **training):
        models = {"weak": {"source": "tiny", "tiny": {}, "lora": lora}, "strong": {"source": "tiny", "tiny": {}}}
        return make_config(models=models, boosting=boosting or {"rounds": 2, "variants": ALL_VARIANTS},
                           training={"expert": {**TRAINING, **training}, "student": TRAINING})
    return make


def run(cfg, variant, round, data, base, prev, out):
    rounds.train_expert(cfg, weak="weak", dataset="synthetic", seed=0, variant=variant, round=round,
                        data=data, base=base, prev=prev, out=out)
    return json.loads((out / "boosting.json").read_text()), torch.load(out / "weights.pt", weights_only=True)


def test_two_boost_rounds_move_weight_to_the_missed_tokens(cfg, tiny_model_dir, tmp_path, monkeypatch):
    c, data = cfg(), write_split_dir(tmp_path / "data")
    loaded, fits = [], []  # spies: which checkpoint each round starts from; each fit's (seed, token_weights)
    real_load, real_fit = rounds.load_causal_lm, rounds.fit
    monkeypatch.setattr(rounds, "load_causal_lm", lambda ref, **kw: loaded.append(Path(ref)) or real_load(ref, **kw))
    monkeypatch.setattr(rounds, "fit", lambda *a, **kw: fits.append((a[4], kw["token_weights"])) or real_fit(*a, **kw))
    r1, r2 = tmp_path / "boost" / "r1", tmp_path / "boost" / "r2"
    rec1, w1 = run(c, "boost", 1, data, tiny_model_dir, None, r1)

    tok = load_tokenizer(tiny_model_dir)
    rows = [json.loads(line) for line in (data / "weak_train.jsonl").read_text().splitlines()]
    ids = answer_token_ids(tok, rows, 64)
    n, K = sum(len(x) for x in ids), len(tok)
    assert w1["uid"] == [r["uid"] for r in rows]
    assert w1["offsets"].tolist() == [0] + torch.tensor([len(x) for x in ids]).cumsum(0).tolist()
    assert w1["weights"].dtype == torch.float64 and w1["weights"].shape == (n,)
    assert w1["weights"].sum().item() == pytest.approx(1.0, abs=1e-12)

    # round 1 = plain SFT from uniform D_1: eps is the share of missed answer tokens
    miss1 = torch.cat(answer_token_misses(load_causal_lm(r1 / "model"), tok, rows, 6, 64))
    assert rec1["round"] == 1 and rec1["variant"] == "boost" and not rec1["stopped"] and rec1["stop_reason"] is None
    assert rec1["perfect_fit"] is False and rec1["n_missed"] > 0
    assert rec1["vocab_size"] == K and rec1["n_tokens"] == n and rec1["n_missed"] == int(miss1.sum())
    assert rec1["eps"] == pytest.approx(int(miss1.sum()) / n)
    assert 0 < rec1["eps"] < 1 - 1 / K
    assert rec1["prior"] == "vocab" and rec1["prior_term"] == math.log(K - 1) and rec1["e_ref"] is None
    assert rec1["alpha"] == math.log((1 - rec1["eps"]) / rec1["eps"]) + math.log(K - 1)  # SAMME, bit for bit
    assert rec1["tokens_processed"] > 0 and rec1["wall_time_s"] > 0
    assert set(rec1) >= {"weight_entropy", "weight_top10_share"}
    # the mass on h_1's missed tokens grows from eps_1 to 1 - 1/K (SAMME)
    assert w1["weights"][miss1].sum().item() > rec1["eps"]
    assert w1["weights"][miss1].sum().item() == pytest.approx(1 - 1 / K, abs=1e-12)
    assert rec1["missed_mass_after_update"] == pytest.approx(1 - 1 / K, abs=1e-12)
    assert rec1["alpha_update"] == rec1["alpha"]  # learning_rate 1: the plain update
    assert rec1["missed_token_share"] == rec1["n_missed"] / n
    assert rec1["effective_sample_size"] == pytest.approx(float(1 / (w1["weights"] ** 2).sum()), rel=1e-12)
    assert not (tmp_path / "boost" / "r1.ckpt").exists()  # trainer checkpoints removed on success
    # h_1's own misses, for the diagnostics: weak_train (the same as eps's) and val
    own = json.loads((r1 / "answer_misses.json").read_text())
    assert own["weak_train"]["uids"] == [r["uid"] for r in rows]
    assert [m for row in own["weak_train"]["missed"] for m in row] == miss1.int().tolist()
    val = [json.loads(line) for line in (data / "val.jsonl").read_text().splitlines()]
    val_miss = answer_token_misses(load_causal_lm(r1 / "model"), tok, val, 6, 64)
    assert own["val"] == {"uids": [r["uid"] for r in val], "missed": [m.int().tolist() for m in val_miss]}

    rec2, w2 = run(c, "boost", 2, data, tiny_model_dir, r1, r2)
    assert loaded == [tiny_model_dir.resolve()] * 2  # h_2 starts from the weak base, not from h_1
    D2 = w1["weights"].double()
    miss2 = torch.cat(answer_token_misses(load_causal_lm(r2 / "model"), tok, rows, 6, 64))
    assert rec2["round"] == 2 and rec2["eps"] == pytest.approx(float((D2 * miss2).sum()), rel=1e-5)
    expected = boosting.update_weights(D2 / D2.sum(), miss2, rec2["alpha"], round=2)
    torch.testing.assert_close(w2["weights"], expected)
    record = json.loads((tmp_path / "boost" / "r2.provenance.json").read_text())
    keys = steps.keys(c, "train_expert", weak="weak", variant="boost")
    assert record["step"] == "train_expert" and record["config_keys"] == sorted(keys)
    assert record["config_hash"] == steps.identity(c, "train_expert", weak="weak", variant="boost")
    assert set(record["inputs"]) == {str(data / "weak_train.jsonl"), str(data / "val.jsonl"),
                                     str(tiny_model_dir.resolve()), str(r1 / "boosting.json"), str(r1 / "weights.pt")}
    assert record["tokens_processed"] == rec2["tokens_processed"] and record["extra"]["alpha"] == rec2["alpha"]
    fit_stats = json.loads((r2 / "fit.json").read_text())  # kept when the checkpoints go
    assert fit_stats["global_step"] > 0 and fit_stats["resumed_from"] is None

    # the sequence variant trains its h_1 with the same inputs as boost's (plain SFT, same round seed) ...
    seq, _ = run(c, "sequence", 1, data, tiny_model_dir, None, tmp_path / "sequence" / "r1")
    assert fits[0] == fits[2] == (rounds.round_seed(0, 1), None)
    assert fits[1][0] == rounds.round_seed(0, 2) and sum(w.sum() for w in fits[1][1]) == n  # n tokens drawn
    # ... but an answer with one missed token is missed as a whole
    seq_miss = boosting.sequence_misses(miss1, w1["offsets"])
    assert seq["n_missed"] == int(seq_miss.sum()) >= rec1["n_missed"]
    assert seq["eps"] == pytest.approx(min(seq_miss.double().mean().item(), 1 - 1e-10))
    assert seq["stopped"] == (seq["alpha"] <= 0)


def test_chance_level_expert_stops_boosting(cfg, tiny_model_dir, tmp_path, monkeypatch):
    # K = 2: chance is eps = 0.5; a barely trained random model misses most tokens -> alpha < 0
    c = cfg(boosting={"rounds": 2, "prior": 2}, learning_rate=1e-7, epochs=1)
    data = write_split_dir(tmp_path / "data")
    rec, w = run(c, "boost", 1, data, tiny_model_dir, None, tmp_path / "r1")
    assert rec["stopped"] and rec["alpha"] <= 0 and rec["eps"] >= 0.5
    assert rec["stop_reason"].startswith("round 1: alpha")
    assert not (tmp_path / "r1" / "model").exists()  # no expert is added
    assert torch.allclose(w["weights"], torch.full_like(w["weights"], 1 / len(w["weights"])))  # D unchanged

    monkeypatch.setattr(rounds, "fit", lambda *a, **k: pytest.fail("a round after a stop must not train"))
    rec2, w2 = run(c, "boost", 2, data, tiny_model_dir, tmp_path / "r1", tmp_path / "r2")
    assert rec2["stopped"] and rec2["stop_reason"] == rec["stop_reason"] and rec2["alpha"] is None
    assert torch.equal(w2["weights"], w["weights"]) and not (tmp_path / "r2" / "model").exists()
    assert json.loads((tmp_path / "r2.provenance.json").read_text())["extra"]["stopped"]


def misses_at(*positions, gold_prob: float = 0.0):
    """A stand-in for answer_token_predictions: the expert misses exactly these (row, answer position)
    tokens, giving the gold token probability gold_prob there and 1 elsewhere."""
    def predictions(model, tokenizer, rows, batch_size, max_length):
        out = [torch.zeros(len(x), dtype=torch.bool) for x in answer_token_ids(tokenizer, rows, max_length)]
        for row, j in positions:
            out[row][j] = True
        return out, [torch.where(m, gold_prob, 1.0) for m in out]
    return predictions


def test_a_perfect_fit_keeps_its_expert_and_ends_boosting(cfg, tiny_model_dir, tmp_path, monkeypatch):
    c, data = cfg(epochs=1), write_split_dir(tmp_path / "data")
    monkeypatch.setattr(rounds, "answer_token_predictions", misses_at())  # no answer token missed
    rec, w = run(c, "boost", 1, data, tiny_model_dir, None, tmp_path / "r1")
    n, K = rec["n_tokens"], rec["vocab_size"]
    assert rec["n_missed"] == 0 and rec["perfect_fit"] is True
    assert not rec["stopped"] and (tmp_path / "r1" / "model").is_dir()  # the expert is kept ...
    assert rec["stop_reason"].startswith("round 1: perfect_fit: no answer token missed")  # ... and boosting ends
    # eps = half of the smallest weight 1/n, not the clip 1e-10: alpha = log(2n - 1) + log(K - 1)
    assert rec["eps"] == pytest.approx(1 / (2 * n), rel=1e-15)
    assert rec["alpha"] == pytest.approx(math.log(2 * n - 1) + math.log(K - 1), rel=1e-12)
    assert rec["missed_mass_after_update"] == 0.0
    assert torch.allclose(w["weights"], torch.full((n,), 1 / n, dtype=torch.float64), rtol=0, atol=1e-15)

    monkeypatch.setattr(rounds, "fit", lambda *a, **k: pytest.fail("a round after a perfect fit must not train"))
    rec2, _ = run(c, "boost", 2, data, tiny_model_dir, tmp_path / "r1", tmp_path / "r2")
    assert rec2["stopped"] and rec2["stop_reason"] == rec["stop_reason"] and rec2["alpha"] is None
    assert rec2["perfect_fit"] is False and not (tmp_path / "r2" / "model").exists()
    # the ensembles of rounds 1 and 2 hold the perfect expert, with its alpha
    write_manifest(c, [tmp_path / "r1", tmp_path / "r2"], "boost", tmp_path / "m.json")
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["experts"] == [str(tmp_path / "r1" / "model")] and manifest["weights"] == [rec["alpha"]]


def test_a_prior_none_round_leaves_half_the_mass_on_the_misses(cfg, tiny_model_dir, tmp_path, monkeypatch):
    c, data = cfg(boosting={"rounds": 2, "prior": "none"}, epochs=1), write_split_dir(tmp_path / "data")
    monkeypatch.setattr(rounds, "answer_token_predictions", misses_at((0, 0), (3, 0)))
    rec, w = run(c, "boost", 1, data, tiny_model_dir, None, tmp_path / "r1")
    n = rec["n_tokens"]
    assert rec["n_missed"] == 2 and rec["eps"] == pytest.approx(2 / n, rel=1e-15)
    assert rec["prior_term"] == 0.0 and rec["alpha"] == pytest.approx(math.log((n - 2) / 2), rel=1e-12)
    # binary AdaBoost: a miss gains exp(alpha) = (n - 2) / 2: missed 2 * (n-2)/2 = n - 2 against n - 2 kept -> each token 1/(2(n-2))
    # on the hits and 1/4 on each miss; sums of n float64 terms of at most 1/2: 1e-12 is loose
    starts = w["offsets"][[0, 3]]
    assert w["weights"][starts].tolist() == pytest.approx([0.25, 0.25], abs=1e-12)
    assert rec["missed_mass_after_update"] == pytest.approx(0.5, abs=1e-12)
    hits = torch.ones(n, dtype=torch.bool)
    hits[starts] = False
    assert torch.allclose(w["weights"][hits], torch.full((n - 2,), 1 / (2 * (n - 2)), dtype=torch.float64),
                          rtol=0, atol=1e-15)


def test_weights_too_small_for_float32_survive_the_round_trip(tmp_path):
    # a never-missed token after 5 rounds at alpha = log(1e10) (tests/test_boosting.py): 1e-50, below
    # float32's smallest subnormal 1.4e-45. Stored as float32 it became 0: the token left D's support
    # and resampling drew n - 1 tokens.
    prev = tmp_path / "r1"
    prev.mkdir()
    (prev / "boosting.json").write_text(json.dumps({"round": 1, "variant": "boost", "stopped": False,
                                                    "stop_reason": None}))
    uids, offsets = ["a", "b"], torch.tensor([0, 1, 3])
    rounds.write_weights(prev / "weights.pt", uids, offsets, torch.tensor([1e-50, 0.5, 0.5], dtype=torch.float64))
    D, stopped = rounds._previous(prev, 2, "boost", uids, offsets)
    assert stopped is None and D.dtype == torch.float64
    assert D.tolist() == [1e-50, 0.5, 0.5]  # the sum is exactly 1.0 in float64, so normalising changes nothing
    counts = boosting.boost_multipliers(D, offsets, 2, "resample", torch.Generator().manual_seed(0))
    assert counts.sum().item() == 3  # n draws, over all three tokens


def test_a_variants_learning_rate_and_uniform_mix_reach_its_update(cfg, tiny_model_dir, tmp_path):
    c = cfg(boosting={"rounds": 2, "variants": {"boost-nu": {"learning_rate": 0.5, "uniform_mix": 0.2}}}, epochs=1)
    data = write_split_dir(tmp_path / "data")
    rec, w = run(c, "boost-nu", 1, data, tiny_model_dir, None, tmp_path / "r1")
    tok = load_tokenizer(tiny_model_dir)
    rows = [json.loads(line) for line in (data / "weak_train.jsonl").read_text().splitlines()]
    miss = torch.cat(answer_token_misses(load_causal_lm(tmp_path / "r1" / "model"), tok, rows, 6, 64))
    n = len(miss)
    want = boosting.update_weights(torch.full((n,), 1 / n, dtype=torch.float64), miss, rec["alpha"], 1,
                                   learning_rate=0.5, uniform_mix=0.2)
    torch.testing.assert_close(w["weights"], want, rtol=0, atol=1e-15)
    assert rec["alpha_update"] == 0.5 * rec["alpha"]
    assert w["weights"].min().item() >= 0.2 / n * (1 - 1e-12)  # the floor lambda / n


def test_prior_base_error_is_the_weak_bases_token_error_measured_once(cfg, tiny_model_dir, tmp_path, monkeypatch):
    c = cfg(boosting={"rounds": 2, "variants": {"boost-base": {"prior": "base_error"}}}, epochs=1)
    data = write_split_dir(tmp_path / "data")
    rows = [json.loads(line) for line in (data / "weak_train.jsonl").read_text().splitlines()]
    scored = []  # the rows of each answer_token_misses call (the base on weak_train; each expert on val)

    def first_token_missed(model, tokenizer, rows, batch_size, max_length):
        scored.append([r["uid"] for r in rows])
        return [torch.arange(len(x)) == 0 for x in answer_token_ids(tokenizer, rows, max_length)]

    monkeypatch.setattr(rounds, "answer_token_misses", first_token_missed)
    monkeypatch.setattr(rounds, "answer_token_predictions", misses_at((0, 0), (3, 0)))  # eps = 2 / n
    rec, _ = run(c, "boost-base", 1, data, tiny_model_dir, None, tmp_path / "r1")
    n, N = rec["n_tokens"], len(rows)
    e_ref = N / n  # the base misses one token per row
    assert scored[0] == [r["uid"] for r in rows]
    assert rec["e_ref"] == pytest.approx(e_ref, rel=1e-15)
    assert rec["prior_term"] == pytest.approx(math.log(e_ref / (1 - e_ref)), rel=1e-12)
    assert rec["alpha"] == pytest.approx(math.log((n - 2) / 2) + math.log(e_ref / (1 - e_ref)), rel=1e-12)
    # round 2 reads e_ref from round 1 instead of scoring the base again: only val is scored (own misses)
    scored.clear()
    monkeypatch.setattr(rounds, "answer_token_predictions", misses_at((1, 0)))
    rec2, _ = run(c, "boost-base", 2, data, tiny_model_dir, tmp_path / "r1", tmp_path / "r2")
    assert len(scored) == 1 and scored[0] != [r["uid"] for r in rows]
    assert rec2["e_ref"] == rec["e_ref"] and rec2["prior_term"] == rec["prior_term"]


def test_soft_misses_enter_eps_and_the_update(cfg, tiny_model_dir, tmp_path, monkeypatch):
    """Two tokens missed with p(gold) = 0.25, every other token right with p(gold) = 1: under miss soft,
    eps = (2 / n) * 0.75 and a missed token gains exp(0.75 alpha) (hand-worked; prior none)."""
    c = cfg(boosting={"rounds": 2, "variants": {"soft": {"miss": "soft", "prior": "none"}}}, epochs=1)
    data = write_split_dir(tmp_path / "data")
    monkeypatch.setattr(rounds, "answer_token_predictions", misses_at((0, 0), (3, 0), gold_prob=0.25))
    rec, w = run(c, "soft", 1, data, tiny_model_dir, None, tmp_path / "r1")
    n = rec["n_tokens"]
    eps = 2 / n * 0.75
    assert rec["miss"] == "soft" and rec["eps"] == pytest.approx(eps, rel=1e-12)
    alpha = math.log((1 - eps) / eps)
    assert rec["alpha"] == pytest.approx(alpha, rel=1e-12)
    gain = math.exp(0.75 * alpha)
    starts = w["offsets"][[0, 3]]
    assert w["weights"][starts].tolist() == pytest.approx([gain / (n - 2 + 2 * gain)] * 2, rel=1e-12)
    assert rec["missed_token_share"] == 2 / n  # hard misses, for the record


def test_out_of_fold_misses_come_from_copies_without_the_rows_fold(cfg, tiny_model_dir, tmp_path, monkeypatch):
    c = cfg(boosting={"rounds": 2, "variants": {"oof": {"miss_on": "out_of_fold", "folds": 2}}}, epochs=1)
    data = write_split_dir(tmp_path / "data")
    rows = [json.loads(line) for line in (data / "weak_train.jsonl").read_text().splitlines()]
    fitted = []  # the uids each fit saw
    real_fit = rounds.fit
    monkeypatch.setattr(rounds, "fit", lambda m, t, r, *a, **kw: fitted.append({x["uid"] for x in r}) or real_fit(m, t, r, *a, **kw))
    seen = []  # the rows each prediction pass scored

    def predictions(model, tokenizer, pred_rows, batch_size, max_length):
        seen.append([r["uid"] for r in pred_rows])
        ids = answer_token_ids(tokenizer, pred_rows, max_length)
        full = len(seen) == 1  # h_1 itself misses nothing; each out-of-fold copy misses every first token
        out = [torch.zeros(len(x), dtype=torch.bool) for x in ids]
        for m in out:
            m[0] = not full
        return out, [(~m).float() for m in out]

    monkeypatch.setattr(rounds, "answer_token_predictions", predictions)
    rec, _ = run(c, "oof", 1, data, tiny_model_dir, None, tmp_path / "r1")
    uids = {r["uid"] for r in rows}
    assert fitted[0] == uids and len(fitted) == 3  # h_1, then one copy per fold
    held = [uids - f for f in fitted[1:]]
    assert held[0] | held[1] == uids and not held[0] & held[1] and abs(len(held[0]) - len(held[1])) <= 1
    assert [set(s) for s in seen[1:]] == held  # each copy scores exactly the fold it did not see
    assert rec["n_missed"] == len(rows)  # the out-of-fold misses (one per row), not h_1's own (none)
    assert rec["extra_trainings"] == 2
    own = json.loads((tmp_path / "r1" / "answer_misses.json").read_text())
    assert not any(any(row) for row in own["weak_train"]["missed"])  # h_1's own misses: none


def test_a_non_finite_loss_names_the_step_and_the_round(cfg, tiny_model_dir, tmp_path, monkeypatch):
    nan = lambda *args, **kwargs: torch.tensor(float("nan"), requires_grad=True)  # noqa: E731
    monkeypatch.setattr(training, "weighted_lm_loss", nan)
    with pytest.raises(UserError, match=r"^train-expert boost round 1 \(weak, synthetic, seed 0\): training loss is "
                                        r"nan at step 1 .*lower training.learning_rate"):
        run(cfg(), "boost", 1, write_split_dir(tmp_path / "data"), tiny_model_dir, None, tmp_path / "r1")
    assert not (tmp_path / "r1").exists()


def test_bagging_with_lora_saves_an_adapter_and_keeps_uniform_weights(cfg, tiny_model_dir, tmp_path):
    c = cfg(boosting={"rounds": 2, "variants": {"bagging": {"kind": "bagging"}}}, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    data = write_split_dir(tmp_path / "data")
    rec, w = run(c, "bagging", 1, data, tiny_model_dir, None, tmp_path / "r1")
    assert rec["alpha"] == 1.0 and rec["prior"] == "uniform" and not rec["stopped"]
    assert torch.allclose(w["weights"], torch.full_like(w["weights"], 1 / len(w["weights"])))
    assert (tmp_path / "r1" / "model" / "adapter_config.json").is_file()
    assert not (tmp_path / "r1" / "model" / "model.safetensors").exists()
    expert = load_causal_lm(tmp_path / "r1" / "model")  # adapter + its (absolute) base
    assert expert(torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, len(load_tokenizer(tiny_model_dir)))


def test_bagging_resamples_examples_by_round_seed():
    offsets = torch.tensor([0, 2, 5, 7])
    gen = lambda: torch.Generator().manual_seed(rounds.round_seed(0, 1))  # noqa: E731
    m = boosting.bagging_multipliers(None, offsets, 1, "resample", gen())
    counts = boosting.bootstrap_counts(3, gen())
    # each example's tokens carry its bootstrap count
    assert m.tolist() == [float(counts[0])] * 2 + [float(counts[1])] * 3 + [float(counts[2])] * 2
    assert rounds.round_seed(0, 1) != rounds.round_seed(0, 2) != rounds.round_seed(1, 1)
    assert boosting.boost_multipliers(None, offsets, 1, "resample", gen()) is None  # round 1: SFT


def test_rounds_need_a_matching_prev(cfg, tiny_model_dir, tmp_path):
    c, data = cfg(), write_split_dir(tmp_path / "data")
    with pytest.raises(UserError, match="round 2 needs --prev"):
        run(c, "boost", 2, data, tiny_model_dir, None, tmp_path / "r2")
    with pytest.raises(UserError, match="drop --prev"):
        run(c, "boost", 1, data, tiny_model_dir, tmp_path / "r0", tmp_path / "r1")
    prev = tmp_path / "r1"
    prev.mkdir()
    (prev / "boosting.json").write_text(json.dumps({"round": 1, "variant": "bagging", "stopped": False}))
    with pytest.raises(UserError, match="needs round 1 of 'boost'"):
        run(c, "boost", 2, data, tiny_model_dir, prev, tmp_path / "r2")
    (prev / "boosting.json").write_text(json.dumps({"round": 1, "variant": "boost", "stopped": False}))
    rounds.write_weights(prev / "weights.pt", ["other"], torch.tensor([0, 3]), torch.full((3,), 1 / 3))
    with pytest.raises(UserError, match="other weak_train rows"):
        run(c, "boost", 2, data, tiny_model_dir, prev, tmp_path / "r2")
    with pytest.raises(UserError, match="Did you mean 'boost'"):
        run(c, "boots", 1, data, tiny_model_dir, None, tmp_path / "r1")
