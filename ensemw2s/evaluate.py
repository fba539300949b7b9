"""`ensemw2s evaluate`: score one model or ensemble on a dataset's eval splits through lm-eval.

Tasks are data, as in lm-eval itself: for each eval split this module writes two local task YAMLs,
- `<task>_mc`  (multiple_choice: prompt -> choices, gold index; acc and acc_norm), and
- `<task>_gen` (generate_until, greedy, stop at a newline or "Question:"; exact match of the normalised
  generation against `answer`, scored by `score_generation`, the `process_results` hook),
over a projection of the split file (the fields lm-eval needs, `evaluation.limit` rows at most). The
task directory is content-addressed under `<run_dir>/lmeval/tasks/`, so concurrent jobs scoring the
same data share it (files are written atomically with identical content), and one
`TaskManager(include_path=that dir, include_defaults=False)` indexes only those tasks (the default
index parses ~14k YAMLs). The datasets cache lives in `<run_dir>/lmeval/hf_datasets`, offline.

One model is scored as an ensemble of one by the `ensemw2s` lm-eval model (lmeval_model.py).
Per-example 0/1 results, uids and each multiple-choice pick (the choice of largest loglikelihood, what
`acc` scores) with its gold index come from lm-eval's logged samples; the score file format is the one
in docs/architecture.md. A provenance record (`<out>.provenance.json`) carries wall time and tokens.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ensemw2s import models, provenance, steps
from ensemw2s.config import Config, stable_hash
from ensemw2s.errors import UserError
from ensemw2s.io import read_json, sha256_file, write_json, write_jsonl, write_text
from ensemw2s.metrics import exact_match
from ensemw2s.scores import SCORES, parse_meta
from ensemw2s.splitdir import STOP, read_task_rows

log = logging.getLogger(__name__)

TASK_FORMAT = 1  # bump when the YAML below changes meaning: it is part of the task directory's hash


# ---------------------------------------------------------------------------------------------
# lm-eval tasks


def score_generation(doc: dict, results: list[str]) -> dict[str, int]:
    """lm-eval `process_results` of the generative task: exact match after normalisation."""
    return {"exact_match": exact_match(results[0], doc["answer"])}


def task_name(dataset: str, split: str, kind: str) -> str:
    return f"ensemw2s_{dataset}_{split}_{kind}"


def _task_configs(cfg: Config, dataset: str, split: str, rows_file: Path, cache_dir: Path) -> dict[str, str]:
    """The two task YAMLs of one split, as text: {task name: yaml}."""
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(rows_file)}, "cache_dir": str(cache_dir)},
        "test_split": "test",
        "doc_to_text": "prompt",
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metadata": {"version": TASK_FORMAT},
    }
    mc = {
        "task": task_name(dataset, split, "mc"),
        **common,
        "output_type": "multiple_choice",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
    }
    gen = {
        "task": task_name(dataset, split, "gen"),
        **common,
        "output_type": "generate_until",
        "doc_to_target": "answer",
        "generation_kwargs": {"until": list(STOP), "do_sample": False, "max_gen_toks": cfg.evaluation.max_new_tokens},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    dump = lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True)  # noqa: E731
    # `!function` is lm-eval's YAML tag for a callable; safe_dump cannot write tags, so it is appended
    hook = f"process_results: !function {__name__}.{score_generation.__name__}\n"
    return {mc["task"]: dump(mc), gen["task"]: dump(gen) + hook}


def write_tasks(cfg: Config, dataset: str, data: Path) -> Path:
    """Write the task YAMLs and projected rows of every eval split; return the task directory.

    The directory name hashes everything the tasks depend on (split file contents, limit, generation
    length, task format), so a rerun with the same inputs reuses it and a change gets a new one.
    """
    data = Path(data)
    splits = cfg.evaluation.splits
    files = {s: data / f"{s}.jsonl" for s in splits}
    rows = {s: read_task_rows(data, s, cfg.evaluation.limit) for s in splits}
    key = stable_hash({"files": {s: sha256_file(p) for s, p in files.items()}, "limit": cfg.evaluation.limit,
                       "max_new_tokens": cfg.evaluation.max_new_tokens, "format": TASK_FORMAT})
    root = (cfg.run_dir / "lmeval").resolve()
    tasks_dir = root / "tasks" / dataset / key
    for split in splits:
        rows_file = tasks_dir / f"{split}.jsonl"
        write_jsonl(rows_file, rows[split])
        for name, text in _task_configs(cfg, dataset, split, rows_file, root / "hf_datasets").items():
            write_text(tasks_dir / f"{name}.yaml", text)
    return tasks_dir


# ---------------------------------------------------------------------------------------------
# model


class LMSpec(NamedTuple):
    name: str  # the model's name in lm-eval's registry
    args: dict[str, Any]  # its model_args
    inputs: list[Path]  # what the scores depend on (provenance)
    members: int  # models run per token (an ensemble runs every expert)
    tokenizer: Path  # a directory whose tokenizer the model uses


def _lm(model: Path | None, manifest: Path | None, cache: Path | None) -> LMSpec:
    if (model is None) == (manifest is None):
        raise UserError("evaluate needs exactly one of --model or --manifest")
    if model is not None:
        if cache is not None:
            raise UserError("--cache is the ensemble's per-expert cache; it applies to --manifest only")
        if not Path(model).exists():
            raise UserError(f"--model {model}: directory not found")
        # one model is an ensemble of one (the `ensemw2s` lm-eval model): the same scores as lm-eval's HFLM
        # (tested), but logits only where a continuation token is predicted, not over the whole context,
        # which for a large vocabulary (Gemma-3: 262k) is most of the cost of scoring
        return LMSpec("ensemw2s", {"experts": str(model)}, [Path(model)], 1, Path(model))
    from ensemw2s.manifest import read_manifest

    experts = [Path(e) for e in read_manifest(manifest)["experts"]]
    args = {"manifest": str(manifest)}
    if cache is not None:  # per-expert token probabilities, shared by every ensemble of these experts
        args["cache"] = str(cache)
    return LMSpec("ensemw2s", args, [Path(manifest), *experts], len(experts), experts[0])


def scoring_dtype(cfg: Config, labels: dict[str, Any]) -> str:
    """The scored model's `models[].dtype`, the dtype it was trained in: the strong entry for the strong
    base, the ceiling, students and their replicates, else the weak one; float32 where --meta names no model."""
    strong = labels["role"] in ("strong_base", "ceiling", "student", "replicate")
    name = labels["strong_model"] if strong else labels["weak_model"]
    return cfg.model(name).dtype if name else "float32"


def _tokens_processed(samples: dict[str, list[dict]], tokenizer, members: int) -> int:
    """Estimate of tokens run through the model(s): every (context, continuation) pair scored and every
    prompt plus its generation, times the number of member models (an ensemble runs each expert)."""
    texts = []
    for logged in samples.values():
        for sample in logged:
            for args, resp in zip(sample["arguments"], sample["filtered_resps"]):
                texts.append(args[0])
                texts.append(args[1] if isinstance(args[1], str) else resp)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return members * sum(len(x) for x in ids)


# ---------------------------------------------------------------------------------------------


def mc_pick(sample: dict) -> tuple[int, int]:
    """(pick, gold) of one logged multiple-choice sample: the index of the choice with the largest
    loglikelihood (np.argmax, first on ties, as lm-eval's `acc`) and the gold choice's index.

    Raises where `acc` disagrees with pick == gold: the picks would then describe another scoring rule.
    """
    # filtered_resps: one (loglikelihood, is_greedy) per choice; resps: the same, each wrapped in a list
    if "filtered_resps" in sample:
        lls = [float(r[0]) for r in sample["filtered_resps"]]
    else:
        lls = [float(r[0][0]) for r in sample["resps"]]
    pick = lls.index(max(lls))  # the first of the largest, as np.argmax
    gold = sample.get("target", sample["doc"]["gold"])
    if isinstance(gold, (list, tuple)) or int(gold) != gold:
        raise AssertionError(f"doc {sample['doc'].get('uid')}: gold {gold!r} is not one choice index")
    gold = int(gold)
    if int(sample["acc"]) != int(pick == gold):
        raise AssertionError(f"doc {sample['doc'].get('uid')}: lm-eval's acc {sample['acc']} disagrees with "
                             f"pick {pick} == gold {gold} (loglikelihoods {lls}); the mc task's scoring changed")
    return pick, gold


def _split_scores(results: dict, samples: dict, dataset: str, split: str) -> dict[str, Any]:
    mc, gen = task_name(dataset, split, "mc"), task_name(dataset, split, "gen")
    logged = {t: sorted(samples[t], key=lambda s: s["doc_id"]) for t in (mc, gen)}
    uids = [s["doc"]["uid"] for s in logged[mc]]
    if uids != [s["doc"]["uid"] for s in logged[gen]]:
        raise AssertionError(f"lm-eval scored different rows for {mc} and {gen}")
    picks = [mc_pick(s) for s in logged[mc]]
    per_example = {
        "acc": [int(s["acc"]) for s in logged[mc]],
        "acc_norm": [int(s["acc_norm"]) for s in logged[mc]],
        "exact_match": [int(s["exact_match"]) for s in logged[gen]],
        "pick": [p for p, _ in picks],  # what acc scores: the choice of largest loglikelihood
        "gold": [g for _, g in picks],
    }
    task_of = {"acc": mc, "acc_norm": mc, "exact_match": gen}
    out: dict[str, Any] = {"n": len(uids)}
    out.update({m: float(results[task_of[m]][f"{m},none"]) for m in SCORES})
    out["per_example"] = per_example
    out["uids"] = uids
    return out


def evaluate(cfg: Config, dataset: str, data: Path, model: Path | None, manifest: Path | None,
             meta: dict[str, str], cache: Path | None, out: Path) -> dict[str, Any]:
    """Score `model` (checkpoint / adapter / prepared dir) or `manifest` (ensemble) on the eval splits of
    `data`; write the score file `out` (atomically) and its provenance record; return the score dict."""
    start = time.perf_counter()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local JSON only (read when `datasets` is imported)
    labels = parse_meta(meta, dataset)
    if model is not None and (Path(model) / "boosting.json").is_file():  # an expert directory
        rounds = read_json(Path(model) / "boosting.json")
        if rounds["stopped"]:  # an expected outcome: recorded with its reason, not scored
            score = {"meta": labels, "splits": {}, "stopped": True, "stop_reason": rounds["stop_reason"],
                     "tokens_processed": 0}
            write_json(out, score)
            provenance.record(out, cfg, steps.keys(cfg, "evaluate"), [Path(model) / "boosting.json"],
                              {"step": "evaluate", "meta": labels, "stopped": True, "tokens_processed": 0,
                               "wall_time_s": time.perf_counter() - start})
            return score
        model = Path(model) / "model"
    spec = _lm(model, manifest, cache)
    dtype = scoring_dtype(cfg, labels)
    if dtype != "float32":  # float32: the lm's default, left out of the recorded arguments
        spec.args["dtype"] = dtype
    tasks_dir = write_tasks(cfg, dataset, data)  # bad data fails here, before any model is loaded

    from lm_eval.api.registry import get_model
    from lm_eval.evaluator import evaluate as lm_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    tasks = [task_name(dataset, s, k) for s in cfg.evaluation.splits for k in ("mc", "gen")]
    device = str(models.resolve_device(cfg.evaluation.device))
    lm = get_model(spec.name).create_from_arg_obj(spec.args,
                                                  {"batch_size": cfg.evaluation.batch_size, "device": device})
    # lm-eval's evaluate, not simple_evaluate: the latter also shells out to collect pip/env info (seconds)
    # that provenance records anyway; decoding is greedy, so no seeds are involved
    res = lm_evaluate(lm=lm, task_dict=tm.load(tasks), log_samples=True,
                      bootstrap_iters=0)  # CIs come from `ensemw2s metrics`, over the per-example results
    score = {
        "meta": labels,
        "splits": {s: _split_scores(res["results"], res["samples"], dataset, s) for s in cfg.evaluation.splits},
        "tokens_processed": _tokens_processed(res["samples"], models.load_tokenizer(spec.tokenizer), spec.members),
    }
    write_json(out, score)
    split_files = [Path(data) / f"{s}.jsonl" for s in cfg.evaluation.splits]
    provenance.record(out, cfg, steps.keys(cfg, "evaluate"), [*split_files, *spec.inputs],
                      {"step": "evaluate", "meta": labels, "lm": {"model": spec.name, "args": spec.args},
                       "wall_time_s": time.perf_counter() - start, "tokens_processed": score["tokens_processed"]})
    return score
