import json

import pytest
import torch

from ensemw2s.errors import UserError
from ensemw2s.models import POINTER, check_same_tokenizer, load_causal_lm, load_tokenizer, resolve, train_tokenizer
from tests.conftest import TOKENIZER_TEXTS


def test_tiny_checkpoint_roundtrip(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir)
    tok = load_tokenizer(tiny_model_dir)
    ids = tok("Question: What color", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert tok.pad_token is not None and tok.eos_token == "</s>"


def test_pointer_is_followed(tmp_path, tiny_model_dir):
    (tmp_path / POINTER).write_text(json.dumps({"load": str(tiny_model_dir)}))
    assert resolve(tmp_path)["load"] == str(tiny_model_dir)
    assert load_tokenizer(tmp_path).get_vocab() == load_tokenizer(tiny_model_dir).get_vocab()


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_causal_lm(tmp_path / "nope")


def test_different_tokenizers_are_refused(tmp_path, tiny_model_dir):
    other = train_tokenizer([t.upper() for t in TOKENIZER_TEXTS], vocab_size=290)
    other.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="different tokenizers"):
        check_same_tokenizer([tiny_model_dir, tmp_path])
    check_same_tokenizer([tiny_model_dir, tiny_model_dir])


def test_prepare_model_writes_a_tiny_model_and_its_record(make_config, tmp_path):
    from ensemw2s import provenance
    from ensemw2s.models import prepare_model

    prepare_model(make_config(), "weak", tmp_path / "models" / "weak")
    assert load_tokenizer(tmp_path / "models" / "weak").eos_token == "</s>"
    record = json.loads(provenance.record_path(tmp_path / "models" / "weak").read_text())
    assert record["step"] == "prepare_model" and record["config_keys"] == ["datasets.synthetic.options", "models.weak", "seeds.0"]
    assert record["tokens_processed"] == 0 and record["extra"]["source"] == "tiny"  # pretrain_steps 0
    assert not list((tmp_path / "models").glob(".weak.*"))  # no temporary directory left
