"""benchmarks/: each runs with --quick and writes the agreed JSON. Speed itself is never asserted here."""
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCHMARKS = sorted(p.name for p in (REPO / "benchmarks").glob("bench_*.py"))
MACHINE_KEYS = {"date", "cpu", "cores", "threads", "device", "torch", "transformers", "peft", "commit",
                "loadavg_start", "loadavg_end", "shapes", "wall_s"}


def test_every_benchmark_of_the_issue_exists():
    assert set(BENCHMARKS) >= {"bench_ensemble_decode.py", "bench_ensemble_score.py", "bench_expert_training.py"}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run_writes_the_schema(name, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--quick", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "results"}
    assert MACHINE_KEYS <= set(data["machine"])
    assert len(data["machine"]["loadavg_start"]) == 3
    assert data["results"]
    for r in data["results"]:
        assert isinstance(r["name"], str) and r["name"] in proc.stdout  # every ratio is printed
        assert isinstance(r["ratio"], float) and math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert r["target"] is None or isinstance(r["target"], float)
        assert r["better"] in ("lower", "higher")
        if r["target"] is None:
            assert r["met"] is None
        else:
            assert r["met"] == (r["ratio"] <= r["target"] if r["better"] == "lower" else r["ratio"] >= r["target"])
    assert len({r["name"] for r in data["results"]}) == len(data["results"])


def test_a_result_is_met_on_the_side_its_target_names():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_common", REPO / "benchmarks" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert common.result("a", 1.04, 1.05, "lower")["met"] is True
    assert common.result("a", 1.06, 1.05, "lower")["met"] is False
    assert common.result("a", 0.94, 0.95, "higher")["met"] is False
    assert common.result("a", 0.96, 0.95, "higher", tokens=3) == {
        "name": "a", "ratio": 0.96, "target": 0.95, "better": "higher", "met": True, "tokens": 3}
    assert common.result("a", 2.0, None, "lower")["met"] is None


def test_table_renders_one_row_per_result_with_its_verdict(tmp_path):
    data = {"machine": {"loadavg_start": [0.5, 0.4, 0.3]},
            "results": [{"name": "decode x", "ratio": 1.0294, "target": 1.05, "better": "lower", "met": True},
                        {"name": "train y", "ratio": 0.9, "target": 0.95, "better": "higher", "met": False},
                        {"name": "memory z", "ratio": 1.5, "target": None, "better": "lower", "met": None}]}
    (tmp_path / "cpu-demo.json").write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "table.py"), str(tmp_path / "cpu-demo.json")],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[2:] == [
        "| cpu-demo | decode x | 1.029 | <= 1.05 | yes | 0.5 |",
        "| cpu-demo | train y | 0.900 | >= 0.95 | **no** | 0.5 |",
        "| cpu-demo | memory z | 1.500 |  | - | 0.5 |",
    ]


def _clock(bench, steps, saves):
    clock = bench.StepClock()
    clock.steps, clock.saves = steps, saves
    return clock


def test_training_steady_state_drops_warmup_and_excludes_the_final_checkpoint(monkeypatch):
    """bench_expert_training.steady_state on hand-made clock marks (halves: exact in binary floating point)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_expert_training as bench

    # (cpu s, wall s, tokens seen) at the start and the end of steps 1..3; then the final checkpoint
    weighted = _clock(bench, [(0.0, 0.0, 0), (5.0, 5.5, 10), (7.0, 7.5, 22), (9.5, 10.0, 31)], [(11.0, 12.0, 31)])
    plain = _clock(bench, [(1.0, 1.0, 0), (7.0, 7.0, 10), (9.5, 10.0, 22), (12.5, 13.5, 31)], [(13.0, 14.5, 31)])
    out = bench.steady_state({"weighted": [weighted], "plain": [plain]}, steps=3, warmup=1)
    assert out["step_tokens"] == [10, 12, 9]
    assert out["timed"] == {"weighted": {"cpu": [4.5], "wall": [4.5]}, "plain": {"cpu": [5.5], "wall": [6.5]}}
    assert out["checkpoint"] == {"weighted": {"cpu": [1.5], "wall": [2.0]}, "plain": {"cpu": [0.5], "wall": [1.0]}}
    assert out["step_cpu_s"] == {"weighted": [[5.0, 2.0, 2.5]], "plain": [[6.0, 2.5, 3.0]]}

    other_batches = _clock(bench, [(0.0, 0.0, 0), (1.0, 1.0, 11), (2.0, 2.0, 22), (3.0, 3.0, 31)], [(4.0, 4.0, 31)])
    with pytest.raises(RuntimeError, match="other batches"):
        bench.steady_state({"weighted": [weighted], "plain": [other_batches]}, steps=3, warmup=1)
    with pytest.raises(RuntimeError, match="2 optimizer steps and 1 checkpoints seen, 3 and 1 expected"):
        bench.steady_state({"weighted": [_clock(bench, weighted.steps[:3], weighted.saves)]}, steps=3, warmup=1)


def test_training_rows_have_the_lengths_of_short_answer_qa(monkeypatch):
    """The full run's rows: prompts of 17..34 words, answers of 2..11 (3..12 tokens with EOS), every length of each range present."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_expert_training as bench

    rows = bench.make_rows(bench.FULL, vocab_size=512)
    prompts = {len(r["prompt"].split()) for r in rows}
    answers = {len(r["answer"].split()) for r in rows}
    assert len(rows) == 96 and prompts == set(range(17, 35)) and answers == set(range(2, 12))  # every length drawn


def test_gpu_check_refuses_without_cuda_and_runs_on_cpu_at_tiny_shapes(tmp_path, monkeypatch):
    """benchmarks/gpu_check.py: the real-shape configs build (tiny dims here), --device cuda without a GPU
    exits 2 naming the CPU smoke test, and `--device cpu --quick` writes the ratios and the plan's rates."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        gpu_check.refuse_without_cuda(gpu_check.parse([]).device)  # the default device is cuda
    assert stop.value.code == 2
    assert type(gpu_check.build("qwen2.5-0.5b", quick=True, seed=0)).__name__ == "Qwen2ForCausalLM"
    assert gpu_check.QWEN["vocab_size"] == 151936 and gpu_check.SHAPES["smollm2-135m"][1]["num_hidden_layers"] == 30

    out = tmp_path / "gpu-check.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--dtype",
                           "fp32", "--quick", "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "results", "throughput"} and MACHINE_KEYS <= set(data["machine"])
    assert len(data["results"]) == 2 * len(gpu_check.SHAPES)  # decode and score ratios per model
    assert all(math.isfinite(r["ratio"]) and r["ratio"] > 0 for r in data["results"])
    for rates in data["throughput"].values():  # laid out as ensemw2s/throughput.yaml's entries
        assert {"train", "score", "decode"} <= set(rates) and all(rates[k] > 0 for k in ("train", "score", "decode"))
        assert rates["source"].startswith("measured: benchmarks/gpu_check.py")
