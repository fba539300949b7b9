"""provenance.py: per-artefact records and the run's provenance.json."""
from __future__ import annotations

import subprocess

import pytest

from ensemw2s import provenance as P
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import read_json, sha256_file

BENCHMARK = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n" \
            "12.5\t0:00:12\t2048.0\t4096.0\t1900.0\t1950.0\t1.0\t2.0\t95.0\t11.9\n"


def test_record_beside_the_artefact(tmp_path, make_config):
    cfg = make_config()
    data = tmp_path / "val.jsonl"
    data.write_text('{"uid": "a"}\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "scores" / "x.json"
    path = P.record(out, cfg, ["evaluation"], [data, model],
                    {"step": "evaluate", "wall_time_s": 1.5, "tokens_processed": 42, "note": "kept"})
    assert path == tmp_path / "scores" / "x.json.provenance.json" == P.record_path(out)
    rec = read_json(path)
    assert rec["artefact"] == str(out) and rec["step"] == "evaluate"
    assert rec["config_keys"] == ["evaluation"] and rec["config_hash"] == cfg.hash("evaluation")
    assert rec["inputs"] == {str(data): sha256_file(data), str(model): P.input_hash(model)}
    assert (rec["wall_time_s"], rec["tokens_processed"], rec["extra"]) == (1.5, 42, {"note": "kept"})
    assert set(rec["versions"]) == {"torch", "transformers", "peft", "lm_eval", "datasets", "ensemw2s"}
    assert rec["versions"]["lm_eval"] == "0.4.13"
    assert rec["hardware"]["cpu_count"] >= 1 and isinstance(rec["hardware"]["gpus"], list)
    assert rec["seeds"] == list(cfg.seeds) and rec["timestamp"]


def test_config_hash_depends_only_on_the_named_keys(make_config):
    a, b = make_config(), make_config(evaluation={"batch_size": 2, "max_new_tokens": 8, "bootstrap": 50})
    assert a.hash("boosting") == b.hash("boosting")
    assert a.hash("evaluation") != b.hash("evaluation")


def test_directory_hash_covers_names_and_contents(tmp_path):
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(b"1")
    (d / "sub" / "b.bin").write_bytes(b"2")
    first = P.input_hash(d)
    assert P.input_hash(d) == first
    (d / "sub" / "b.bin").write_bytes(b"3")
    assert P.input_hash(d) != first
    (d / "sub" / "b.bin").write_bytes(b"2")
    (d / "a.bin").rename(d / "c.bin")
    assert P.input_hash(d) != first  # same bytes under another name is another input
    with pytest.raises(UserError, match="does not exist"):
        P.input_hash(tmp_path / "missing")


def test_git_commit_of_the_repo_and_outside_git(tmp_path):
    here = P.git_commit()
    head = subprocess.run(["git", "-C", str(P.REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert here["commit"] == head.stdout.strip() and isinstance(here["dirty"], bool)
    assert P.git_commit(tmp_path) == {"commit": "unknown", "dirty": None}


def test_run_provenance_aggregates_records_and_benchmarks(tmp_path, make_config):
    cfg = make_config()
    r1 = P.record(tmp_path / "a.json", cfg, ["evaluation"], [], {"step": "evaluate", "wall_time_s": 2.0,
                                                                 "tokens_processed": 100})
    r2 = P.record(tmp_path / "b.json", cfg, ["boosting", "training"], [], {"step": "train_expert", "wall_time_s": 3.0,
                                                                           "tokens_processed": 50})
    bench = tmp_path / "run" / "benchmarks" / "scores" / "sciq_s0_expert.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text(BENCHMARK)
    out = tmp_path / "run" / "provenance.json"
    summary = P.write_run_provenance(cfg, [r2, bench, r1], out)
    assert read_json(out) == summary
    assert summary["config"] == cfg.raw and summary["config_hash"] == cfg.hash()
    assert summary["seeds"] == list(cfg.seeds) and summary["commit"] == P.git_commit()["commit"]
    steps = {s["step"]: s for s in summary["steps"]}
    assert set(steps) == {"evaluate", "train_expert", "scores/sciq_s0_expert"}
    assert steps["scores/sciq_s0_expert"]["wall_time_s"] == 12.5
    assert steps["scores/sciq_s0_expert"]["max_rss_mb"] == 2048.0
    assert steps["train_expert"]["config_hash"] == cfg.hash("boosting", "training")
    # wall time from the job benchmarks (every job has one), tokens from the records
    assert summary["totals"] == {"steps": 3, "wall_time_s": 12.5, "tokens_processed": 150}


def test_run_provenance_names_each_datasets_student_pool(tmp_path, make_config):
    """The tier every dataset's pool is drawn from: easy unless the config says hard."""
    cfg = make_config(datasets=[{"name": "synthetic"}, {"name": "arc", "student_pool": "hard"}])
    assert P.write_run_provenance(cfg, [], tmp_path / "p.json")["student_pool"] == {"synthetic": "easy", "arc": "hard"}


def test_run_provenance_from_records_only_sums_their_time(tmp_path, make_config):
    cfg = make_config()
    recs = [P.record(tmp_path / f"{i}.json", cfg, [], [], {"wall_time_s": 1.25}) for i in range(2)]
    assert P.write_run_provenance(cfg, recs, tmp_path / "p.json")["totals"]["wall_time_s"] == 2.5


def test_bad_records_are_user_errors(tmp_path, make_config):
    cfg = make_config()
    with pytest.raises(UserError, match="not found"):
        P.write_run_provenance(cfg, [tmp_path / "nope.provenance.json"], tmp_path / "p.json")
    bad = tmp_path / "x.tsv"
    bad.write_text("foo\tbar\n1\t2\n")
    with pytest.raises(DataFileError, match="not a Snakemake benchmark"):
        P.write_run_provenance(cfg, [bad], tmp_path / "p.json")
    other = tmp_path / "y.json"
    other.write_text("{}")
    with pytest.raises(DataFileError, match="not a provenance record"):
        P.write_run_provenance(cfg, [other], tmp_path / "p.json")


def test_dirty_means_code_changed_not_the_runs_own_committed_outputs(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "metrics.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    assert P.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "results" / "run" / "metrics.csv").write_text("b\n")  # a run rewrote its committed output
    assert P.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert P.git_commit(tmp_path)["dirty"] is True
