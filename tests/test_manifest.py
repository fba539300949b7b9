"""manifest.py: what `ensemw2s ensemble` writes from the rounds' boosting.json, and what it refuses."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ensemw2s import steps
from ensemw2s.errors import UserError
from ensemw2s.manifest import read_manifest, write_manifest
from ensemw2s.models import load_tokenizer, tokenizer_fingerprint, train_tokenizer
from tests.conftest import TOKENIZER_TEXTS


def boosting_round(root: Path, r: int, alpha: float, model: Path | None) -> Path:
    """A round directory as train-expert leaves it: boosting.json, and `model` unless the round stopped."""
    d = root / f"r{r}"
    d.mkdir(parents=True)
    (d / "boosting.json").write_text(json.dumps({"round": r, "alpha": alpha, "stopped": model is None}))
    if model is not None:
        (d / "model").symlink_to(model, target_is_directory=True)
    return d


def test_manifest_skips_stopped_rounds(tmp_path, tiny_model_dirs, make_config):
    dirs = [boosting_round(tmp_path, 1, 2.5, tiny_model_dirs[0]), boosting_round(tmp_path, 2, -0.1, None),
            boosting_round(tmp_path, 3, 0.5, tiny_model_dirs[1])]
    cfg = make_config(boosting={"rounds": 3, "combine": "vote"})
    write_manifest(cfg, dirs, "boost", tmp_path / "alpha.json")
    assert read_manifest(tmp_path / "alpha.json") == {
        "experts": [str(dirs[0] / "model"), str(dirs[2] / "model")], "weights": [2.5, 0.5], "combine": "vote",
        "weighting": "alpha", "rounds": [1, 3], "tokenizer": tokenizer_fingerprint(load_tokenizer(tiny_model_dirs[0]))}
    write_manifest(cfg, dirs, "boost-uniform", tmp_path / "uniform.json")
    assert read_manifest(tmp_path / "uniform.json")["weights"] == [1.0, 1.0]
    record = json.loads((tmp_path / "uniform.json.provenance.json").read_text())
    assert record["step"] == "ensemble_manifest" and record["config_keys"] == [
        "boosting.variants.boost-uniform.combine", "boosting.variants.boost-uniform.ensemble_weights"]
    assert record["config_hash"] == steps.identity(cfg, "ensemble_manifest", variant="boost-uniform")
    assert set(record["inputs"]) == {str(d / "boosting.json") for d in dirs}


def test_manifest_errors(tmp_path, tiny_model_dirs, make_config):
    cfg = make_config()
    stopped = [boosting_round(tmp_path / "a", 1, -1.0, None)]
    with pytest.raises(UserError, match="no usable expert"):
        write_manifest(cfg, stopped, "boost", tmp_path / "m.json")
    with pytest.raises(UserError, match="file not found"):
        write_manifest(cfg, [tmp_path / "nowhere"], "boost", tmp_path / "m.json")
    with pytest.raises(UserError, match="unknown variant 'bost'. Did you mean 'boost'"):
        write_manifest(cfg, stopped, "bost", tmp_path / "m.json")
    other = tmp_path / "other_tok"
    train_tokenizer([t.upper() for t in TOKENIZER_TEXTS], vocab_size=290).save_pretrained(other)
    mixed = [boosting_round(tmp_path / "b", 1, 1.0, tiny_model_dirs[0]), boosting_round(tmp_path / "b", 2, 1.0, other)]
    with pytest.raises(UserError, match="different tokenizers"):
        write_manifest(cfg, mixed, "boost", tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
    (tmp_path / "bad.json").write_text(json.dumps({"experts": []}))
    with pytest.raises(UserError, match=r"not an ensemble manifest \(missing weights, combine, tokenizer\)"):
        read_manifest(tmp_path / "bad.json")


def test_reading_a_manifest_loads_no_torch():
    code = "import ensemw2s.manifest, sys; assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
