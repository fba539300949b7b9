"""What the benchmarks share: model shapes, a vocabulary-sized tokenizer, the machine record, timing,
per-configuration workers (fresh processes, so each peak memory is its own), and the JSON they write.

Every benchmark reports ratios (candidate / baseline, both timed in one process, interleaved, medians of
repeats), never raw speed alone: the machines differ, the ratios are what the targets speak about.
Output: {"machine": {...}, "results": [{"name", "ratio", "target", "better", "met", "wall_ratio", ...}]}.

Clocks: `ratio` divides medians of process CPU seconds, `wall_ratio` medians of wall seconds; both are
recorded per run. With one intra-op thread, CPU seconds are wall seconds minus the time the process
waited for a core. On a shared machine that wait comes in bursts of seconds, and it is not spread
evenly: a candidate run 4x longer than its baseline run (an ensemble of 4 against one generate) is 4x
more likely to contain a burst, so wall-clock ratios lean against the longer side however the runs are
interleaved. On an idle machine the two ratios agree.

Timings run on `--threads` intra-op threads (default 1): on a shared machine, a thread count equal to
the core count stalls whenever another process holds a core (OpenMP threads wait on one another), which
turns every timing into noise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
WORKER_TAG = "WORKER_RESULT "  # the line a worker prints its result on (stdout)

# SmolLM2-135M's architecture (random weights: no download), and a tiny one for --quick
SMOL = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True)
PAD, BOS, EOS = 0, 1, 2  # token ids of the benchmark tokenizer; the models never stop at EOS (see llama)


def shape(quick: bool) -> dict:
    return TINY if quick else SMOL


def llama(dims: dict, seed: int):
    """A random-weight Llama of the given dimensions, in eval mode. Its config has no EOS, so
    transformers' generate always makes max_new_tokens tokens, as the ensemble does with eos_ids empty."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(**dims, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=None, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval()


def word_tokenizer(vocab_size: int):
    """A tokenizer whose every id 0..vocab_size-1 is one whitespace-separated word ("t17"): any id a random
    model emits decodes, and any text of such words encodes to exactly those ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]  # ids PAD, BOS, EOS, 3
    vocab = {w: i for i, w in enumerate(special + [f"t{i}" for i in range(len(special), vocab_size)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def random_prompts(n: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    """n prompts of `length` down to about length/2 tokens (rows of different lengths: left padding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [length - (i * length) // (2 * max(n, 1)) for i in range(n)]
    return [torch.randint(4, vocab_size, (m,), generator=g).tolist() for m in lengths]


def left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) input ids (PAD on the left) and attention mask, as transformers' generate wants them."""
    L = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


# ---------------------------------------------------------------------------------------------
# timing and memory


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int
                ) -> tuple[dict[str, dict[str, list[float]]], dict[str, object]]:
    """Per function, its CPU and wall seconds of each repeat, {name: {"cpu": [...], "wall": [...]}}, run in
    turn (a, b, a, b, ...) so that slow phases of the machine hit all of them; and what each returned
    on its last run."""
    times = {name: {"cpu": [], "wall": []} for name in fns}
    last: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            last[name] = fn()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times, last


def ratios(times: dict, candidate: str, baseline: str, baseline_runs: float = 1) -> dict[str, float]:
    """{"ratio", "wall_ratio"}: the candidate's median over baseline_runs x the baseline's, per clock."""
    out = {}
    for clock, key in (("cpu", "ratio"), ("wall", "wall_ratio")):
        out[key] = median(times[candidate][clock]) / (baseline_runs * median(times[baseline][clock]))
    return out


def seconds(times: dict) -> dict[str, list[float]]:
    """The per-run seconds as result details: {"<name>_cpu_s": [...], "<name>_wall_s": [...]}."""
    return {f"{name}_{clock}_s": [round(x, 3) for x in xs] for name, clocks in times.items()
            for clock, xs in clocks.items()}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux: VmHWM of /proc/self/status. getrusage's ru_maxrss is kept across exec, so a worker started by
    a parent holding 2 GB would report the parent's 2 GB as its own peak; VmHWM belongs to the address
    space the worker's program runs in. Elsewhere: ru_maxrss (KiB on Linux, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------------------------------------
# workers: one configuration per fresh process


def run_worker(script: str, config: dict, threads: int) -> dict:
    """Run `script --worker CONFIG` in a fresh Python and return the dict it reports."""
    cmd = [sys.executable, script, "--worker", json.dumps(config), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(WORKER_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {config} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(WORKER_TAG):])


def report_worker(result: dict) -> None:
    print(WORKER_TAG + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# command line and output


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat less: checks that it runs")
    p.add_argument("--json", type=Path, help="write {machine, results} here")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, see common.py)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one configuration (JSON) and report
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from peft and transformers
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def machine(threads: int, shapes: dict) -> dict:
    """Where and on what the numbers were measured; the load average is read again at the end (`finish`)."""
    import lm_eval
    import peft
    import transformers

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "device": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "",
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "shapes": shapes,
    }


def result(name: str, ratio: float, target: float | None, better: str, wall_ratio: float | None = None,
           **details) -> dict:
    """One row: the ratio, its target (None: reported, no target) and whether it is met."""
    met = None if target is None else (ratio <= target if better == "lower" else ratio >= target)
    row = {"name": name, "ratio": round(ratio, 4), "target": target, "better": better, "met": met}
    if wall_ratio is not None:
        row["wall_ratio"] = round(wall_ratio, 4)
    return {**row, **details}


def main(doc: str, worker: Callable[[dict], dict], run: Callable[[argparse.Namespace], tuple[dict, list[dict]]]) -> None:
    """A benchmark's entry point. In a worker process (--worker JSON), run `worker` on that configuration
    and report; else `run(args)` -> (machine, results), printed and written by `finish`."""
    args = parser(doc.splitlines()[0]).parse_args()
    setup(args)
    if args.worker:
        report_worker(worker(json.loads(args.worker)))
        return
    started = time.perf_counter()
    mach, results = run(args)
    finish(args, mach, results, started)


def finish(args, mach: dict, results: list[dict], started: float) -> None:
    """Print the ratios and write the JSON."""
    mach["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    mach["wall_s"] = round(time.perf_counter() - started, 1)
    for r in results:
        target = "-" if r["target"] is None else f"{'<=' if r['better'] == 'lower' else '>='} {r['target']}"
        met = {None: "", True: "met", False: "NOT MET"}[r["met"]]
        wall = f"(wall {r['wall_ratio']:.3f})" if "wall_ratio" in r else ""
        print(f"{r['name']:<62} ratio {r['ratio']:>7.3f} {wall:<14} target {target:<8} {met}")
    print(f"load average {mach['loadavg_start']} -> {mach['loadavg_end']}, {mach['wall_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": mach, "results": results}, indent=1) + "\n")
