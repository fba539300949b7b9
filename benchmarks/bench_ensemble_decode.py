"""Greedy ensemble decoding against transformers' generate: B prompts x N new tokens, T experts.

Full experts (T separate models): ratio = ensemble time / (T x generate time of one expert on the same
batch); the ensemble cannot beat T forwards per token, so 1.0 is the physical cost and the target
asks for at most 5% on top (T=4, B=8, N=64).

LoRA experts (T adapters of one base): the ensemble runs all T in one forward of the base over T x B
rows (ensemw2s/multilora.py). Ratios against T separate experts decoded separately, each expert as
(a) merged into its own copy of the base (= a plain model of the base's shape: this is also
"T x one generate") and (b) an unmerged PeftModel. The separate experts all have one shape, so T of
them cost T x one of them; that is what is timed. Target: at most 0.5 x the merged experts for B <= 4.

Peak memory: each configuration runs in a fresh process; the candidate's peak is read right after its
first run, before any baseline is loaded. LoRA target: the T=4 shared-base ensemble at most 1.2 x one
model decoding the same batch.

    python benchmarks/bench_ensemble_decode.py [--quick] [--json PATH]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FULL = dict(B=8, N=64, prompt=32, experts=[1, 2, 4, 8], repeats=3)
LORA = dict(batches=[(4, [1, 2, 4, 8]), (1, [4])], N=64, prompt=32, repeats=3, r=8, alpha=16)
QUICK = dict(B=2, N=4, prompt=8, experts=[1, 2], repeats=2)
QUICK_LORA = dict(batches=[(2, [2])], N=4, prompt=8, repeats=2, r=2, alpha=4)


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


def tokens(generations) -> list[list[int]]:
    return [g.token_ids for g in generations]


# ---------------------------------------------------------------------------------------------
# workers (one configuration per process)


def full_worker(cfg: dict) -> dict:
    """T random models: their ensemble and transformers' generate on the first, interleaved."""
    from ensemw2s.ensemble import Ensemble

    dims = common.shape(cfg["quick"])
    models = [common.llama(dims, seed=t) for t in range(cfg["T"])]
    prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
    ens = Ensemble(models, [1.0] * cfg["T"], "prob", common.word_tokenizer(dims["vocab_size"]))
    with torch.no_grad():
        warm_up(ensemble_generate(ens, prompts[:1], 2), hf_generate(models[0], prompts[:1], 2))
        times, last = common.interleaved({"ensemble": ensemble_generate(ens, prompts, cfg["N"]),
                                          "generate": hf_generate(models[0], prompts, cfg["N"])}, cfg["repeats"])
    same = tokens(last["ensemble"]) == last["generate"][:, -cfg["N"]:].tolist() if cfg["T"] == 1 else None
    # generate runs on one of the ensemble's own models with one cache, so the peak is the ensemble's
    return {"times": times, "peak_rss_mb": common.peak_rss_mb(), "same_tokens_as_generate": same}


def lora_worker(cfg: dict) -> dict:
    """T adapters of one base through Ensemble.from_pretrained (the shared-base path for T >= 2), then one
    expert merged and one as a PeftModel, decoded by transformers' generate; interleaved."""
    from ensemw2s.ensemble import Ensemble
    from ensemw2s.models import load_causal_lm

    dims = common.shape(cfg["quick"])
    prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
    adapters = cfg["adapters"][:cfg["T"]]
    ens = Ensemble.from_pretrained(adapters, [1.0] * cfg["T"], "prob", device="cpu")
    with torch.no_grad():
        warm_up(ensemble_generate(ens, prompts[:1], 2))
        first = common.timed(ensemble_generate(ens, prompts, cfg["N"]))
        peak = common.peak_rss_mb()  # read before any baseline model exists in this process
        merged = load_causal_lm(adapters[0]).merge_and_unload()
        unmerged = load_causal_lm(adapters[0])
        warm_up(hf_generate(merged, prompts[:1], 2), hf_generate(unmerged, prompts[:1], 2))
        times, _ = common.interleaved({"ensemble": ensemble_generate(ens, prompts, cfg["N"]),
                                       "merged": hf_generate(merged, prompts, cfg["N"]),
                                       "unmerged": hf_generate(unmerged, prompts, cfg["N"])}, cfg["repeats"])
    return {"times": times, "untimed_first_s": first, "peak_rss_mb": peak,
            "shared_base": type(ens.runner).__name__ == "LoRAStack"}


def one_model_worker(cfg: dict) -> dict:
    """The memory reference: one model (the base checkpoint) decoding the same batch with generate."""
    from ensemw2s.models import load_causal_lm

    dims = common.shape(cfg["quick"])
    model = load_causal_lm(cfg["base"])
    prompts = common.random_prompts(cfg["B"], cfg["prompt"], dims["vocab_size"], seed=0)
    with torch.no_grad():
        hf_generate(model, prompts, cfg["N"])()
    return {"peak_rss_mb": common.peak_rss_mb()}


WORKERS = {"full": full_worker, "lora": lora_worker, "one": one_model_worker}


def make_adapters(root: Path, dims: dict, n: int, r: int, alpha: int) -> tuple[str, list[str]]:
    """A random base checkpoint and n LoRA adapters of it (all linear layers, as the project's default),
    with random non-zero B so they are distinct experts."""
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
    return str(root / "base"), out


# ---------------------------------------------------------------------------------------------


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    common.setup(args)
    if args.worker:
        cfg = json.loads(args.worker)
        common.report_worker(WORKERS[cfg["kind"]](cfg))
        return
    started = time.perf_counter()
    full, lora = (QUICK, QUICK_LORA) if args.quick else (FULL, LORA)
    dims = common.shape(args.quick)
    mach = common.machine(args.threads, {"model": dims, "full": full, "lora": lora})
    script = str(Path(__file__).resolve())
    results = []

    full_cfg = {"quick": args.quick, "B": full["B"], "N": full["N"], "prompt": full["prompt"], "repeats": full["repeats"]}
    for T in full["experts"]:
        w = common.run_worker(script, {**full_cfg, "kind": "full", "T": T}, args.threads)
        ens, gen = common.median(w["times"]["ensemble"]), common.median(w["times"]["generate"])
        results.append(common.result(
            f"decode full T={T} B={full['B']} N={full['N']}: ensemble / (T x generate)", ens / (T * gen),
            1.05 if T == 4 else None, "lower", T=T, B=full["B"], N=full["N"], ensemble_s=w["times"]["ensemble"],
            generate_s=w["times"]["generate"], peak_rss_mb=round(w["peak_rss_mb"]),
            same_tokens_as_generate=w["same_tokens_as_generate"]))

    with tempfile.TemporaryDirectory(prefix="ensemw2s-bench-") as tmp:
        n_adapters = max(T for _, ts in lora["batches"] for T in ts)
        base, adapters = make_adapters(Path(tmp), dims, n_adapters, lora["r"], lora["alpha"])
        for B, experts in lora["batches"]:
            cfg = {"quick": args.quick, "B": B, "N": lora["N"], "prompt": lora["prompt"], "repeats": lora["repeats"],
                   "base": base, "adapters": adapters}
            one = common.run_worker(script, {**cfg, "kind": "one"}, args.threads)
            for T in experts:
                w = common.run_worker(script, {**cfg, "kind": "lora", "T": T}, args.threads)
                t = {k: common.median(v) for k, v in w["times"].items()}
                details = dict(T=T, B=B, N=lora["N"], rank=lora["r"], shared_base=w["shared_base"],
                               **{f"{k}_s": v for k, v in w["times"].items()})
                results.append(common.result(
                    f"decode LoRA T={T} B={B} N={lora['N']}: ensemble / (T x merged expert)",
                    t["ensemble"] / (T * t["merged"]), 0.5 if T == 4 else None, "lower", **details))
                results.append(common.result(
                    f"decode LoRA T={T} B={B} N={lora['N']}: ensemble / (T x PeftModel)",
                    t["ensemble"] / (T * t["unmerged"]), None, "lower", **details))
                results.append(common.result(
                    f"memory LoRA T={T} B={B}: ensemble peak / one model's", w["peak_rss_mb"] / one["peak_rss_mb"],
                    1.2 if T == 4 else None, "lower", T=T, B=B, peak_rss_mb=round(w["peak_rss_mb"]),
                    one_model_peak_rss_mb=round(one["peak_rss_mb"])))
    common.finish(args, mach, results, started)


if __name__ == "__main__":
    main()
