"""lm-eval loglikelihood requests through the `ensemw2s` model against lm-eval's HFLM on one expert.

Multiple-choice shaped requests (each question's context with 4 continuations of several tokens).
Ratio = ensemble time / (T x HFLM time on one of the experts): the time per expert relative to lm-eval's
own model; 1.0 would be the cost of T passes of HFLM's own kind (one forward per context + choice).
The ensemble runs each question's context once and its choices from the context's KV cache
(ensemble.SharedContextBatch); HFLM runs every (context, choice) pair in full.

- SciQ-shaped, T = 1: the suite's SciQ prompts ("Question: ...\nAnswer:", about 13 words, so about 24
  SmolLM2 tokens) with 4 choices of 1-3 tokens (SciQ's answers average 1.5 words). Target <= 0.40.

- direct: `ensemw2s` with experts=..., every batch runs the T experts and combines their distributions
  (longer contexts, 48 words; target <= 1.10);
- prefixes from the cache: the evaluation of a boosting run scores the ensembles of the first r experts,
  r = 1..T, each weighted by alpha and uniformly (2T ensembles). With `cache=DIR` every expert is run once
  and every ensemble combined from the per-expert token caches: T passes instead of T(T+1). The ratio
  takes all 2T ensembles' loglikelihood calls (the cache starts empty each repeat) over T x HFLM.

HFLM runs on the ensemble's first expert (the same weights, no second copy); each configuration runs
in a fresh process and its peak memory (ru_maxrss) is read after the ensemble's first call, before HFLM
has run. Model loading is not timed.

    python benchmarks/bench_ensemble_score.py [--quick] [--json PATH] [--threads 1]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FULL = dict(questions=8, context=48, answers=[2, 3, 4, 5], batch_size=8, experts=[1, 2, 4], prefix_T=4, repeats=3,
            sciq=dict(questions=16, context=28, answers=[1, 2, 2, 3], batch_size=16))
QUICK = dict(questions=2, context=8, answers=[2, 3, 4, 5], batch_size=4, experts=[2], prefix_T=2, repeats=2,
             sciq=dict(questions=4, context=8, answers=[1, 2, 2, 3], batch_size=8))
SCIQ_TARGET = 0.40


def mc_requests(cfg: dict, vocab_size: int) -> list:
    """lm-eval Instances: per question one context of `context` words down to context - 8 (" t17 t9 ...",
    one token per word) and one continuation per entry of `answers`, of that many words."""
    from lm_eval.api.instance import Instance

    g = torch.Generator().manual_seed(0)
    words = lambda n: " ".join(f"t{i}" for i in torch.randint(4, vocab_size, (n,), generator=g).tolist())  # noqa: E731
    reqs = []
    for q in range(cfg["questions"]):
        context = words(cfg["context"] - 4 * (q % 3))
        for n in cfg["answers"]:
            reqs.append(Instance("loglikelihood", {}, (context, " " + words(n)), len(reqs)))
    return reqs


def worker(cfg: dict) -> dict:
    """One configuration: the `ensemw2s` model(s) and HFLM on the same requests, interleaved."""
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM

    import ensemw2s  # noqa: F401  (registers the `ensemw2s` model)

    dims = common.shape(cfg["quick"])
    reqs = mc_requests(cfg, dims["vocab_size"])
    experts = cfg["experts"][:cfg["T"]]
    ensemble_lm = get_model("ensemw2s")
    kw = dict(batch_size=cfg["batch_size"], device="cpu")
    if cfg["kind"] in ("direct", "sciq"):
        lm = ensemble_lm(experts="|".join(experts), **kw)
        first_expert = lm.ensemble.experts[0]
        candidate = lambda: lm.loglikelihood(reqs)  # noqa: E731
    else:
        alpha = [1.0 / (r + 1) for r in range(cfg["T"])]  # any positive weights: the cost does not depend on them
        ensembles = [(experts[:r], w[:r]) for r in range(1, cfg["T"] + 1) for w in (alpha, [1.0] * cfg["T"])]
        lms = [ensemble_lm(experts="|".join(e), weights="|".join(map(str, w)), **kw) for e, w in ensembles]
        first_expert = lms[0].ensemble.experts[0]

        def candidate():
            with tempfile.TemporaryDirectory(prefix="ensemw2s-cache-") as cache:  # empty: every expert runs once
                for lm in lms:
                    lm.cache = cache
                    lm.loglikelihood(reqs)

    first = common.timed(candidate)
    peak = common.peak_rss_mb()
    hflm = HFLM(pretrained=first_expert, tokenizer=common.word_tokenizer(dims["vocab_size"]), **kw)
    hflm.loglikelihood(reqs[:1])  # warm-up
    times, last = common.interleaved({"ensemble": candidate, "hflm": lambda: hflm.loglikelihood(reqs)}, cfg["repeats"])
    out = {"times": times, "untimed_first_s": first, "peak_rss_mb": peak, "requests": len(reqs)}
    if cfg["kind"] in ("direct", "sciq") and cfg["T"] == 1:  # one expert: the same numbers as HFLM
        got = lm.loglikelihood(reqs)
        out["max_abs_diff_vs_hflm"] = max(abs(a[0] - b[0]) for a, b in zip(got, last["hflm"]))
    return out


def save_experts(root: Path, dims: dict, n: int) -> list[str]:
    """n random checkpoints of one shape, with the benchmark tokenizer."""
    tok = common.word_tokenizer(dims["vocab_size"])
    out = []
    for t in range(n):
        common.llama(dims, seed=t).save_pretrained(root / f"expert{t}")
        tok.save_pretrained(root / f"expert{t}")
        out.append(str(root / f"expert{t}"))
    return out


def run(args) -> tuple[dict, list[dict]]:
    cfg = QUICK if args.quick else FULL
    dims = common.shape(args.quick)
    mach = common.machine(args.threads, {"model": dims, "score": cfg})
    script = str(Path(__file__).resolve())
    target = None if args.quick else 1.10
    results = []
    with tempfile.TemporaryDirectory(prefix="ensemw2s-bench-") as tmp:
        experts = save_experts(Path(tmp), dims, max(cfg["experts"] + [cfg["prefix_T"]]))
        runs = [("sciq", 1)] + [("direct", T) for T in cfg["experts"]] + [("prefixes", cfg["prefix_T"])]
        for kind, T in runs:
            run_cfg = {**cfg, **cfg["sciq"]} if kind == "sciq" else cfg
            w = common.run_worker(script, {**run_cfg, "quick": args.quick, "kind": kind, "T": T, "experts": experts},
                                  args.threads)
            r = common.ratios(w["times"], "ensemble", "hflm", baseline_runs=T)
            name = {"sciq": f"score SciQ-shaped, 4 choices, T={T}: ensemw2s / (T x HFLM)",
                    "direct": f"score direct T={T}: ensemw2s / (T x HFLM)",
                    "prefixes": f"score r=1..{T} x (alpha, uniform) from the cache: all / (T x HFLM)"}[kind]
            results.append(common.result(
                name, r["ratio"], None if target is None else SCIQ_TARGET if kind == "sciq" else target, "lower",
                r["wall_ratio"], T=T, requests=w["requests"], batch_size=run_cfg["batch_size"],
                **common.seconds(w["times"]), peak_rss_mb=round(w["peak_rss_mb"]),
                **{k: w[k] for k in ("max_abs_diff_vs_hflm",) if k in w}))
    return mach, results


if __name__ == "__main__":
    common.main(__doc__, worker, run)
