"""The real workflow end to end on a reduced config (tiny models, 60-row splits, T = 2; about 1-2 minutes
per run on 2 cores), and a real `ensemw2s train-expert` killed and resumed.

- a complete run makes every target of `rule all`, every step output has its provenance record, and a
  second `snakemake -n` has nothing to do;
- a changed config key reruns only the jobs it influences (Snakemake's params trigger on `h`);
- a run killed midway (SIGKILL to Snakemake's process group) and rerun with `--rerun-incomplete` ends
  with a metrics.csv byte-identical to the uninterrupted run's: two clean runs with one seed agree;
- a train-expert process killed right after its first checkpoint (it SIGKILLs itself there, the
  ENSEMW2S_KILL_AFTER_FIRST_SAVE hook of training.py) resumes from it and writes the numbers an
  uninterrupted run writes.

Each run has its own working directory (Snakemake's .snakemake/ with its locks and metadata) holding a
link to config/, which the Snakefile names relative to the working directory.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ensemw2s import config as config_mod
from ensemw2s import steps
from ensemw2s.figures import FIGURES
from ensemw2s.tables import TABLES, tables_for
from ensemw2s.splitdir import SPLITS
from ensemw2s.training import KILL_AFTER_FIRST_SAVE
from tests.conftest import REPO, SHARED_DATA
from tests.test_workflow import job_counts

ROLES = {"weak_base", "strong_base", "expert", "ensemble", "student", "replicate", "ceiling"}
# just enough training that the ensemble's greedy answers are not empty (else no student can train)
TINY = {"arch": "llama", "num_heads": 4, "vocab_size": 300, "max_position": 128, "pretrain_steps": 60,
        "pretrain_docs": 400, "pretrain_batch_size": 16}
TRAIN = {"batch_size": 4, "max_length": 64, "save_steps": 10}
# merged over config/config.yaml by Snakemake: the same model names, every size key given here
REDUCED = {
    "run": "e2e",
    "data_dir": str(SHARED_DATA),
    "seeds": [0],
    "models": {
        "tiny-weak": {"source": "tiny", "tiny": {**TINY, "hidden_size": 32, "num_layers": 1, "intermediate_size": 64}},
        "tiny-strong": {"source": "tiny", "tiny": {**TINY, "hidden_size": 48, "num_layers": 2, "intermediate_size": 96}},
    },
    "pairs": [{"weak": "tiny-weak", "strong": "tiny-strong"}],
    "datasets": [{"name": "synthetic", "sizes": {s: 60 for s in SPLITS}}],
    # boost, and the controls end to end: the partition (2 members, routed and token-level) and the longer expert
    "boosting": {"rounds": 2, "variants": {"boost": {}, "partition": {"kind": "partition"}, "longer": {"kind": "longer"}}},
    "training": {"expert": {**TRAIN, "epochs": 4, "learning_rate": 0.01},
                 "student": {**TRAIN, "epochs": 2, "learning_rate": 0.005}},
    "evaluation": {"batch_size": 32, "max_new_tokens": 6, "bootstrap": 20, "limit": 30},
}
EXPERT = "experts/tiny-weak/synthetic/s0/boost"
RUN_TIMEOUT = 900  # seconds for one workflow run: generous for a loaded CI machine


def _env() -> dict[str, str]:
    """The test's environment without the venv's bin/ on PATH: Snakemake must find `ensemw2s` itself."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != bin_dir)
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def workdir(root: Path, **changes) -> Path:
    """A Snakemake working directory with the reduced config (plus `changes`) and results under it."""
    root.mkdir(parents=True)
    (root / "config").symlink_to(REPO / "config")
    cfg = copy.deepcopy(REDUCED)
    cfg.update(changes)
    cfg["results_dir"] = str(root / "results")
    (root / "reduced.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def snakemake_cmd(wd: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(wd),
            "--configfile", str(wd / "reduced.yaml"), *args]


def snakemake(wd: Path, *args: str, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    res = subprocess.run(snakemake_cmd(wd, *args), cwd=wd, env=_env(), capture_output=True, text=True,
                         timeout=timeout)
    return res


def run_dir(wd: Path) -> Path:
    return wd / "results" / "e2e"


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table ({} when there is nothing to do)."""
    return job_counts(output) if "Job stats:" in output else {}


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session and everything it started; wait until all are gone."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("processes of the killed group are still alive")


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def checkpoint_written(ckpt_dir: Path) -> bool:
    """A complete Trainer checkpoint exists (trainer_state.json is written last)."""
    return any(ckpt_dir.glob("checkpoint-*/trainer_state.json"))


# ---------------------------------------------------------------------------------------------
# one complete run, shared by the tests below


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> Path:
    wd = workdir(tmp_path_factory.mktemp("e2e") / "complete")
    start = time.perf_counter()
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(f"complete run: {time.perf_counter() - start:.0f}s")
    (wd / "metrics.snapshot.csv").write_bytes((run_dir(wd) / "metrics.csv").read_bytes())
    (wd / "config.snapshot.yaml").write_bytes((run_dir(wd) / "config.yaml").read_bytes())
    return wd


def test_every_target_of_rule_all_exists(complete):
    run = run_dir(complete)
    assert (run / "provenance.json").is_file()
    assert tables_for(config_mod.load(run / "config.yaml")) == TABLES.names()  # the controls and A/A tables too
    for name in TABLES.names():
        for ext in ("csv", "md", "tex"):
            assert (run / "tables" / f"{name}.{ext}").stat().st_size > 0
    for name in FIGURES.names():
        for ext in ("png", "pdf"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 0
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    assert {"score", "seed", "metric", "value", "ci_low", "ci_high"} <= set(columns)
    roles = {row.split(",")[columns.index("role")] for row in rows}
    assert roles == ROLES


def test_a_second_dry_run_has_nothing_to_do(complete):
    res = snakemake(complete, "-n", "--cores", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout


def is_record(path: Path) -> bool:
    return path.name.endswith(".provenance.json")


def test_every_step_output_has_a_provenance_record(complete):
    run = run_dir(complete)
    artefacts = {
        "prepare_model": [run / "models" / "tiny-weak", run / "models" / "tiny-strong"],
        "rate_data": [run / "ratings" / "synthetic"],
        "prepare_data": [run / "data" / "synthetic" / "s0"],
        "train_expert": [run / EXPERT / "r1", run / EXPERT / "r2"],
        "ensemble_manifest": [p for p in sorted((run / "ensembles").rglob("r*.json")) if not is_record(p)],
        "pseudo_label": sorted((run / "pseudo").rglob("r*.jsonl")),
        "train_student": [p for p in sorted((run / "students").glob("*/*/*/*/r*")) if p.is_dir()]
                         + [p for p in sorted((run / "replicates").glob("*/*/*/*/r*")) if p.is_dir()]  # A/A
                         + [run / "ceiling" / "tiny-strong" / "synthetic" / "s0"],
        "evaluate": [p for p in sorted((run / "scores").rglob("*.json")) if not is_record(p)],
        "metrics": [run / "metrics.csv"],
    }
    summary = json.loads((run / "provenance.json").read_text())
    recorded = {s["artefact"]: s for s in summary["steps"] if "artefact" in s}
    for step, paths in artefacts.items():
        assert paths, step
        for path in paths:
            assert path.exists(), path
            rec = json.loads((path.parent / (path.name + ".provenance.json")).read_text())
            assert rec["step"] == step and rec["artefact"] == str(path)
            assert rec["config_keys"] and rec["commit"] and rec["timestamp"] and rec["wall_time_s"] > 0
            assert recorded[str(path)]["step"] == step  # aggregated into the run's provenance.json
    expert = json.loads((run / EXPERT / "r2.provenance.json").read_text())
    cfg = config_mod.load(run / "config.yaml")  # the resolved config the jobs read
    assert expert["config_keys"] == sorted(steps.keys(cfg, "train_expert", weak="tiny-weak", variant="boost"))
    # the record's identity is the rule's rerun trigger (common.smk's step_hash): one table, one hash
    assert expert["config_hash"] == steps.identity(cfg, "train_expert", weak="tiny-weak", variant="boost")
    assert str(run / EXPERT / "r1" / "weights.pt") in expert["inputs"] and expert["tokens_processed"] > 0
    assert summary["totals"]["tokens_processed"] > 0 and summary["totals"]["wall_time_s"] > 0


def test_a_changed_key_reruns_only_the_jobs_it_influences(complete):
    extra = complete / "student_lr.yaml"
    extra.write_text(yaml.safe_dump({"training": {"student": {"learning_rate": 0.0123}}}))
    res = snakemake(complete, "-n", "--cores", "2", "--configfile", str(complete / "reduced.yaml"), str(extra))
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = planned_jobs(res.stdout)
    assert jobs["train_student"] == 2 + 1 and jobs["train_replicate"] == 1 and jobs["train_ceiling"] == 1
    # the students' (boost r1, r2; longer r1), the replicate's, the ceiling's
    assert jobs["evaluate"] == 3 + 1 + 1 and jobs["metrics"] == 1
    for untouched in ("prepare_model", "rate_data", "prepare_data", "train_expert", "ensemble_manifest", "pseudo_label"):
        assert untouched not in jobs, (untouched, jobs)

    extra.write_text(yaml.safe_dump({"evaluation": {"bootstrap": 50}}))
    res = snakemake(complete, "-n", "--cores", "2", "--configfile", str(complete / "reduced.yaml"), str(extra))
    jobs = planned_jobs(res.stdout)
    assert jobs.get("metrics") == 1 and not any(rule.startswith(("train_", "evaluate")) for rule in jobs), jobs


# ---------------------------------------------------------------------------------------------
# interruptions


def test_a_killed_run_resumes_to_a_byte_identical_metrics_csv(complete, tmp_path):
    wd = workdir(tmp_path / "killed")
    run = run_dir(wd)
    log = open(wd / "snakemake.log", "w")
    proc = subprocess.Popen(snakemake_cmd(wd, "--cores", "2"), cwd=wd, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    # the first expert is done and the second is training: kill with round 2 part-way (checkpoint or not)
    wait_for(proc, lambda: (run / EXPERT / "r1").is_dir() and (checkpoint_written(run / EXPERT / "r2.ckpt")
                                                                 or (run / EXPERT / "r2").is_dir()),
             "the first expert")
    kill_group(proc)
    log.close()
    assert not (run / "metrics.csv").exists()

    # metrics.csv is the target (the reports after it were made by the complete run); after `--`, since
    # --configfile would take it as another config file
    resume = ("--cores", "2", "--rerun-incomplete", "--", str(run / "metrics.csv"))
    res = snakemake(wd, *resume)
    assert res.returncode != 0 and "--unlock" in res.stdout + res.stderr  # a killed Snakemake leaves its lock
    assert snakemake(wd, "--unlock").returncode == 0
    res = snakemake(wd, *resume)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]

    assert (run / "metrics.csv").read_bytes() == (complete / "metrics.snapshot.csv").read_bytes()
    assert not (run / EXPERT / "r2.ckpt").exists()  # checkpoints go once the expert is written


def test_a_killed_train_expert_resumes_from_its_checkpoint(complete, tmp_path):
    """Round 2 (resampled token weights) of a real train-expert process, killed after its first checkpoint."""
    run = run_dir(complete)
    cfg = yaml.safe_load((complete / "config.snapshot.yaml").read_text())
    cfg["training"]["expert"]["save_steps"] = 5  # 60 steps (4 epochs of 15), a checkpoint every 5
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))

    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "ensemw2s", "train-expert", "--config", str(config), "--weak", "tiny-weak",
                "--dataset", "synthetic", "--seed", "0", "--variant", "boost", "--round", "2",
                "--data", str(run / "data" / "synthetic" / "s0"), "--base", str(run / "models" / "tiny-weak"),
                "--prev", str(run / EXPERT / "r1"), "--out", str(out)]

    straight, resumed = tmp_path / "straight" / "r2", tmp_path / "resumed" / "r2"
    res = subprocess.run(argv(straight), env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr[-5000:]

    # the process SIGKILLs itself right after its first checkpoint (step 5) is on disk (the training hook):
    # a kill at a defined step, whatever the machine's speed
    ckpt = resumed.parent / "r2.ckpt"
    res = subprocess.run(argv(resumed), env={**_env(), KILL_AFTER_FIRST_SAVE: "1"}, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
    assert res.returncode == -signal.SIGKILL, res.stderr[-5000:]
    assert not resumed.exists()  # the output appears only once complete
    assert [p.name for p in ckpt.glob("checkpoint-*")] == ["checkpoint-5"] and checkpoint_written(ckpt)

    res = subprocess.run(argv(resumed), env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr[-5000:]
    fit = json.loads((resumed / "fit.json").read_text())
    assert fit["resumed_from"] == str(ckpt / "checkpoint-5") and fit["global_step"] == 60
    assert json.loads((straight / "fit.json").read_text())["resumed_from"] is None

    a, b = (json.loads((d / "boosting.json").read_text()) for d in (straight, resumed))
    timing = ("wall_time_s",)
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    wa, wb = (torch.load(d / "weights.pt", weights_only=True) for d in (straight, resumed))
    assert wa["uid"] == wb["uid"] and torch.equal(wa["weights"], wb["weights"])
    rec = json.loads((resumed.parent / "r2.provenance.json").read_text())
    assert rec["extra"]["resumed_from"] == fit["resumed_from"]
    shutil.rmtree(tmp_path / "straight")


# ---------------------------------------------------------------------------------------------
# extending the suite without editing the package

PLUGIN = '''"""A combine rule of one's own: at each token, the renormalised max over the weighted experts."""
import torch

from ensemw2s.combine import Combiner, choose_argmax
from ensemw2s.kinds import COMBINERS


def combine_max(expert_lp, w):
    weighted = expert_lp + w.log().view(-1, *[1] * (expert_lp.dim() - 1))
    return torch.log_softmax(weighted.amax(dim=0), dim=-1)


COMBINERS.add("max", Combiner(combine_max, choose_argmax, None))
'''


def test_a_variant_and_a_combine_rule_are_added_as_files(tmp_path):
    """A new variant (a config entry) that uses a new combine rule (a plugin file named by the config):
    two files, no package edit, and the tiny workflow runs them end to end."""
    plugin = tmp_path / "max_combine.py"
    plugin.write_text(PLUGIN)
    wd = workdir(tmp_path / "wd", plugins=[str(plugin)],
                 boosting={"rounds": 2, "variants": {"boost": {}, "boost-ada-max": {"prior": "none", "combine": "max"}}})
    res = snakemake(wd, "--cores", "2")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    run = run_dir(wd)
    manifest = json.loads((run / "ensembles/tiny-weak/synthetic/s0/boost-ada-max/r2.json").read_text())
    assert manifest["combine"] == "max" and manifest["weighting"] == "alpha"
    assert all("/boost-ada-max/r" in e for e in manifest["experts"])  # its own experts (prior none trains differently)
    record = json.loads((run / "experts/tiny-weak/synthetic/s0/boost-ada-max/r2/boosting.json").read_text())
    assert record["prior"] == "none" and record["prior_term"] == 0.0
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("ensemble")
    named = {row.split(",")[col] for row in rows}
    assert {"boost", "boost-ada-max"} <= named
    assert "boost-ada-max" in (run / "tables" / "ablations.md").read_text()
