"""The Snakemake DAG: it expands over the config, accepts new pairs as config entries, and its profiles work.

Dry runs only (seconds); the end-to-end runs are in tests/test_end_to_end.py.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table of a dry run."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def dry_run(tmp_path: Path, *extra: str) -> dict[str, int]:
    res = snakemake("-n", "--cores", "1", "--directory", str(REPO), "--config", f"results_dir={tmp_path}", *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return job_counts(res.stdout)


SEEDS = len(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["seeds"])  # 3: every per-seed job x 3


def test_default_dag_expands_rounds_and_roles(tmp_path):
    counts = dry_run(tmp_path)
    # per seed: T = 3 boost experts and 3 partition members; ensembles boost r1..3, boost-uniform r2..3 (r1 is
    # the single expert) and partition r3 (its members are not an ensemble before r = T; it teaches no student)
    assert SEEDS == 3
    assert counts["train_expert"] == SEEDS * (3 + 3)
    assert counts["ensemble_manifest"] == SEEDS * (3 + 2 + 1)
    assert counts["pseudo_label"] == SEEDS * 5
    assert counts["train_student"] == SEEDS * 5
    assert counts["train_ceiling"] == SEEDS
    assert counts["prepare_model"] == 2  # the tiny bases are pretrained once, for every seed
    assert counts["train_replicate"] == SEEDS  # the A/A control (evaluation.aa_replicate)
    # weak and strong base, ceiling, 6 experts, 5 ensembles (r >= 2), 5 students, the A/A replicate:
    # one rule scores all
    assert counts["evaluate"] == SEEDS * (2 + 1 + 6 + 5 + 5 + 1)
    assert counts["table"] == 12 and counts["figure"] == 6
    assert counts["metrics"] == 1 and counts["provenance"] == 1


def test_a_new_pair_is_one_config_entry(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    extra = tmp_path / "extra.yaml"
    models = {"tiny-strong2": {"source": "tiny", "tiny": {**cfg["models"]["tiny-strong"]["tiny"], "num_layers": 3}}}
    extra.write_text(yaml.safe_dump({
        "models": models,
        "pairs": cfg["pairs"] + [{"weak": "tiny-weak", "strong": "tiny-strong2"}],
    }))
    before = dry_run(tmp_path)
    after = dry_run(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"), str(extra))
    assert after["prepare_model"] == before["prepare_model"] + 1
    assert after["train_student"] == 2 * before["train_student"]  # the new pair's students
    assert after["train_ceiling"] == before["train_ceiling"] + SEEDS
    assert after["train_expert"] == before["train_expert"]  # same weak model: experts are shared


def test_students_select_on_their_supervisors_val_answers_only(tmp_path):
    """Every student's command selects on its own ensemble's val answers (pseudo-label's --val-out) and
    never names val.jsonl; the ceiling selects on gold val, so it takes no --val-labels."""
    res = snakemake("-n", "-p", "--cores", "1", "--directory", str(REPO), "--config", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stdout + res.stderr
    commands = [line for line in res.stdout.splitlines() if " ensemw2s " in line]
    pseudo = {re.search(r"--out (\S+)", c).group(1): re.search(r"--val-out (\S+)", c).group(1)
              for c in commands if " pseudo-label " in c}
    students = [c for c in commands if " train-student " in c and " --labels " in c and " --replicate " not in c]
    replicates = [c for c in commands if " train-student " in c and " --replicate " in c]
    assert len(pseudo) == len(students) == SEEDS * 5 and len(replicates) == SEEDS
    for c in students + replicates:
        labels, val = re.search(r"--labels (\S+)", c).group(1), re.search(r"--val-labels (\S+)", c).group(1)
        assert val == pseudo[labels] and "val.jsonl" not in c.replace(val, "")
    ceiling = [c for c in commands if " train-student " in c and " --gold " in c]
    assert len(ceiling) == SEEDS and all("--val-labels" not in c for c in ceiling)


def test_paper_grid_dry_run_lists_every_job(tmp_path):
    """The grid's job counts (how fast the DAG parses is a benchmark's question, not a test's)."""
    counts = dry_run(tmp_path, "--configfile", str(REPO / "config" / "paper.yaml"))
    # 4 weak models x 3 datasets x 3 seeds x 3 variants x 5 rounds
    assert counts["train_expert"] == 4 * 3 * 3 * 3 * 5
    # 6 pairs x 3 datasets x 3 seeds x (3 variants x 5 rounds + boost-uniform r2..5)
    assert counts["train_student"] == 6 * 3 * 3 * (15 + 4)


def test_parsing_the_paper_grid_imports_no_torch(tmp_path):
    """The DAG of the paper grid parses with torch and transformers unimportable (stand-ins on PYTHONPATH
    that raise on import): the config, the registries and the contracts it reads are light modules."""
    for name in ("torch", "transformers", "peft"):
        (tmp_path / "blocked" / name).mkdir(parents=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(
            f"raise RuntimeError('{name} imported while the DAG was parsed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocked")}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n", "--cores", "1",
           "--directory", str(REPO), "--configfile", str(REPO / "config" / "paper.yaml"),
           "--config", f"results_dir={tmp_path / 'results'}"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert job_counts(res.stdout)["train_expert"] == 4 * 3 * 3 * 3 * 5
    assert not (tmp_path / "results").exists()  # a dry run writes nothing, not even the resolved config


def test_a_new_variant_is_one_config_entry(tmp_path):
    """A variant with its own training settings trains its own experts; one that only combines differently
    (here: equal weights and the vote rule) shares the experts of the first variant that trains like it."""
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"boosting": {"variants": {
        "boost": {}, "boost-adaboost": {"prior": "none"}, "boost-vote": {"combine": "vote"}}}}))
    counts = dry_run(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"), str(extra))
    assert counts["train_expert"] == SEEDS * 2 * 3  # boost and boost-adaboost; boost-vote reuses boost's
    # every variant is an ensemble at r = 1..3, but boost-vote's r = 1 is boost's h_1 alone, made once
    assert counts["ensemble_manifest"] == SEEDS * (3 + 3 + 2)
    res = snakemake("-n", "-p", "--cores", "1", "--directory", str(REPO), "--config", f"results_dir={tmp_path}",
                    "--configfile", str(REPO / "config" / "config.yaml"), str(extra))
    experts = re.findall(r"--experts (.*?) --variant boost-vote ", res.stdout)
    assert experts and all("/boost/r" in path for line in experts for path in line.split())


def test_slurm_profile_dry_run(tmp_path):
    res = snakemake("--profile", "profiles/slurm", "-n", "--config", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "train_expert" in res.stdout


def test_bad_config_fails_at_load_with_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("boosting: {alpah: samme}\n")
    res = snakemake("-n", "--cores", "1", "--configfile", str(REPO / "config" / "config.yaml"), str(bad))
    assert res.returncode != 0
    assert "alpah" in res.stdout + res.stderr


def test_one_aa_replicate_per_seed_and_pair(tmp_path):
    """The A/A control: one train_replicate job per dataset, seed and pair, trained from the same labels as the
    boost r = 1 student with --replicate 1 (only its seed differs); none with evaluation.aa_replicate: false."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"seeds": [0, 1, 2]}))
    res = snakemake("-n", "-p", "--cores", "1", "--directory", str(REPO), "--config", f"results_dir={tmp_path}",
                    "--configfile", str(REPO / "config" / "config.yaml"), str(extra))
    assert res.returncode == 0, res.stdout + res.stderr
    counts = job_counts(res.stdout)
    assert counts["train_replicate"] == 3 * len(cfg["pairs"]) * len(cfg["datasets"])
    commands = [line for line in res.stdout.splitlines() if " train-student " in line]
    replicates = [c for c in commands if " --replicate 1 " in c]
    assert len(replicates) == 3 and all(re.search(r"--out \S+/replicates/\S+/s\d/boost/r1\b", c) for c in replicates)
    students = {re.search(r"--seed (\d+)", c).group(1): c for c in commands
                if "/students/" in c and "/boost/r1 " in c + " "}
    for c in replicates:
        seed = re.search(r"--seed (\d+)", c).group(1)
        same = lambda cmd: re.sub(r" --replicate 1| --out \S+", "", cmd.split(" > ")[0])  # noqa: E731
        assert same(c) == same(students[seed])  # the same labels, data, base and val answers
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"seeds": [0, 1, 2], "evaluation": {**cfg.get("evaluation", {}), "aa_replicate": False}}))
    counts_off = dry_run(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"), str(off))
    assert "train_replicate" not in counts_off
    assert counts_off["evaluate"] == counts["evaluate"] - 3 and counts_off["table"] == counts["table"] - 1


def test_partition_and_longer_controls_have_their_own_rounds(tmp_path):
    """partition: T members, its ensemble at r = T only (scored, no pseudo-labels or students); longer: one
    expert (r = 1), its ensemble of one teaches a student at r = 1."""
    base, both = tmp_path / "base.yaml", tmp_path / "controls.yaml"
    base.write_text(yaml.safe_dump({"boosting": {"variants": {"boost": {}}}}))
    both.write_text(yaml.safe_dump({"boosting": {"variants": {
        "boost": {}, "partition": {"kind": "partition"}, "longer": {"kind": "longer"}}}}))
    config = str(REPO / "config" / "config.yaml")
    before, after = (dry_run(tmp_path, "--configfile", config, str(p)) for p in (base, both))
    assert after["train_expert"] - before["train_expert"] == SEEDS * (3 + 1)
    assert after["ensemble_manifest"] - before["ensemble_manifest"] == SEEDS * (1 + 1)  # partition r3, longer r1
    assert after["pseudo_label"] - before["pseudo_label"] == SEEDS * 1  # longer r1 only
    assert after["train_student"] - before["train_student"] == SEEDS * 1
    assert after["evaluate"] - before["evaluate"] == SEEDS * ((3 + 1) + 1 + 1)  # experts, partition r3, student
    assert after["table"] - before["table"] == 1  # the controls table, only with a control variant
    res = snakemake("-n", "-p", "--cores", "1", "--directory", str(REPO), "--config", f"results_dir={tmp_path}",
                    "--configfile", config, str(both))
    assert "--variant longer --round 1 " in res.stdout and "--variant longer --round 2 " not in res.stdout
    assert not re.search(r"pseudo-label .*/partition/", res.stdout)
