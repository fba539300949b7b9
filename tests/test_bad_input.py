"""Bad input through the real CLI: one line on stderr naming the input and the fix, exit 2, no traceback,
and nothing written at --out.

Each case builds the smallest input that reaches the check (tiny models from conftest, split files
written by hand); none trains a model. The hub cases run the CLI in a subprocess, because
HF_HUB_OFFLINE is read when huggingface_hub is imported.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ensemw2s.cli import main
from ensemw2s.io import write_json, write_jsonl
from ensemw2s.models import train_tokenizer
from tests.conftest import BASE_CONFIG, REPO, TOKENIZER_TEXTS
from tests.test_rounds import write_split_dir

SCIQ_ROW = {"question": "Which gas do plants absorb?", "correct_answer": "carbon dioxide", "distractor1": "oxygen",
            "distractor2": "helium", "distractor3": "neon", "support": ""}


def check_error(err: str, step: str, *needles: str) -> str:
    """The contract: exactly one line, prefixed with the step, naming every needle; no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"ensemw2s {step}: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def fails(capsys, tmp_path):
    """fails(argv, *needles): run the CLI in-process and check the contract; --out must not exist after.

    The CLI turns off the libraries' progress bars through environment variables read at import; here
    the libraries are already imported, so they are turned off directly for the test.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()

    def run(argv: list[str], *needles: str) -> str:
        argv = [str(a) for a in argv]
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, err
        line = check_error(err, argv[0], *needles)
        if "--out" in argv:
            out = Path(argv[argv.index("--out") + 1])
            assert not out.exists(), f"{out} was written by a failed step"
            assert not any(out.parent.glob(f".{out.name}.*")), "a temporary output was left behind"
        return line

    yield run
    if bars:
        hf_logging.enable_progress_bar()


def run_cli_subprocess(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ensemw2s", *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=REPO, timeout=300)


def write_config(tmp_path: Path, name: str = "config.yaml", **overrides) -> Path:
    raw = copy.deepcopy(BASE_CONFIG)
    raw["results_dir"] = str(tmp_path / "results")
    raw.update(overrides)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def sciq_copy(root: Path, train_rows: list[dict] | None = None, train_text: str | None = None) -> Path:
    """A local SciQ copy (<root>/sciq/{train,validation,test}.jsonl) whose train file is given."""
    folder = root / "sciq"
    folder.mkdir(parents=True)
    for split in ("validation", "test"):
        write_jsonl(folder / f"{split}.jsonl", [SCIQ_ROW])
    if train_text is not None:
        (folder / "train.jsonl").write_text(train_text)
    else:
        write_jsonl(folder / "train.jsonl", train_rows)
    return root


def expert_dir(root: Path, round: int, model: Path | None, stopped: bool = False, alpha: float | None = 1.0) -> Path:
    """An expert directory as train-expert writes it (boosting.json, and model/ unless stopped)."""
    root.mkdir(parents=True)
    write_json(root / "boosting.json", {"round": round, "variant": "boost", "alpha": None if stopped else alpha,
                                        "stopped": stopped, "stop_reason": "round 1: alpha <= 0" if stopped else None})
    if model is not None:
        shutil.copytree(model, root / "model")
    return root


# ---------------------------------------------------------------------------------------------
# config


def test_malformed_yaml(fails, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run: x\nmodels: {weak: [1, 2}\n")
    fails(["prepare-model", "--config", path, "--model", "weak", "--out", tmp_path / "out"],
          str(path), "line 2", "not valid YAML")


def test_missing_config_file(fails, tmp_path):
    fails(["prepare-model", "--config", tmp_path / "nope.yaml", "--model", "weak", "--out", tmp_path / "out"],
          "nope.yaml", "does not exist")


def test_unknown_config_key_suggests_the_right_one(fails, tmp_path):
    path = write_config(tmp_path, boosting={"rounds": 2, "alpah": "samme"})
    fails(["prepare-model", "--config", path, "--model", "weak", "--out", tmp_path / "out"],
          "boosting.alpah", "Did you mean 'alpha'?")


def test_wrong_type_names_the_key(fails, tmp_path):
    path = write_config(tmp_path, training={"expert": {"learning_rate": "fast"}})
    fails(["prepare-model", "--config", path, "--model", "weak", "--out", tmp_path / "out"],
          "training.expert.learning_rate", "'fast' is not of type 'number'")


def test_rounds_below_one_in_the_config(fails, tmp_path):
    path = write_config(tmp_path, boosting={"rounds": 0})
    fails(["prepare-model", "--config", path, "--model", "weak", "--out", tmp_path / "out"],
          "boosting.rounds", "minimum of 1")


def test_unknown_dataset_in_the_config(fails, tmp_path):
    path = write_config(tmp_path, datasets=[{"name": "sciqq"}])
    fails(["prepare-data", "--config", path, "--dataset", "sciqq", "--out", tmp_path / "out"],
          "datasets[0].name", "unknown dataset 'sciqq'", "Did you mean 'sciq'?")


def test_unknown_dataset_on_the_command_line(fails, tmp_path):
    fails(["prepare-data", "--config", write_config(tmp_path), "--dataset", "arcc", "--out", tmp_path / "out"],
          "--dataset", "unknown dataset 'arcc'", "Did you mean 'arc'?")


def test_unknown_model_in_pairs(fails, tmp_path):
    path = write_config(tmp_path, pairs=[{"weak": "weak", "strong": "strnog"}])
    fails(["prepare-model", "--config", path, "--model", "weak", "--out", tmp_path / "out"],
          "pairs[0].strong", "unknown model 'strnog'", "Did you mean 'strong'?")


def test_unknown_model_on_the_command_line(fails, tmp_path):
    fails(["prepare-model", "--config", write_config(tmp_path), "--model", "waek", "--out", tmp_path / "out"],
          "unknown model 'waek'", "Did you mean 'weak'?")


def test_bad_config_stops_the_workflow_at_load(tmp_path):
    """The workflow validates with the same schema and names the key, before any job runs."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pairs": [{"weak": "tiny-weak", "strong": "tiny-strnog"}]}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
                          "--directory", str(REPO), "--configfile", str(REPO / "config" / "config.yaml"), str(bad),
                          "--config", f"results_dir={tmp_path / 'results'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr  # Snakemake logs to stdout
    assert res.returncode != 0
    assert "invalid config: config key pairs[0].strong: unknown model 'tiny-strnog'. Did you mean 'tiny-strong'?" in out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------
# models


def test_gguf_file_that_does_not_exist(fails, tmp_path):
    path = write_config(tmp_path, models={**BASE_CONFIG["models"], "g": {"source": "gguf", "gguf_file": "/nope.gguf"}})
    fails(["prepare-model", "--config", path, "--model", "g", "--out", tmp_path / "models" / "g"],
          "models.g.gguf_file", "/nope.gguf does not exist")


def test_checkpoint_path_that_does_not_exist(fails, tmp_path):
    path = write_config(tmp_path, models={**BASE_CONFIG["models"], "p": {"source": "path", "id": "/nope/ckpt"}})
    fails(["prepare-model", "--config", path, "--model", "p", "--out", tmp_path / "models" / "p"],
          "models.p.id", "/nope/ckpt does not exist")


def test_hub_model_while_offline(tmp_path):
    path = write_config(tmp_path, models={**BASE_CONFIG["models"],
                                          "h": {"source": "hub", "id": "ensemw2s-test/no-such-model"}})
    out = tmp_path / "models" / "h"
    res = run_cli_subprocess(["prepare-model", "--config", path, "--model", "h", "--out", out],
                             {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 2, res.stderr
    check_error(res.stderr, "prepare-model", "'ensemw2s-test/no-such-model'", "cannot be reached", "source: path")
    assert not out.exists()


def test_hub_dataset_while_offline(tmp_path):
    path = write_config(tmp_path, datasets=[{"name": "sciq", "load_from": "hub"}])
    out = tmp_path / "data"
    res = run_cli_subprocess(["prepare-data", "--config", path, "--dataset", "sciq", "--out", out],
                             {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 2, res.stderr
    check_error(res.stderr, "prepare-data", "allenai/sciq", "cannot be reached", "load_from: local", "--data-dir")
    assert not out.exists()


def test_experts_with_different_tokenizers(fails, tmp_path, tiny_model_dir):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    train_tokenizer([t.upper() for t in TOKENIZER_TEXTS], vocab_size=290).save_pretrained(other)
    r1 = expert_dir(tmp_path / "r1", 1, tiny_model_dir)
    r2 = expert_dir(tmp_path / "r2", 2, other)
    fails(["ensemble", "--config", write_config(tmp_path), "--experts", r1, r2, "--variant", "boost",
           "--out", tmp_path / "r2.json"],
          "different tokenizers", str(r2 / "model"), "same weak base")


def test_a_manifest_with_no_usable_experts(fails, tmp_path):
    r1 = expert_dir(tmp_path / "r1", 1, None, stopped=True)
    fails(["ensemble", "--config", write_config(tmp_path), "--experts", r1, "--variant", "boost",
           "--out", tmp_path / "r1.json"],
          "no usable expert", "stopped")


def test_an_expert_whose_model_is_missing(fails, tmp_path):
    r1 = expert_dir(tmp_path / "r1", 1, None)
    fails(["ensemble", "--config", write_config(tmp_path), "--experts", r1, "--variant", "boost",
           "--out", tmp_path / "r1.json"],
          str(r1 / "model"), "rerun `ensemw2s train-expert`")


# ---------------------------------------------------------------------------------------------
# data files


def test_split_too_small_for_the_sizes(fails, tmp_path):
    path = write_config(tmp_path, datasets=[{"name": "synthetic", "sizes": {"weak_train": 100000}}])
    fails(["prepare-data", "--config", path, "--dataset", "synthetic", "--out", tmp_path / "out"],
          "split weak_train needs 100000 easy rows", "lower datasets[].sizes.weak_train")


def test_empty_answer_in_a_data_file(fails, tmp_path):
    data = sciq_copy(tmp_path / "local", [SCIQ_ROW, {**SCIQ_ROW, "question": "Why?", "correct_answer": " "}])
    path = write_config(tmp_path, datasets=[{"name": "sciq"}])
    fails(["prepare-data", "--config", path, "--data-dir", data, "--dataset", "sciq", "--out", tmp_path / "out"],
          f"{data / 'sciq' / 'train.jsonl'} line 2", "correct choice is empty")


def test_data_file_with_a_missing_field(fails, tmp_path):
    row = {k: v for k, v in SCIQ_ROW.items() if k != "distractor3"}
    data = sciq_copy(tmp_path / "local", [SCIQ_ROW, SCIQ_ROW, row])
    path = write_config(tmp_path, datasets=[{"name": "sciq"}])
    fails(["prepare-data", "--config", path, "--data-dir", data, "--dataset", "sciq", "--out", tmp_path / "out"],
          f"{data / 'sciq' / 'train.jsonl'} line 3", "missing field 'distractor3'")


def test_invalid_json_line(fails, tmp_path):
    data = sciq_copy(tmp_path / "local", train_text=json.dumps(SCIQ_ROW) + "\n{\"question\": \"Why?\",\n")
    path = write_config(tmp_path, datasets=[{"name": "sciq"}])
    fails(["prepare-data", "--config", path, "--data-dir", data, "--dataset", "sciq", "--out", tmp_path / "out"],
          f"{data / 'sciq' / 'train.jsonl'} line 2", "invalid JSON")


def test_missing_local_copy(fails, tmp_path):
    path = write_config(tmp_path, datasets=[{"name": "sciq"}])
    fails(["prepare-data", "--config", path, "--data-dir", tmp_path / "empty", "--dataset", "sciq",
           "--out", tmp_path / "out"],
          str(tmp_path / "empty" / "sciq"), "point --data-dir")


def expert_argv(tmp_path: Path, data: Path, base: Path, round: int = 1, prev: Path | None = None) -> list:
    argv = ["train-expert", "--config", write_config(tmp_path), "--weak", "weak", "--dataset", "synthetic",
            "--seed", "0", "--variant", "boost", "--round", round, "--data", data, "--base", base,
            "--out", tmp_path / "experts" / f"r{round}"]
    return argv + (["--prev", prev] if prev is not None else [])


def test_training_rows_with_a_missing_field(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    rows = [json.loads(line) for line in (data / "weak_train.jsonl").read_text().splitlines()]
    del rows[2]["uid"]
    write_jsonl(data / "weak_train.jsonl", rows)
    fails(expert_argv(tmp_path, data, tiny_model_dir), f"{data / 'weak_train.jsonl'} line 3", "missing field(s) uid;")


def test_training_rows_with_an_empty_answer(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    rows = [json.loads(line) for line in (data / "weak_train.jsonl").read_text().splitlines()]
    rows[1]["answer"] = ""
    write_jsonl(data / "weak_train.jsonl", rows)
    fails(expert_argv(tmp_path, data, tiny_model_dir), f"{data / 'weak_train.jsonl'} line 2", "empty answer")


def test_evaluation_split_with_a_missing_field(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")  # its val rows have no choices and gold
    fails(["evaluate", "--config", write_config(tmp_path), "--dataset", "synthetic", "--data", data,
           "--model", tiny_model_dir, "--meta", "role=weak_base", "seed=0", "--out", tmp_path / "s.json"],
          f"{data / 'val.jsonl'} line 1", "missing field(s) choices, gold")


# ---------------------------------------------------------------------------------------------
# rounds, students, pseudo-labels


def test_round_below_one(fails, tmp_path, tiny_model_dir):
    fails(expert_argv(tmp_path, write_split_dir(tmp_path / "data"), tiny_model_dir, round=0), "--round", "got 0")


def test_missing_prev_for_a_later_round(fails, tmp_path, tiny_model_dir):
    fails(expert_argv(tmp_path, write_split_dir(tmp_path / "data"), tiny_model_dir, round=2),
          "round 2 needs --prev", "round 1")


def test_prev_of_the_wrong_round(fails, tmp_path, tiny_model_dir):
    prev = expert_dir(tmp_path / "r2", 2, None)
    fails(expert_argv(tmp_path, write_split_dir(tmp_path / "data"), tiny_model_dir, round=2, prev=prev),
          f"--prev {prev} holds round 2", "needs round 1")


def test_a_non_finite_training_loss(fails, tmp_path, tiny_model_dir, monkeypatch):
    from ensemw2s import training

    monkeypatch.setattr(training, "weighted_lm_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    fails(expert_argv(tmp_path, write_split_dir(tmp_path / "data"), tiny_model_dir),
          "train-expert boost round 1 (weak, synthetic, seed 0)", "training loss is nan at step 1",
          "lower training.learning_rate")


def test_weak_base_that_does_not_exist(fails, tmp_path):
    fails(expert_argv(tmp_path, write_split_dir(tmp_path / "data"), tmp_path / "models" / "weak"),
          str(tmp_path / "models" / "weak"), "prepare-model")


def student_argv(tmp_path: Path, data: Path, base: Path, labels: Path) -> list:
    return ["train-student", "--config", write_config(tmp_path), "--strong", "strong", "--seed", "0", "--data", data,
            "--base", base, "--labels", labels, "--out", tmp_path / "students" / "r1"]


def test_pseudo_labels_of_a_different_pool(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    labels = tmp_path / "other.jsonl"
    write_jsonl(labels, [{"uid": "elsewhere", "prompt": "Question: ?\nAnswer:", "answer": "red"}])
    fails(student_argv(tmp_path, data, tiny_model_dir, labels), str(labels), "student_pool does not have")


def test_pseudo_labels_with_an_empty_answer(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    pool = [json.loads(line) for line in (data / "student_pool.jsonl").read_text().splitlines()]
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, [{"uid": r["uid"], "prompt": r["prompt"], "answer": "" if i == 1 else "red"}
                         for i, r in enumerate(pool)])
    fails(student_argv(tmp_path, data, tiny_model_dir, labels), str(labels), f"uid {pool[1]['uid']}", "empty")


def test_a_student_without_its_supervisors_val_answers(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    pool = [json.loads(line) for line in (data / "student_pool.jsonl").read_text().splitlines()]
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, [{"uid": r["uid"], "prompt": r["prompt"], "answer": "red"} for r in pool])
    fails(student_argv(tmp_path, data, tiny_model_dir, labels), "pass --val-labels", "select_on_val: false")
    fails([*student_argv(tmp_path, data, tiny_model_dir, labels), "--val-labels", data / "gold" / "student_pool.jsonl"],
          "read only by the ceiling")


def test_a_student_reading_gold(fails, tmp_path, tiny_model_dir):
    data = write_split_dir(tmp_path / "data")
    fails(student_argv(tmp_path, data, tiny_model_dir, data / "gold" / "student_pool.jsonl"),
          "read only by the ceiling", "--gold")


def test_pseudo_labelling_from_the_gold_folder(fails, tmp_path):
    data = write_split_dir(tmp_path / "data")
    manifest = tmp_path / "r1.json"
    write_json(manifest, {"experts": [], "weights": [], "combine": "prob", "tokenizer": ""})
    fails(["pseudo-label", "--config", write_config(tmp_path), "--manifest", manifest, "--data", data / "gold",
           "--out", tmp_path / "r1.jsonl"],
          "must not read the gold", "parent of gold/")


def test_not_a_manifest(fails, tmp_path):
    data = write_split_dir(tmp_path / "data")
    pool = [json.loads(line) for line in (data / "student_pool.jsonl").read_text().splitlines()]
    write_jsonl(data / "student_pool.jsonl", [{**r, "choices": ["red", "blue"]} for r in pool])
    manifest = tmp_path / "r1.json"
    write_json(manifest, {"experts": ["x"]})
    fails(["pseudo-label", "--config", write_config(tmp_path), "--manifest", manifest, "--data", data,
           "--out", tmp_path / "r1.jsonl"],
          str(manifest), "not an ensemble manifest", "`ensemw2s ensemble`")


# ---------------------------------------------------------------------------------------------
# scores, metrics, reports


def test_evaluate_meta_without_a_value(fails, tmp_path, tiny_model_dir):
    fails(["evaluate", "--config", write_config(tmp_path), "--dataset", "synthetic", "--data", tmp_path,
           "--model", tiny_model_dir, "--meta", "role", "--out", tmp_path / "s.json"],
          "--meta 'role'", "KEY=VALUE")


def test_metrics_from_a_file_that_is_not_a_score_file(fails, tmp_path):
    bad = tmp_path / "scores.json"
    write_json(bad, {"acc": 0.5})
    fails(["metrics", "--config", write_config(tmp_path), "--scores", bad, "--out", tmp_path / "metrics.csv"],
          str(bad), "not a score file")


def test_unknown_report_name(fails, tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("weak_model\n")
    fails(["report", "--config", write_config(tmp_path), "--name", "expertz", "--metrics", metrics,
           "--out", tmp_path / "tables" / "x"],
          "unknown report 'expertz'", "Did you mean 'experts'?")
    assert not (tmp_path / "tables").exists()


def test_report_without_metrics(fails, tmp_path):
    fails(["report", "--config", write_config(tmp_path), "--name", "experts", "--metrics",
           tmp_path / "metrics.csv", "--out", tmp_path / "tables" / "experts"],
          "metrics file not found", "`ensemw2s metrics`")
