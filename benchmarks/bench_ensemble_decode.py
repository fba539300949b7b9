"""Greedy ensemble decoding against transformers' generate: B prompts x N new tokens, T experts.

Full experts (T separate models): ratio = ensemble time / (T x generate time of one of the experts on
the same batch). The ensemble needs T forwards per token, so 1.0 is the physical cost; the target
allows 5% on top at T=4, B=8, N=64.

LoRA experts (T adapters of one base, loaded by Ensemble.from_pretrained, which runs all T in one
forward of the base over T x B rows, ensemw2s/multilora.py). Ratios against T separate experts decoded
separately by generate, each expert (a) merged into its own copy of the base, i.e. a plain model of the
base's shape, so this is also "T x one generate", and (b) an unmerged PeftModel. Experts of one shape
cost the same, so T separate experts are timed as T x one of them. Target: at most 0.5 x the merged
experts at T=4 for B <= 4.

Times are CPU and wall seconds (benchmarks/common.py says why `ratio` uses CPU seconds). The baseline
runs once per repeat (not T times): T separate experts cost T x one of them.

Peak memory (peak resident set, common.peak_rss_mb) is per configuration. Full experts run T = 1, 2,
4, 8 in one process in that order, adding models: the footprint only grows, so the peak read after
each T's runs is that T's. Each LoRA configuration runs in a fresh process and its peak is read after
its first run, before any baseline model is loaded. LoRA target: the T=4 shared-base ensemble at most
1.2 x one expert (a PeftModel, as a single adapter loads) decoding the same batch with generate, in a
fresh process of its own. `net_ratio` subtracts from both the process's memory after its imports
(torch, transformers, peft: ~390 MB), which both pay.

    python benchmarks/bench_ensemble_decode.py [--quick] [--json PATH] [--threads 1]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# (T, N, repeats): N = 64 where a target is set, 16 elsewhere, and more repeats where runs are short
# (a few seconds: +-5% from run to run even on an idle machine), so that the whole run fits ~10 minutes
FULL = dict(B=8, prompt=32, runs=[(1, 16, 7), (2, 16, 5), (4, 64, 3), (8, 16, 3)])
# (B, T, N, repeats); at T = compare_at also the PeftModel baseline (a third run per repeat) and the memory
LORA = dict(prompt=32, r=8, alpha=16, compare_at=4,
            runs=[(4, 1, 16, 3), (4, 2, 16, 3), (4, 4, 64, 3), (4, 8, 16, 3), (1, 4, 64, 3)])
QUICK_FULL = dict(B=2, prompt=8, runs=[(1, 4, 2), (2, 4, 2)])
QUICK_LORA = dict(prompt=8, r=2, alpha=4, compare_at=2, runs=[(2, 2, 4, 2)])


def hf_generate(model, prompts: list[list[int]], n: int):
    """transformers' greedy generate on the left-padded batch: the baseline."""
    ids, mask = common.left_padded(prompts)
    return lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                  pad_token_id=common.PAD)


def ensemble_generate(ens, prompts: list[list[int]], n: int):
    ens.eos_ids = set()  # as the baseline: exactly n tokens
    return lambda: ens.generate(prompts, n, batch_size=len(prompts))


def warm_up(*fns) -> None:
    """One short call of each path first (kernel selection, lazy allocations): not timed."""
    for fn in fns:
        fn()


# ---------------------------------------------------------------------------------------------
# workers (fresh processes)


def full_worker(cfg: dict) -> dict:
    """T random models for each T in increasing order: their ensemble and generate on the first, interleaved."""
    from ensemw2s.ensemble import Ensemble

    dims = common.shape(cfg["quick"])
    tok = common.word_tokenizer(dims["vocab_size"])
    prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
    models, out = [], []
    with torch.no_grad():
        for T, N, repeats in cfg["runs"]:
            models += [common.llama(dims, seed=t) for t in range(len(models), T)]
            ens = Ensemble(models[:T], [1.0] * T, "prob", tok)
            warm_up(ensemble_generate(ens, prompts[:1], 2), hf_generate(models[0], prompts[:1], 2))
            times, last = common.interleaved({"ensemble": ensemble_generate(ens, prompts, N),
                                              "generate": hf_generate(models[0], prompts, N)}, repeats)
            same = [g.token_ids for g in last["ensemble"]] == last["generate"][:, -N:].tolist()
            out.append({"T": T, "N": N, "times": times, "peak_rss_mb": common.peak_rss_mb(),
                        "same_tokens_as_generate": same if T == 1 else None})
    return {"runs": out}


def lora_worker(cfg: dict) -> dict:
    """T adapters of one base through Ensemble.from_pretrained; then one expert merged (and, if asked,
    one as a PeftModel) decoded by generate; interleaved."""
    import peft  # noqa: F401  (imported before the first reading, as in the reference worker)

    from ensemw2s.ensemble import Ensemble
    from ensemw2s.models import load_causal_lm

    imports = common.peak_rss_mb()
    dims = common.shape(cfg["quick"])
    prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
    adapters = cfg["adapters"][:cfg["T"]]
    ens = Ensemble.from_pretrained(adapters, [1.0] * cfg["T"], "prob", device="cpu")
    with torch.no_grad():
        warm_up(ensemble_generate(ens, prompts[:1], 2))
        first = common.timed(ensemble_generate(ens, prompts, cfg["N"]))
        peak = common.peak_rss_mb()  # before any baseline model exists in this process
        baselines = {"merged": load_causal_lm(adapters[0]).merge_and_unload()}
        if cfg["unmerged"]:
            baselines["unmerged"] = load_causal_lm(adapters[0])
        warm_up(*(hf_generate(m, prompts[:1], 2) for m in baselines.values()))
        fns = {"ensemble": ensemble_generate(ens, prompts, cfg["N"]),
               **{name: hf_generate(m, prompts, cfg["N"]) for name, m in baselines.items()}}
        times, _ = common.interleaved(fns, cfg["repeats"])
    return {"times": times, "untimed_first_s": first, "peak_rss_mb": peak, "imports_rss_mb": imports,
            "shared_base": type(ens.runner).__name__ == "LoRAStack"}


def one_expert_worker(cfg: dict) -> dict:
    """The memory reference: one expert as a single adapter loads (a PeftModel on its base), decoding the
    same batch with generate."""
    import peft  # noqa: F401

    from ensemw2s.models import load_causal_lm

    imports = common.peak_rss_mb()
    dims = common.shape(cfg["quick"])
    prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
    with torch.no_grad():
        hf_generate(load_causal_lm(cfg["adapters"][0]), prompts, cfg["N"])()
    return {"peak_rss_mb": common.peak_rss_mb(), "imports_rss_mb": imports}


WORKERS = {"full": full_worker, "lora": lora_worker, "one": one_expert_worker}


def make_adapters(root: Path, dims: dict, n: int, r: int, alpha: int) -> list[str]:
    """A random base checkpoint and n LoRA adapters of it on every linear layer (the project's default
    target), with random non-zero B so that they are distinct experts."""
    from peft import LoraConfig, get_peft_model

    from ensemw2s.models import load_causal_lm

    common.llama(dims, seed=0).save_pretrained(root / "base")
    common.word_tokenizer(dims["vocab_size"]).save_pretrained(root / "base")
    out = []
    for t in range(n):
        lora = LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(load_causal_lm(root / "base"), lora)
        g = torch.Generator().manual_seed(100 + t)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02, generator=g)
        model.save_pretrained(root / f"adapter{t}")
        out.append(str(root / f"adapter{t}"))
    return out


# ---------------------------------------------------------------------------------------------


def full_results(script: str, args, full: dict) -> list[dict]:
    w = common.run_worker(script, {"kind": "full", "quick": args.quick, **full}, args.threads)
    results = []
    for run in w["runs"]:
        T, N = run["T"], run["N"]
        r = common.ratios(run["times"], "ensemble", "generate", baseline_runs=T)
        results.append(common.result(
            f"decode full T={T} B={full['B']} N={N}: ensemble / (T x generate)", r["ratio"],
            1.05 if (T, full["B"], N) == (4, 8, 64) else None, "lower", r["wall_ratio"], T=T, B=full["B"], N=N,
            repeats=len(run["times"]["ensemble"]["cpu"]),
            **common.seconds(run["times"]), peak_rss_mb=round(run["peak_rss_mb"]),
            same_tokens_as_generate=run["same_tokens_as_generate"]))
    return results


def lora_results(script: str, args, lora: dict, adapters: list[str]) -> list[dict]:
    results = []
    for B, T, N, repeats in lora["runs"]:
        compare = T == lora["compare_at"]
        cfg = {"quick": args.quick, "B": B, "T": T, "N": N, "prompt": lora["prompt"], "repeats": repeats,
               "adapters": adapters, "unmerged": compare}
        w = common.run_worker(script, {**cfg, "kind": "lora"}, args.threads)
        details = dict(T=T, B=B, N=N, repeats=repeats, rank=lora["r"], shared_base=w["shared_base"],
                       **common.seconds(w["times"]))
        r = common.ratios(w["times"], "ensemble", "merged", baseline_runs=T)
        results.append(common.result(
            f"decode LoRA T={T} B={B} N={N}: ensemble / (T x merged expert)", r["ratio"],
            0.5 if compare and B <= 4 and not args.quick else None, "lower", r["wall_ratio"], **details))
        if "unmerged" in w["times"]:
            r = common.ratios(w["times"], "ensemble", "unmerged", baseline_runs=T)
            results.append(common.result(
                f"decode LoRA T={T} B={B} N={N}: ensemble / (T x PeftModel)", r["ratio"], None, "lower",
                r["wall_ratio"], **details))
        if compare:
            one = common.run_worker(script, {**cfg, "kind": "one"}, args.threads)
            net = (w["peak_rss_mb"] - w["imports_rss_mb"]) / (one["peak_rss_mb"] - one["imports_rss_mb"])
            results.append(common.result(
                f"memory LoRA T={T} B={B} N={N}: ensemble peak / one expert's", w["peak_rss_mb"] / one["peak_rss_mb"],
                None if args.quick else 1.2, "lower", T=T, B=B, N=N, peak_rss_mb=round(w["peak_rss_mb"]),
                one_expert_peak_rss_mb=round(one["peak_rss_mb"]), net_ratio=round(net, 4),
                imports_rss_mb=[round(w["imports_rss_mb"]), round(one["imports_rss_mb"])]))
    return results


def worker(cfg: dict) -> dict:
    return WORKERS[cfg["kind"]](cfg)


def run(args) -> tuple[dict, list[dict]]:
    full, lora = (QUICK_FULL, QUICK_LORA) if args.quick else (FULL, LORA)
    dims = common.shape(args.quick)
    mach = common.machine(args.threads, {"model": dims, "full": full, "lora": lora})
    script = str(Path(__file__).resolve())
    results = full_results(script, args, full)
    with tempfile.TemporaryDirectory(prefix="ensemw2s-bench-") as tmp:
        adapters = make_adapters(Path(tmp), dims, max(T for _, T, _, _ in lora["runs"]), lora["r"], lora["alpha"])
        results += lora_results(script, args, lora, adapters)
    return mach, results


if __name__ == "__main__":
    common.main(__doc__, worker, run)
