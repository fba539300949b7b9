"""Students on several processes: torchrun with 2 CPU processes (gloo) trains what one process trains.

The same global batch (training.batch_size is split over the processes) and the same sample order
(accelerate's seeded sampler, sharded batch by batch) give the same loss trajectory: the token-weighted
loss is normalised by the answer tokens of the whole global batch (num_items_in_batch summed over the
processes), not per process, so rows whose answers differ in length weigh the same in both runs.

Run as a script (`python tests/test_distributed.py SETUP OUT`), this file is the worker both runs use.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_FORWARD_OPS, float32_tolerance

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 2
BATCH, GRAD_ACCUM, ROWS = 4, 2, 32  # 4 optimizer steps of 8 rows; each process runs 2 rows per forward


def _worker(setup: Path, out: Path) -> None:
    from ensemw2s import training
    from ensemw2s.config import TrainingSpec
    from ensemw2s.models import load_causal_lm, load_tokenizer

    s = json.loads(setup.read_text())
    torch.manual_seed(0)
    tokenizer = load_tokenizer(s["model"])
    weights = [torch.tensor(w) for w in s["weights"]]
    training.fit(load_causal_lm(s["model"]), tokenizer, s["rows"], TrainingSpec(**s["spec"]), seed=0,
                 out_dir=out, token_weights=weights)


def _rows() -> list[dict]:
    """Answers of 1 to 6 words: the processes' halves of a batch hold different numbers of answer tokens."""
    words = "red green blue forest carbon dioxide".split()
    return [{"uid": f"u{i}", "prompt": f"Question: what is thing {i}?\nAnswer:", "answer": " ".join(words[: 1 + i % 6])}
            for i in range(ROWS)]


def _train(tmp_path: Path, setup: Path, name: str, processes: int) -> list[float]:
    """Loss per optimizer step (Trainer's log, every step) of one training run."""
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
              if processes > 1 else [sys.executable])
    done = subprocess.run([*launch, __file__, str(setup), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    (state,) = out.glob("checkpoint-*/trainer_state.json")
    return [log["loss"] for log in json.loads(state.read_text())["log_history"] if "loss" in log]


def test_two_processes_follow_the_one_process_loss_trajectory(tmp_path, tiny_model_dir, tiny_tokenizer):
    from ensemw2s import training

    rows = _rows()
    answers = training.answer_token_ids(tiny_tokenizer, rows, 64)
    g = torch.Generator().manual_seed(1)
    weights = [(0.5 + torch.rand(len(a), generator=g)).tolist() for a in answers]  # token weights in [0.5, 1.5)
    spec = dict(epochs=1, learning_rate=1e-3, batch_size=BATCH, grad_accum=GRAD_ACCUM, max_length=64,
                weight_decay=0.0, warmup_ratio=0.0, precision="fp32", save_steps=4, select_on_val=False)
    setup = tmp_path / "setup.json"
    setup.write_text(json.dumps({"model": str(tiny_model_dir), "rows": rows, "weights": weights, "spec": spec}))

    one = _train(tmp_path, setup, "one", 1)
    two = _train(tmp_path, setup, "two", PROCESSES)
    steps = ROWS // (BATCH * GRAD_ACCUM)
    assert len(one) == len(two) == steps
    n_tokens = BATCH * GRAD_ACCUM * max(len(a) for a in answers)  # answer tokens of a global batch, at most
    for step, (a, b) in enumerate(zip(one, two), 1):
        tol = _loss_tolerance(a, step - 1, len(tiny_tokenizer), n_tokens, max_weight=1.5)
        assert abs(a - b) <= tol, f"step {step}: {a} vs {b}, |difference| {abs(a - b):.3g} > tolerance {tol:.3g}"


def test_train_student_with_processes_2_reruns_itself_under_torchrun(tmp_path, config_file, tiny_model_dir, tiny_tokenizer):
    """The CLI's launcher: `--processes 2` (the rule passes resources.train_student.gpu) trains the ceiling on
    2 processes, selects its epoch on gold val across them, and process 0 alone writes the outputs."""
    from tests.test_rounds import write_split_dir

    data = write_split_dir(tmp_path / "data")  # 6 pool rows, 6 val rows: 3 steps of 2 per epoch, 1 row per process
    cfg = config_file(training={"expert": {"epochs": 1}, "student": {"epochs": 2, "batch_size": 2, "learning_rate": 0.01,
                                                                      "max_length": 64}})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    fits = {}
    for n in (1, PROCESSES):
        out = tmp_path / f"ceiling{n}"
        done = subprocess.run([sys.executable, "-m", "ensemw2s", "train-student", "--processes", str(n), "--config",
                               str(cfg), "--strong", "strong", "--seed", "0", "--data", str(data), "--base",
                               str(tiny_model_dir), "--gold", "--out", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        assert (out / "model" / "config.json").is_file() and not (tmp_path / f"ceiling{n}.ckpt").exists()
        assert json.loads((tmp_path / f"ceiling{n}.provenance.json").read_text())["step"] == "train_student"
        fits[n] = json.loads((out / "fit.json").read_text())
    one, two = fits[1], fits[PROCESSES]
    assert one["global_step"] == two["global_step"] == 6
    assert one["tokens_processed"] == two["tokens_processed"]  # counted over both processes
    assert len(one["val_losses"]) == len(two["val_losses"]) == 2
    for epoch, (a, b) in enumerate(zip(one["val_losses"], two["val_losses"]), 1):  # after 3 updates an epoch
        tol = _loss_tolerance(a, 3 * epoch, len(tiny_tokenizer), n_tokens=2 * 64, max_weight=1.0)  # plain SFT
        assert abs(a - b) <= tol, f"epoch {epoch}: val loss {a} vs {b}, |difference| {abs(a - b):.3g} > {tol:.3g}"


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    from ensemw2s import training
    from ensemw2s.config import TrainingSpec
    from ensemw2s.errors import UserError
    from ensemw2s.models import load_causal_lm, load_tokenizer

    monkeypatch.setenv("WORLD_SIZE", "2")
    spec = TrainingSpec(epochs=1, learning_rate=1e-3, batch_size=3, grad_accum=1, max_length=64, weight_decay=0.0,
                        warmup_ratio=0.0, precision="fp32", save_steps=4, select_on_val=False)
    with pytest.raises(UserError, match="batch_size 3 does not split over 2 processes"):
        training.fit(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir), _rows()[:4], spec, seed=0,
                     out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def _loss_tolerance(loss: float, updates: int, vocab: int, n_tokens: int, max_weight: float) -> float:
    """Float32 bound on |one - two| for a loss computed after `updates` optimizer steps. With no update it is
    one forward of the same weights in other batch shapes (each process pads its own rows): a weighted mean
    of n_tokens cross-entropies, each a log-softmax whose two parts are at most |CE| + log(vocab)
    (conftest.loglikelihood_tolerance), so magnitude max_weight * (|loss| + log vocab) over the forward's
    chain, the vocabulary sum and the token sum. Each update adds to the weights the rounding of one
    backward (two forward chains) and the gradients' all-reduce, which reaches the loss at first order with
    the same relative size: 3 forward chains more per update. (Per-process normalisation is off by ~3e-2
    at the first step here, ten times this bound.)"""
    chain = TINY_FORWARD_OPS + vocab + n_tokens
    return float32_tolerance(max_weight * (abs(loss) + math.log(vocab)), chain * (1 + 3 * updates))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
