"""Shared fixtures: a locally trained tokenizer, tiny causal LMs saved as checkpoints, a small config.

Everything is built in-process in seconds; nothing is downloaded.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ensemw2s import config as config_mod
from ensemw2s.config import TinySpec
from ensemw2s.models import build_tiny_model, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TOKENIZER_TEXTS = [
    "Question: What color is the zorblat? Answer: bright red",
    "Question: Where does the vemora live? Answer: in the blue forest",
    "Question: Which gas do plants absorb? Answer: carbon dioxide",
    "the quick brown fox jumps over the lazy dog 0123456789 A) B) C) D) Choices:",
] * 8

TINY = dict(
    arch="llama", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, vocab_size=300,
    max_position=128, pretrain_steps=0, pretrain_lr=0.003, pretrain_batch_size=8, pretrain_docs=0,
    pretrain_dataset="synthetic",
)

# A minimal valid config mapping; tests copy and edit it (`make_config`).
BASE_CONFIG = {
    "run": "test",
    "data_dir": str(SHARED_DATA),
    "models": {
        "weak": {"source": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "intermediate_size": 64,
                                             "vocab_size": 300, "pretrain_steps": 0, "pretrain_docs": 50}},
        "strong": {"source": "tiny", "tiny": {"hidden_size": 48, "num_layers": 2, "intermediate_size": 96,
                                               "vocab_size": 300, "pretrain_steps": 0, "pretrain_docs": 50}},
    },
    "pairs": [{"weak": "weak", "strong": "strong"}],
    "datasets": [{"name": "synthetic"}],
    "boosting": {"rounds": 2},
    "training": {"expert": {"epochs": 1, "batch_size": 8, "learning_rate": 0.003},
                 "student": {"epochs": 1, "batch_size": 8, "learning_rate": 0.003}},
    "evaluation": {"batch_size": 8, "max_new_tokens": 8, "bootstrap": 50},
}


@pytest.fixture
def make_config(tmp_path):
    """make_config(**top_level_overrides) -> Config with results_dir inside tmp_path."""

    def make(**overrides):
        raw = copy.deepcopy(BASE_CONFIG)
        raw["results_dir"] = str(tmp_path / "results")
        raw.update(overrides)
        return config_mod.from_dict(raw)

    return make


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer(TOKENIZER_TEXTS, vocab_size=300)


def _save_tiny(path: Path, tokenizer, seed: int, **changes) -> Path:
    model = build_tiny_model(TinySpec(**{**TINY, **changes}), tokenizer, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved random tiny Llama checkpoint (with tokenizer)."""
    return _save_tiny(tmp_path_factory.mktemp("tiny_llama"), tiny_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tiny_tokenizer) -> list[Path]:
    """Three different random tiny Llama checkpoints sharing one tokenizer (distinct 'experts')."""
    return [_save_tiny(tmp_path_factory.mktemp(f"tiny_expert{i}"), tiny_tokenizer, seed=i + 1) for i in range(3)]


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny_gpt2"), tiny_tokenizer, seed=0, arch="gpt2")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (several threads only contend on a shared machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def config_file(tmp_path):
    """config_file(**top_level_overrides) -> path of a YAML config (BASE_CONFIG + overrides) for the CLI."""
    import yaml

    def write(**overrides):
        raw = copy.deepcopy(BASE_CONFIG)
        raw["results_dir"] = str(tmp_path / "results")
        raw.update(overrides)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write
