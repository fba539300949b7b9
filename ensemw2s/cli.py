"""`ensemw2s <step> ...`: one subcommand per workflow stage.

Each subcommand parses its arguments and calls ONE package function; all paths are explicit (the
Snakemake rules name them), so a step can be rerun by hand from its log line. Bad input ends with one
line naming the problem and exit code 2. `ensemw2s lm-eval ARGS` is lm-eval's own CLI with the
`ensemw2s` model registered (lmeval_model.run_lm_eval_cli).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ensemw2s.errors import UserError

LM_EVAL = "lm-eval"  # the pass-through subcommand


def _meta(pairs: list[str]) -> dict[str, str]:
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--meta {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _rater_models(items: list[str]) -> dict[str, Path]:
    """rate-data's `--rater-model NAME=PATH ...` as name -> checkpoint."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--rater-model {item!r}: expected NAME=PATH, NAME a model of difficulty.rater and "
                            f"PATH its prepare-model output")
        if name in out:
            raise UserError(f"--rater-model {name}=...: given twice; pass each rater once")
        out[name] = Path(path)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ensemw2s", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--config", required=True, type=Path, help="run configuration (YAML)")
        sp.add_argument("--data-dir", default=None, help="override data_dir of the config")
        return sp

    def rating_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--rater-model", action="append", default=[], metavar="NAME=PATH",
                        help="difficulty 'model': the prepared checkpoint of rater NAME (one of difficulty.rater); "
                             "repeat it once per rater of a panel")
        sp.add_argument("--fetched", type=Path, default=None, help="load_from hub: the local copy of `ensemw2s fetch`")

    sp = step("rate-data", "Rate one dataset's difficulty once, for every seed (rated.jsonl + manifest.json).")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--out", required=True, type=Path, help="output directory")
    rating_args(sp)

    sp = step("prepare-data", "Write the seeded difficulty splits of one dataset (one JSONL per split + manifest.json).")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--seed", type=int, default=None, help="default: the config's first seed")
    sp.add_argument("--out", required=True, type=Path, help="output directory")
    sp.add_argument("--ratings", type=Path, default=None,
                    help="rate-data's output (the workflow's); without it the dataset is rated here, as rate-data would")
    rating_args(sp)

    sp = step("fetch", "Download a `source: hub` model or a `load_from: hub` dataset at a commit (needs internet).")
    what = sp.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a `source: hub` model entry, at its revision")
    what.add_argument("--dataset", help="a `load_from: hub` dataset, at its default branch's commit")
    sp.add_argument("--out", required=True, type=Path)

    sp = step("prepare-model", "Materialise a model entry as a local checkpoint (tiny: build + pretrain; gguf: convert).")
    sp.add_argument("--model", required=True)
    sp.add_argument("--out", required=True, type=Path)
    sp.add_argument("--fetched", type=Path, default=None, help="hub models: the local copy of `ensemw2s fetch`")

    sp = step("train-expert", "Train boosting round R's weak expert and write its eps/alpha and next token weights.")
    sp.add_argument("--weak", required=True)
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--variant", required=True, help="a variant that trains experts (config boosting.variants)")
    sp.add_argument("--round", type=int, required=True)
    sp.add_argument("--data", required=True, type=Path, help="split directory of prepare-data")
    sp.add_argument("--base", required=True, type=Path, help="weak base checkpoint (prepare-model)")
    sp.add_argument("--prev", type=Path, default=None, help="previous round's expert directory (round > 1)")
    sp.add_argument("--out", required=True, type=Path)

    sp = step("ensemble", "Write the manifest of the ensemble of the given experts (paths, weights, combine).")
    sp.add_argument("--experts", required=True, nargs="+", type=Path, help="expert directories, rounds 1..r")
    sp.add_argument("--variant", required=True, help="the variant the ensemble is (config boosting.variants)")
    sp.add_argument("--out", required=True, type=Path)

    sp = step("pseudo-label", "Answer student_pool with the ensemble's greedy decoding (no gold in the output).")
    sp.add_argument("--manifest", required=True, type=Path)
    sp.add_argument("--data", required=True, type=Path)
    sp.add_argument("--out", required=True, type=Path)
    sp.add_argument("--val-out", type=Path, default=None,
                    help="also answer the val questions into this JSONL (what students select their epoch on)")

    sp = step("train-student", "Fine-tune the strong model on pseudo-answers (student) or gold answers (ceiling).")
    sp.add_argument("--strong", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--data", required=True, type=Path)
    sp.add_argument("--base", required=True, type=Path, help="strong base checkpoint (prepare-model)")
    who = sp.add_mutually_exclusive_group(required=True)
    who.add_argument("--labels", type=Path, help="pseudo-label JSONL: train a student")
    who.add_argument("--gold", action="store_true", help="use student_pool's gold answers: train the ceiling")
    sp.add_argument("--val-labels", type=Path, default=None,
                    help="a student with select_on_val: the supervisor's val answers (pseudo-label --val-out), "
                         "never val.jsonl's gold; the ceiling selects on gold val without it")
    sp.add_argument("--replicate", type=int, default=0,
                    help="N >= 1: the same student trained with another seed (the A/A control); 0: the student")
    sp.add_argument("--processes", type=int, default=1,
                    help="train on this many GPUs of one node: N > 1 reruns this command under torchrun (DDP)")
    sp.add_argument("--out", required=True, type=Path)

    sp = step("evaluate", "Score one model or ensemble on the eval splits with lm-eval (acc, acc_norm, exact_match).")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--data", required=True, type=Path)
    what = sp.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="a checkpoint, LoRA adapter or prepared model directory")
    what.add_argument("--manifest", type=Path, help="an ensemble manifest")
    sp.add_argument("--meta", nargs="*", default=[], help="KEY=VALUE labels stored with the scores")
    sp.add_argument("--cache", type=Path, default=None, help="per-expert token-probability cache directory")
    sp.add_argument("--out", required=True, type=Path)

    sp = step("metrics", "Collect score files into the tidy metrics.csv (accuracy, PGR, CIs, best round).")
    sp.add_argument("--scores", required=True, nargs="+", type=Path)
    sp.add_argument("--boosting", nargs="*", default=[], type=Path, help="boosting.json files (eps/alpha per round)")
    sp.add_argument("--pseudo", nargs="*", default=[], type=Path,
                    help="pseudo-label sidecars <labels>.meta.json (truncated / choice-matching answers)")
    sp.add_argument("--out", required=True, type=Path)

    sp = step("report", "Write one table (CSV, Markdown, LaTeX) or figure (PNG, PDF) from metrics.csv.")
    sp.add_argument("--name", required=True)
    sp.add_argument("--metrics", required=True, type=Path)
    sp.add_argument("--boosting", nargs="*", default=[], type=Path)
    sp.add_argument("--out", required=True, type=Path, help="output path without extension")

    sp = sub.add_parser("readme", help="Generate the README's results tables from the committed results/.",
                        description="Render README.md's generated blocks from results/ (see ensemw2s/readme.py); "
                                    "without --write, exit 1 if any block differs.")
    sp.add_argument("--readme", type=Path, default=Path("README.md"))
    sp.add_argument("--write", action="store_true", help="rewrite the blocks instead of checking them")

    sp = step("plan", "Print the config's cost before launch: jobs, tokens and GPU-hours per step (ensemw2s/plan.py).")
    sp.add_argument("--throughput", type=Path, default=None,
                    help="a throughput table laid out as ensemw2s/throughput.yaml (default: that file)")
    sp.add_argument("--markdown", action="store_true", help="print a Markdown table")

    sp = step("power-plan", "Print a real run's pre-registered plan (test sizes, second variant) from committed runs.")
    sp.add_argument("--committed", required=True, type=Path, help="a committed run of the pair: its discordances")
    sp.add_argument("--ablation", required=True, type=Path, help="a committed ablation: the second variant")
    sp.add_argument("--delta", type=float, default=5.0, help="the effect to detect, accuracy points (default 5)")
    sp.add_argument("--floor", type=float, default=0.2, help="the least planning discordance (default 0.2)")

    sp = step("go-no-go", "Decide whether a pair leaves room for W2S on seed 0: the ceiling beats h_1 beyond noise.")
    sp.add_argument("--scores", required=True, nargs="+", type=Path,
                    help="one score file each of weak_base, strong_base, expert (h_1) and ceiling")
    sp.add_argument("--out", required=True, type=Path, help="the gate's JSON")

    sp = step("provenance", "Write the run's provenance.json (commit, config hash, versions, seeds, step times).")
    sp.add_argument("--records", nargs="*", default=[], type=Path, help="per-step provenance records")
    sp.add_argument("--out", required=True, type=Path)

    # here for the step list of --help only: main() hands `lm-eval ...` to lm-eval's parser, unparsed
    sub.add_parser(LM_EVAL, add_help=False, help="lm-eval's CLI with the ensemw2s model registered, e.g. "
                   "ensemw2s lm-eval --model ensemw2s --model_args manifest=M --tasks T (lm-eval's --help)")
    return p


def _dispatch(args: argparse.Namespace) -> None:
    if args.step == "readme":  # reads each run's own resolved config
        from ensemw2s.readme import readme

        stale = readme(args.readme, write=args.write)
        if stale and not args.write:
            raise UserError(f"{args.readme}: generated blocks differ from results/: {'; '.join(stale)}; "
                            f"run `ensemw2s readme --write` and commit")
        return
    from ensemw2s import config as config_mod

    cfg = config_mod.load(args.config, {"data_dir": args.data_dir})
    s = args.step
    if s == "rate-data":
        from ensemw2s.splits import rate_data

        rate_data(cfg, args.dataset, args.out, rater_models=_rater_models(args.rater_model), fetched=args.fetched)
    elif s == "prepare-data":
        from ensemw2s.splits import prepare_data

        seed = cfg.seeds[0] if args.seed is None else args.seed
        prepare_data(cfg, args.dataset, seed, args.out, ratings=args.ratings,
                     rater_models=_rater_models(args.rater_model), fetched=args.fetched)
    elif s == "fetch":
        from ensemw2s.fetch import fetch_dataset, fetch_model

        if args.model is not None:
            fetch_model(cfg, args.model, args.out)
        else:
            fetch_dataset(cfg, args.dataset, args.out)
    elif s == "prepare-model":
        from ensemw2s.models import prepare_model

        prepare_model(cfg, args.model, args.out, fetched=args.fetched)
    elif s == "train-expert":
        from ensemw2s.rounds import train_expert

        train_expert(cfg, weak=args.weak, dataset=args.dataset, seed=args.seed, variant=args.variant,
                     round=args.round, data=args.data, base=args.base, prev=args.prev, out=args.out)
    elif s == "ensemble":
        from ensemw2s.manifest import write_manifest

        write_manifest(cfg, args.experts, args.variant, args.out)
    elif s == "pseudo-label":
        from ensemw2s.pseudolabel import pseudo_label

        pseudo_label(cfg, args.manifest, args.data, args.out, val_out=args.val_out)
    elif s == "train-student":
        from ensemw2s.students import train_student

        train_student(cfg, strong=args.strong, seed=args.seed, data=args.data, base=args.base,
                      labels=args.labels, gold=args.gold, out=args.out, val_labels=args.val_labels,
                      replicate=args.replicate)
    elif s == "evaluate":
        from ensemw2s.evaluate import evaluate

        evaluate(cfg, dataset=args.dataset, data=args.data, model=args.model, manifest=args.manifest,
                 meta=_meta(args.meta), cache=args.cache, out=args.out)
    elif s == "metrics":
        from ensemw2s.collect import write_metrics

        write_metrics(cfg, args.scores, args.boosting, args.out, args.pseudo)
    elif s == "report":
        from ensemw2s.report import make
        from ensemw2s.tables import protocol_note

        make(args.name, args.metrics, args.boosting, args.out, caption_note=protocol_note(cfg))
    elif s == "plan":
        from ensemw2s.plan import run

        print(run(cfg, args.throughput, markdown=args.markdown))
    elif s == "power-plan":
        from ensemw2s.planning import plan

        print(plan(cfg, args.committed, args.ablation, args.delta, args.floor))
    elif s == "go-no-go":
        from ensemw2s.io import write_json
        from ensemw2s.planning import go_no_go, render_go_no_go

        gate = go_no_go(args.scores)
        write_json(args.out, gate)
        print(render_go_no_go(gate))
    elif s == "provenance":
        from ensemw2s.provenance import write_run_provenance

        write_run_provenance(cfg, args.records, args.out)
    else:  # argparse's choices make this unreachable
        raise AssertionError(s)


def _torchrun(n: int, argv: list[str]) -> None:
    """Replace this process by torchrun running the same command as n processes on this node; each sees
    LOCAL_RANK, so none relaunches. exec, not a child: a SLURM signal reaches torchrun, which stops them."""
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={n}", "-m", "ensemw2s", *argv])


def _lm_eval(argv: list[str]) -> int:
    from ensemw2s.lmeval_model import run_lm_eval_cli

    try:
        run_lm_eval_cli(argv)
    except UserError as exc:  # e.g. a bad manifest= in --model_args
        print(f"ensemw2s {LM_EVAL}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LM_EVAL]:
        return _lm_eval(argv[1:])
    args = _parser().parse_args(argv)
    if getattr(args, "processes", 1) > 1 and "LOCAL_RANK" not in os.environ:
        _torchrun(args.processes, argv)
    # job logs hold the step's own lines (a bad input: just the error), not progress bars of weight loading
    # and dataset mapping; read when huggingface_hub / datasets are imported (lazily, in _dispatch)
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    try:
        _dispatch(args)
    except UserError as exc:
        print(f"ensemw2s {args.step}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
