"""Hub models are fetched once, at a resolved commit, and every job reads that copy with the hub off.

A local directory stands in for the hub: only the two network calls (HfApi.model_info, which resolves a
revision, and snapshot_download, which downloads a commit) are replaced, by copies of a tiny checkpoint.
From the download onwards the code is the real one: prepare-model runs in its own process with
HF_HUB_OFFLINE=1 and an empty hub cache, so the fetched copy is the only place it can load from.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx2
import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub.errors import LocalEntryNotFoundError

from ensemw2s import cli
from ensemw2s.io import read_json
from ensemw2s.models import POINTER, load_causal_lm, load_tokenizer
from ensemw2s.provenance import record_path
from tests.conftest import BASE_CONFIG
from tests.test_workflow import REPO, dry_run, job_counts, snakemake

HUB_ID = "ensemw2s-test/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(monkeypatch, tiny_model_dir):
    """The stand-in hub: `main` resolves to COMMIT; a download copies tiny_model_dir. Returns the calls."""
    calls = []

    def model_info(self, repo_id, revision=None, **kwargs):
        calls.append(("model_info", repo_id, revision))
        return SimpleNamespace(sha=COMMIT)

    def snapshot_download(repo_id, revision=None, local_dir=None, **kwargs):
        calls.append(("snapshot_download", repo_id, revision))
        shutil.copytree(tiny_model_dir, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def hub_config(tmp_path: Path, **entry) -> Path:
    raw = copy.deepcopy(BASE_CONFIG)
    raw["results_dir"] = str(tmp_path / "results")
    raw["models"]["hubby"] = {"source": "hub", "id": HUB_ID, **entry}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_hub_model_is_fetched_at_a_commit_and_prepared_offline(hub, tmp_path, tiny_model_dir):
    cfg = hub_config(tmp_path, revision="main")
    fetched, prepared = tmp_path / "hub" / "models" / "hubby", tmp_path / "models" / "hubby"
    assert cli.main(["fetch", "--config", str(cfg), "--model", "hubby", "--out", str(fetched)]) == 0
    # the branch is resolved first and that commit downloaded: what is recorded is what was fetched
    assert hub == [("model_info", HUB_ID, "main"), ("snapshot_download", HUB_ID, COMMIT)]
    fetch_record = read_json(record_path(fetched))
    assert fetch_record["step"] == "fetch_model"
    assert fetch_record["extra"]["revision"] == "main" and fetch_record["extra"]["commit"] == COMMIT

    res = subprocess.run(
        [sys.executable, "-m", "ensemw2s", "prepare-model", "--config", str(cfg), "--model", "hubby",
         "--fetched", str(fetched), "--out", str(prepared)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")})
    assert res.returncode == 0, res.stderr
    assert json.loads((prepared / POINTER).read_text())["load"] == str(fetched)
    assert read_json(record_path(prepared))["extra"]["commit"] == COMMIT
    # the prepared model is the checkpoint the hub served, weight for weight
    got, want = load_causal_lm(prepared).state_dict(), load_causal_lm(tiny_model_dir).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert load_tokenizer(prepared).get_vocab() == load_tokenizer(tiny_model_dir).get_vocab()


def test_a_pinned_commit_is_downloaded_as_it_is(hub, tmp_path):
    pinned = "f" * 40
    fetched = tmp_path / "hub" / "models" / "hubby"
    assert cli.main(["fetch", "--config", str(hub_config(tmp_path, revision=pinned)), "--model", "hubby",
                     "--out", str(fetched)]) == 0
    assert hub == [("snapshot_download", HUB_ID, pinned)]
    assert read_json(record_path(fetched))["extra"]["commit"] == pinned


@pytest.mark.parametrize("call, error", [
    ("model_info", httpx2.ConnectError("[Errno -2] Name or service not known")),  # what no network raises
    ("snapshot_download", LocalEntryNotFoundError("cannot reach the hub")),
])
def test_a_failed_fetch_leaves_nothing_and_names_the_fix(hub, monkeypatch, tmp_path, capsys, call, error):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub.HfApi if call == "model_info" else huggingface_hub, call, fails)
    fetched = tmp_path / "hub" / "models" / "hubby"
    assert cli.main(["fetch", "--config", str(hub_config(tmp_path)), "--model", "hubby", "--out", str(fetched)]) == 2
    err = capsys.readouterr().err
    assert "models.hubby" in err and HUB_ID in err and "node with internet" in err
    assert not fetched.parent.exists() or not any(fetched.parent.iterdir())


def test_only_hub_models_are_fetched(tmp_path, capsys):
    assert cli.main(["fetch", "--config", str(hub_config(tmp_path)), "--model", "weak",
                     "--out", str(tmp_path / "w")]) == 2
    assert "only `source: hub` models are fetched" in capsys.readouterr().err


def test_the_paper_grid_fetches_each_hub_model_once_on_the_submitting_node(tmp_path):
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    hub_models = {m for m, spec in paper["models"].items() if spec["source"] == "hub"}
    args = ("--configfile", str(REPO / "config" / "paper.yaml"))
    res = snakemake("-n", "-p", "--cores", "1", "--directory", str(REPO), "--config", f"results_dir={tmp_path}", *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts = job_counts(res.stdout)
    assert counts["fetch_model"] == len(hub_models) == counts["prepare_model"]
    prepare = [line for line in res.stdout.splitlines() if " prepare-model " in line]
    for model in hub_models:
        (line,) = [c for c in prepare if f"--model {model} " in c]
        assert f"--fetched {tmp_path}/paper/hub/models/{model} " in line and "HF_HUB_OFFLINE=1 " in line
    fetches = [line for line in res.stdout.splitlines() if " fetch --config " in line]
    assert len([c for c in fetches if " --model " in c]) == len(hub_models)
    assert not any("HF_HUB_OFFLINE" in c for c in fetches)
    # the grid's hub datasets (quartz has no local copy) are fetched once too, rated and split offline
    hub_datasets = {d["name"] for d in paper["datasets"] if d.get("load_from") == "hub"} | {"quartz"}
    assert counts["fetch_dataset"] == len([c for c in fetches if " --dataset " in c]) == len(hub_datasets)
    ratings = [line for line in res.stdout.splitlines() if " rate-data " in line]
    splits = [line for line in res.stdout.splitlines() if " prepare-data " in line]
    assert ratings and splits and all("HF_HUB_OFFLINE=1 " in c for c in ratings + splits)
    quartz = [c for c in ratings if "--dataset quartz " in c]
    assert quartz and all(f"--fetched {tmp_path}/paper/hub/datasets/quartz " in c for c in quartz)
    assert all(" --ratings " in c and "--fetched" not in c for c in splits)  # splits read the rating, not the hub
    local = local_rules(tmp_path, *args)
    assert {"fetch_model", "fetch_dataset"} <= local and "prepare_model" not in local
    assert "fetch_model" not in dry_run(tmp_path)  # the default run's tiny models are not fetched


def local_rules(tmp_path: Path, *args: str) -> set[str]:
    """The rules Snakemake keeps on the submitting node under the SLURM executor plugin: Workflow.is_local,
    the test its scheduler makes before it submits a job, asked of the parsed workflow."""
    code = ("import sys; from snakemake.api import SnakemakeApi; from snakemake.settings.types import *\n"
            "from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry\n"
            "with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:\n"
            "    wf = api.workflow(snakefile=Path(sys.argv[1]), workdir=Path(sys.argv[2]),\n"
            "        resource_settings=ResourceSettings(), config_settings=ConfigSettings(\n"
            "            configfiles=[Path(p) for p in sys.argv[4:]], config={'results_dir': sys.argv[3]}))\n"
            "    workflow = wf._workflow\n"
            "    workflow._executor_plugin = ExecutorPluginRegistry().get_plugin('slurm')\n"
            "    print(' '.join(r.name for r in workflow.rules if workflow.is_local(r)))\n")
    configfiles = list(args[1:]) if args[:1] == ("--configfile",) else []
    res = subprocess.run([sys.executable, "-c", "from pathlib import Path\n" + code, str(REPO / "Snakefile"),
                          str(REPO), str(tmp_path), *configfiles], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return set(res.stdout.split())


def sciq_rows(split: str, n: int) -> list[dict]:
    """SciQ-schema rows with distinct questions of varied length (the `length` strategy rates them)."""
    return [{"question": f"{split} question {i}" + " about cells" * (i % 5), "correct_answer": f"answer {i}",
             "distractor1": f"wrong a{i}", "distractor2": f"wrong b{i}", "distractor3": f"wrong c{i}",
             "support": ""} for i in range(n)]


def test_a_hub_dataset_is_fetched_at_a_commit_and_split_offline(monkeypatch, tmp_path):
    """`load_from: hub` SciQ: the dataset repo is resolved and downloaded once (a stand-in writes its three
    split files); prepare-data then reads that copy in its own process with the hub switched off."""
    calls = []

    def dataset_info(self, repo_id, revision=None, **kwargs):
        calls.append(("dataset_info", repo_id, revision))
        return SimpleNamespace(sha=COMMIT)

    def snapshot_download(repo_id, revision=None, repo_type=None, local_dir=None, **kwargs):
        calls.append(("snapshot_download", repo_id, revision, repo_type))
        for split in ("train", "validation", "test"):
            rows = sciq_rows(split, 20)
            (Path(local_dir) / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    raw = copy.deepcopy(BASE_CONFIG)
    raw["results_dir"] = str(tmp_path / "results")
    raw["datasets"] = [{"name": "sciq", "load_from": "hub",
                        "sizes": {"weak_train": 10, "val": 5, "test_id": 5, "student_pool": 10, "test_ood": 10}}]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    fetched, splits = tmp_path / "hub" / "datasets" / "sciq", tmp_path / "data" / "sciq" / "s0"

    assert cli.main(["fetch", "--config", str(cfg), "--dataset", "sciq", "--out", str(fetched)]) == 0
    assert calls == [("dataset_info", "allenai/sciq", None), ("snapshot_download", "allenai/sciq", COMMIT, "dataset")]
    assert read_json(record_path(fetched))["extra"]["commit"] == COMMIT

    res = subprocess.run(
        [sys.executable, "-m", "ensemw2s", "prepare-data", "--config", str(cfg), "--dataset", "sciq",
         "--fetched", str(fetched), "--out", str(splits)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty")})
    assert res.returncode == 0, res.stderr
    manifest = read_json(splits / "manifest.json")
    assert manifest["rows"]["all"] == 60 and manifest["sizes"]["weak_train"] == 10
    train = [json.loads(line) for line in (splits / "weak_train.jsonl").read_text().splitlines()]
    assert all(r["question"].split()[0] in ("train", "validation", "test") for r in train)  # the fetched rows
    assert str(fetched) in read_json(record_path(splits))["inputs"]
