"""The reduced end-to-end workflow on SLURM: `snakemake --profile` with the real
snakemake-executor-plugin-slurm (and -jobstep, which runs each job through `srun`), against the stand-in
`sbatch`, `srun`, `sacct`, `squeue`, `scancel`, `sinfo` and `sacctmgr` of tests/slurm/standin.py, first on
PATH. The stand-ins run every job on this machine and record every call, so the test checks what a real
cluster would have been asked for:

- every job completes (sacct's State COMPLETED) and metrics.csv is byte-identical to a plain local run's of the same config (two
  clean local runs agree, tests/test_end_to_end.py);
- each sbatch carries its rule's GPUs, memory, runtime and CPUs from the config's `resources:`, and the
  account and partition of the profile's default-resources; srun asks for the same GPUs;
- a job whose first attempt fails is reported FAILED and resubmitted (the profile's `retries`), and the
  run still completes.

The profile is profiles/slurm/config.yaml with a test account and partition and short waits.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_end_to_end import RUN_TIMEOUT, _env, run_dir, snakemake, snakemake_cmd, workdir

STANDIN = Path(__file__).parent / "slurm" / "standin.py"
COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel", "sinfo", "sacctmgr")
ACCOUNT, PARTITION = "w2s_lab", "gpu_test"
# every step's resources, distinct numbers so each sbatch shows where its values came from; GPU steps
# ask for one GPU (gpu > 1 would launch a student on several processes, tests/test_training.py's job)
RESOURCES = {
    "prepare_model": {"gpu": 0, "mem_mb": 1100, "runtime": 11},
    "rate_data": {"gpu": 0, "mem_mb": 1250, "runtime": 12},
    "prepare_data": {"gpu": 0, "mem_mb": 1200, "runtime": 12},
    "train_expert": {"gpu": 1, "mem_mb": 1300, "runtime": 13, "cpus_per_gpu": 3},
    "ensemble_manifest": {"gpu": 0, "mem_mb": 1400, "runtime": 14},
    "pseudo_label": {"gpu": 1, "mem_mb": 1500, "runtime": 15, "cpus_per_gpu": 4},
    "train_student": {"gpu": 1, "mem_mb": 1600, "runtime": 16, "cpus_per_gpu": 5},
    "evaluate": {"gpu": 1, "mem_mb": 1700, "runtime": 17, "cpus_per_gpu": 6},
    "report": {"gpu": 0, "mem_mb": 1800, "runtime": 18},
}
STEP = {"train_ceiling": "train_student", "train_replicate": "train_student", "metrics": "report", "go_no_go": "report", "provenance": "report", "table": "report",
        "figure": "report"}  # rule -> step, where they differ
FAIL_FIRST = "rule_prepare_data_"  # the one job whose first attempt fails


def standin_bin(root: Path) -> Path:
    """One shim per SLURM command, running the stand-in with this Python."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for cmd in COMMANDS:
        shim = bin_dir / cmd
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDIN} {cmd} "$@"\n')
        shim.chmod(0o755)
    return bin_dir


def slurm_profile(root: Path) -> Path:
    """profiles/slurm with an account and partition set, and waits shortened for jobs that take seconds."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account=ACCOUNT, slurm_partition=PARTITION)
    profile.update({"jobs": 4, "latency-wait": 5, "slurm-init-seconds-before-status-checks": 1,
                    "slurm-keep-successful-logs": True})
    (root / "profile").mkdir()
    (root / "profile" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return root / "profile"


def rule_of(comment: str) -> str:
    """The rule of a job from the plugin's --comment, `rule_<rule>[_wildcards_<...>]`."""
    return comment.removeprefix("rule_").split("_wildcards_")[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain local run and a SLURM run of the same reduced config: their working dirs and the calls."""
    root = tmp_path_factory.mktemp("slurm")
    local = workdir(root / "local", resources=RESOURCES)
    start = time.perf_counter()
    res = snakemake(local, "--cores", "2")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(f"local run: {time.perf_counter() - start:.0f}s")

    cluster = workdir(root / "cluster", resources=RESOURCES)
    state = root / "state"
    state.mkdir()
    env = _env()
    env.update(PATH=f"{standin_bin(root)}:{env['PATH']}", STANDIN_SLURM_DIR=str(state),
               STANDIN_SLURM_ACCOUNTS=ACCOUNT, STANDIN_SLURM_FAIL_FIRST=FAIL_FIRST)
    start = time.perf_counter()
    res = subprocess.run(snakemake_cmd(cluster, "--profile", str(slurm_profile(root))), cwd=cluster, env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    print(f"SLURM run: {time.perf_counter() - start:.0f}s")
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-8000:]
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    jobs = [json.loads(p.read_text()) for p in sorted((state / "jobs").glob("*.json"))]
    return {"local": local, "cluster": cluster, "log": res.stdout + res.stderr, "calls": calls, "jobs": jobs}


def test_every_job_completes_with_the_local_runs_numbers(runs):
    submitted = [job for job in runs["jobs"] if not job["failed_on_purpose"]]
    assert submitted and all(job["state"] == "COMPLETED" for job in submitted)
    assert (run_dir(runs["cluster"]) / "metrics.csv").read_bytes() == (run_dir(runs["local"]) / "metrics.csv").read_bytes()


def test_each_sbatch_carries_its_rules_resources_account_and_partition(runs):
    rules = set()
    for job in runs["jobs"]:
        opts, rule = job["opts"], rule_of(job["opts"]["--comment"])
        want = RESOURCES[STEP.get(rule, rule)]
        rules.add(rule)
        assert (opts["-A"], opts["-p"]) == (ACCOUNT, PARTITION), opts
        assert (opts["--mem"], opts["-t"]) == (str(want["mem_mb"]), str(want["runtime"])), (rule, opts)
        assert opts["--requeue"] is True, opts  # the profile's slurm-requeue
        if want["gpu"]:
            assert (opts["--gpus"], opts["--cpus-per-gpu"]) == (str(want["gpu"]), str(want["cpus_per_gpu"])), opts
        else:
            assert "--gpus" not in opts and opts["--cpus-per-task"] == "1", opts  # threads: 1
    assert rules == set(RESOURCES) - {"report"} | {"train_ceiling", "train_replicate", "metrics", "provenance", "table",
                                                   "figure", "go_no_go"}
    steps = [c for c in runs["calls"] if c["cmd"] == "srun"]  # each job's step asks for the job's GPUs
    gpus = {job["id"]: job["opts"].get("--gpus") for job in runs["jobs"]}
    assert sorted(c["job"] for c in steps) == sorted(j["id"] for j in runs["jobs"] if not j["failed_on_purpose"])
    for call in steps:
        assert (f"--gpus={gpus[call['job']]}" in call["argv"]) == bool(gpus[call["job"]]), call


def test_a_failed_job_is_reported_and_retried(runs):
    attempts = [job for job in runs["jobs"] if job["opts"]["--comment"].startswith(FAIL_FIRST)]
    assert [job["state"] for job in attempts] == ["FAILED", "COMPLETED"]
    assert f"SLURM-job '{attempts[0]['id']}' failed, SLURM status is: 'FAILED'" in runs["log"]
