"""The GPU check: decode, score and training speed on `cuda` in bf16, for the real shapes of SmolLM2-135M
and Qwen2.5-0.5B (random weights built from transformers configs: nothing is downloaded).

Per model shape, in one process (about 5 minutes on one GPU):
- decode: the ensemble of T = 4 experts (ensemw2s.ensemble.Ensemble.generate) against T x transformers'
  generate of one expert, B prompts x N new tokens, as benchmarks/bench_ensemble_decode.py;
- score: the T = 4 ensemble's log-likelihoods (Ensemble.loglikelihood) against T x one expert's, on
  multiple-choice shaped requests (benchmarks/bench_ensemble_score.py's);
- training: `ensemw2s.training.fit` with resample multipliers (benchmarks/bench_expert_training.py's rows
  and multipliers) at the requested precision, in tokens/s.
It writes {"machine", "results", "throughput"}: the ratios in the benchmarks' schema, and tokens/s per
model laid out as ensemw2s/throughput.yaml's `gpu` entries (train, score, decode), to paste there for
`ensemw2s plan`. Without CUDA it refuses (exit 2); `--device cpu --quick` is the CPU smoke test.

    python benchmarks/gpu_check.py [--json benchmarks/results/gpu-check.json] [--quick] [--device cpu --dtype fp32]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ensemble_score  # noqa: E402
import bench_expert_training  # noqa: E402
import common  # noqa: E402

# Qwen2.5-0.5B's architecture (its config.json on the hub); SmolLM2-135M's is common.SMOL
QWEN = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0)
SHAPES = {"smollm2-135m": ("llama", common.SMOL), "qwen2.5-0.5b": ("qwen2", QWEN)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
T = 4  # experts of the decode and score ensembles
FULL = dict(B=32, prompt=64, N=32, repeats=3, score=dict(questions=64, context=96, answers=[2, 3, 4, 5], batch_size=32),
            train=dict(rows=256, prompt=96, answer=16, batch_size=16, epochs=1))
QUICK = dict(B=2, prompt=8, N=4, repeats=1, score=dict(questions=2, context=8, answers=[2, 3, 4, 5], batch_size=4),
             train=dict(rows=8, prompt=8, answer=3, batch_size=4, epochs=1))


def build(name: str, quick: bool, seed: int):
    """A random-weight model of `name`'s real shape (--quick: common.TINY in the same architecture)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    arch, dims = SHAPES[name]
    dims = common.TINY if quick else dims
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    torch.manual_seed(seed)
    cfg = config_cls(**dims, pad_token_id=common.PAD, bos_token_id=common.BOS, eos_token_id=None,
                     max_position_embeddings=2048)
    return model_cls(cfg).eval()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=common.REPO / "benchmarks" / "results" / "gpu-check.json")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (the smoke test)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="decode/score weights, training precision")
    p.add_argument("--models", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--quick", action="store_true", help="tiny shapes of the same architectures")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    return p.parse_args(argv)


def refuse_without_cuda(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks/gpu_check.py: error: --device {device} but no CUDA device is visible "
              f"(torch {torch.__version__}, torch.cuda.is_available() is False); run it on a GPU node, "
              f"or pass --device cpu --dtype fp32 --quick for the CPU smoke test", file=sys.stderr)
        sys.exit(2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_pair(device: str, fns: dict, repeats: int) -> dict:
    """common.interleaved with the device synchronised after each call (CUDA runs asynchronously)."""
    def synced(fn):
        def run():
            out = fn()
            sync(device)
            return out
        return run
    for fn in fns.values():  # warm-up: kernel selection, allocator
        synced(fn)()
    times, _ = common.interleaved({k: synced(fn) for k, fn in fns.items()}, repeats)
    return times


def ratios(device: str, times: dict, candidate: str, baseline: str) -> dict[str, float]:
    """common.ratios over T baseline runs; on CUDA `ratio` is the wall-clock one (the host's CPU seconds
    there are launch and wait time, not the work)."""
    r = common.ratios(times, candidate, baseline, baseline_runs=T)
    return {**r, "ratio": r["wall_ratio"]} if device.startswith("cuda") else r


def check_model(name: str, args, cfg: dict) -> tuple[list[dict], dict]:
    from ensemw2s.ensemble import Ensemble

    dev, dtype = torch.device(args.device), DTYPES[args.dtype]
    dims = common.TINY if args.quick else SHAPES[name][1]
    tok = common.word_tokenizer(dims["vocab_size"])
    experts = [build(name, args.quick, seed=t).to(dev, dtype) for t in range(T)]
    results, rates = [], {}
    with torch.no_grad():
        prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
        ids, mask = (x.to(dev) for x in common.left_padded(prompts))
        ens = Ensemble(experts, [1.0] * T, "prob", tok)
        ens.eos_ids = set()  # exactly N tokens, as generate without EOS
        times = timed_pair(args.device, {
            "ensemble": lambda: ens.generate(prompts, cfg["N"], batch_size=len(prompts)),
            "generate": lambda: experts[0].generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg["N"],
                                                    do_sample=False, pad_token_id=common.PAD)}, cfg["repeats"])
        r = ratios(args.device, times, "ensemble", "generate")
        results.append(common.result(f"{name} decode T={T} B={cfg['B']} N={cfg['N']}: ensemble / (T x generate)",
                                     r["ratio"], None, "lower", r["wall_ratio"], **common.seconds(times)))
        decoded = sum(map(len, prompts)) + cfg["B"] * cfg["N"]  # prompt + generated, as pseudo_label counts
        rates["decode"] = round(T * decoded / common.median(times["ensemble"]["wall"]))

        reqs = bench_ensemble_score.mc_requests(cfg["score"], dims["vocab_size"])
        ctx = [tok(q.args[0], add_special_tokens=False)["input_ids"] for q in reqs]
        cont = [tok(q.args[1], add_special_tokens=False)["input_ids"] for q in reqs]
        one = Ensemble(experts[:1], [1.0], "prob", tok)
        bs = cfg["score"]["batch_size"]
        times = timed_pair(args.device, {"ensemble": lambda: ens.loglikelihood(ctx, cont, batch_size=bs),
                                         "one": lambda: one.loglikelihood(ctx, cont, batch_size=bs)}, cfg["repeats"])
        r = ratios(args.device, times, "ensemble", "one")
        results.append(common.result(f"{name} score T={T}: ensemble / (T x one expert)", r["ratio"], None, "lower",
                                     r["wall_ratio"], requests=len(reqs), **common.seconds(times)))
        scored = sum(len(a) + len(b) for a, b in zip(ctx, cont))
        rates["score"] = round(T * scored / common.median(times["ensemble"]["wall"]))
    del ens, one, experts

    from ensemw2s.training import count_tokens, fit

    train = {**cfg["train"], "repeats": 1}
    rows = bench_expert_training.make_rows(train, dims["vocab_size"])
    spec = dataclasses.replace(bench_expert_training.spec(train), precision=args.dtype, save_steps=10**6)
    weights = bench_expert_training.resample_multipliers(tok, rows)
    model = build(name, args.quick, seed=0).train().to(dev)  # fp32 weights: Trainer's bf16 / fp16 is autocast
    with tempfile.TemporaryDirectory(prefix="ensemw2s-gpu-check-") as out:
        sync(args.device)
        start = time.perf_counter()
        fit(model, tok, rows, spec, seed=0, out_dir=out, token_weights=weights)
        sync(args.device)
        wall = time.perf_counter() - start
    rates["train"] = round(count_tokens(tok, rows, bench_expert_training.MAX_LENGTH) * train["epochs"] / wall)
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else common.peak_rss_mb()
    rates["source"] = (f"measured: benchmarks/gpu_check.py, random weights of {name}'s shape, {args.dtype}, "
                       f"full fine-tuning, peak memory {peak:.0f} MiB")
    return results, rates


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    refuse_without_cuda(args.device)
    common.setup(args)
    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    mach = common.machine(args.threads, {"models": {m: SHAPES[m][1] for m in args.models}, "check": cfg,
                                         "dtype": args.dtype, "T": T})
    mach["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    results, throughput = [], {}
    for name in args.models:
        rows, throughput[name] = check_model(name, args, cfg)
        results += rows
        print(f"{name}: tokens/s {throughput[name]}", flush=True)
    common.finish(args, mach, results, started)
    if args.json:  # finish wrote {machine, results}; the plan's rates go beside them
        data = json.loads(args.json.read_text())
        args.json.write_text(json.dumps({**data, "throughput": throughput}, indent=1) + "\n")


if __name__ == "__main__":
    main()
