"""Shared fixtures: a locally trained tokenizer, tiny causal LMs saved as checkpoints, a small config.

Everything is built in-process in seconds; nothing is downloaded.
"""
from __future__ import annotations

import copy
import math
import os
from importlib import metadata
from pathlib import Path

import pytest
import torch

from ensemw2s import config as config_mod
from ensemw2s.config import TinySpec
from ensemw2s.models import build_tiny_model, load_causal_lm, load_tokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# CI's second step sets it after `make setup-gguf`: there, a skipped test is a failure (nothing optional
# may silently go untested)
REQUIRE_EXTRAS = "ENSEMW2S_REQUIRE_EXTRAS"


def _no_skip(report) -> None:
    """With ENSEMW2S_REQUIRE_EXTRAS=1 a skip (of a test or of a whole module) becomes a failure that
    keeps the skip's reason."""
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get(REQUIRE_EXTRAS) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but {REQUIRE_EXTRAS}=1 allows no skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _no_skip((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _no_skip((yield).get_result())


def installed_version(dist: str) -> str:
    """The installed version of an optional distribution; skips the test (naming the fix) when absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"optional package {dist} is not installed; `make setup-gguf` installs it")


# ---------------------------------------------------------------------------------------------
# float32 tolerances

U32 = 2.0**-24  # unit roundoff of float32
# The longest chain of float32 accumulations in a forward of the fixtures' tiny models (TINY and
# BASE_CONFIG: hidden 32, head dim 8, intermediate 64, 2 layers, sequences <= 64 tokens, LoRA rank <= 8),
# per layer: norm 32 + q/k/v projection 32 + LoRA 32 + 8 + attention scores 8 + softmax 64 + attention
# values 64 + o projection 32 + norm 32 + gate/up 32 + down 64 = 400; 2 layers, final norm 32, lm head 32.
TINY_FORWARD_OPS = 2 * 400 + 32 + 32


def float32_tolerance(magnitude: float, ops: int) -> float:
    """Bound on |a - b| for two float32 evaluations of one quantity of size `magnitude` that round
    differently (another CPU's vector width or kernel blocking, a stacked vs a separate matmul, other
    batch shapes): each is within gamma_ops ~ ops * u of the exact value, relative to the magnitudes it
    accumulates (Higham, Accuracy and Stability of Numerical Algorithms, 2002, ch. 3), so the two differ
    by at most 2 * ops * u * magnitude."""
    return 2 * ops * U32 * magnitude


def output_tolerance(values: torch.Tensor, vocab: int = 0) -> float:
    """Tolerance for the comparison of tiny models' outputs (any shape), relative to the largest |value|
    compared: logits (vocab 0: the forward's chain) or log-probabilities (plus the sum over the vocab)."""
    return float32_tolerance(float(values.abs().max()), TINY_FORWARD_OPS + vocab)


def loglikelihood_tolerance(value: float, n_tokens: int, vocab: int) -> float:
    """Tolerance for a tiny model's log-likelihood of an n_tokens continuation: a sum of n_tokens
    log-softmax terms, each computed from max-shifted logits whose two parts (x_gold - max and
    log sum exp(x - max)) are at most |log p| and log(vocab), so the magnitude accumulated is
    |value| + n_tokens * log(vocab), over the forward's chain, the vocabulary sum and the token sum."""
    return float32_tolerance(abs(value) + n_tokens * math.log(vocab), TINY_FORWARD_OPS + vocab + n_tokens)


def assert_loglikelihoods_close(got: list[float], want: list[float], n_tokens: list[int], vocab: int) -> None:
    """got[i] == want[i] within loglikelihood_tolerance of want[i] (one tolerance per request)."""
    assert len(got) == len(want) == len(n_tokens)
    for i, (g, w, n) in enumerate(zip(got, want, n_tokens)):
        tol = loglikelihood_tolerance(w, n, vocab)
        assert abs(g - w) <= tol, f"request {i}: {g} vs {w}, |difference| {abs(g - w):.3g} > tolerance {tol:.3g}"


# ---------------------------------------------------------------------------------------------
# tiny models and configs

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


# every kind once, and boost's experts re-weighted: the variants of config/paper.yaml
ALL_VARIANTS = {"boost": {}, "bagging": {"kind": "bagging"}, "sequence": {"kind": "sequence"},
                "boost-uniform": {"ensemble_weights": "uniform"}}


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


# experts with peaked, varied distributions: shared by the ensemble, token-cache and lm-eval tests
def livened(src: Path, dst: Path, seed: int) -> Path:
    """A copy of a tiny checkpoint with large random weights: peaked, varied next-token distributions.

    The fixtures' default initialisation gives near-uniform distributions that repeat one token; these
    copies make greedy decoding and is_greedy informative.
    """
    model = load_causal_lm(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=g)
    model.save_pretrained(dst)
    load_tokenizer(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def expert_dirs(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("lively")
    return [livened(d, root / f"e{i}", seed=i) for i, d in enumerate(tiny_model_dirs)]


@pytest.fixture(scope="module")
def experts(expert_dirs):
    return [load_causal_lm(d) for d in expert_dirs]
