"""`ensemw2s plan`: what a config will cost before it is launched (jobs, tokens, device-hours per step).

Jobs are enumerated as the workflow's DAG enumerates them (workflow/rules/common.smk: expert variants x
their expert rounds, ensembles at their own rounds, one student per pair and taught ensemble: config.BoostingSpec
expert_rounds / ensemble_rounds / student_rounds); tests/test_plan.py checks the
counts against a real `snakemake -n`. Tokens follow the steps' own `tokens_processed` accounting, with
rows of `tokens_per_row` tokens (capped at max_length):
- train_expert: (epochs + 1) x weak_train rows (the fit, then the pass that finds the misses); `kind: longer`
  fits T x epochs; a partition member fits 1/T of the rows for about T x epochs, h_1's tokens;
- train_student / train_ceiling: epochs x student_pool rows;
- pseudo_label: members x (student_pool [+ val when students select on it]) x (row + max_new_tokens);
- evaluate: members x scored rows x ((choices + 1) x row + max_new_tokens);
- rate_data with a rater, once per dataset: folds x epochs x the other folds' rows, plus one scoring
  pass (rows = the subsample, else the sum of the configured split sizes).
Hours = tokens / the model's rate in ensemw2s/throughput.yaml (per GPU; gpu: 0 steps use its cpu rates),
plus its per-job start-up (job_overhead_s) for every job with model work.
Torch-free: it reads only the config and the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ensemw2s import catalog, steps
from ensemw2s.config import Config
from ensemw2s.errors import UserError
from ensemw2s.figures import FIGURES
from ensemw2s.strategies import STRATEGIES
from ensemw2s.tables import tables_for
from ensemw2s.variants import METHOD

THROUGHPUT = Path(__file__).with_name("throughput.yaml")

# rule -> the `resources:` step it runs under (common.smk); rules under none are local (fetch_*, all)
RESOURCE_STEP = {"train_ceiling": "train_student", "train_replicate": "train_student", "metrics": "report", "go_no_go": "report", "provenance": "report", "table": "report",
                 "figure": "report"}
KIND = {"rate_data": "train", "train_expert": "train", "train_student": "train", "train_ceiling": "train",
        "train_replicate": "train",
        "pseudo_label": "decode", "evaluate": "score"}
ORDER = ("fetch_model", "fetch_dataset", "prepare_model", "rate_data", "prepare_data", "train_expert", "ensemble_manifest", "pseudo_label", "train_student",
         "train_replicate", "train_ceiling", "evaluate", "go_no_go", "metrics", "provenance", "table", "figure", "all")


@dataclass(frozen=True)
class Job:
    step: str  # the Snakemake rule
    model: str | None  # whose throughput it runs at (None: no model work)
    tokens: float
    jobs: int = 1  # Snakemake jobs it counts as: 0 for the second and later raters of one rate_data


@dataclass(frozen=True)
class Row:
    step: str
    jobs: int
    tokens: float
    gpus: int  # per job (0: a CPU job)
    hours: float  # device-hours: GPU-hours, or CPU job-hours for gpu: 0
    rates: str  # where the rates came from: measured / estimate / none


def gpus(cfg: Config, step: str) -> int:
    step = RESOURCE_STEP.get(step, step)
    return steps.resources(cfg, step)["gpu"] if step in steps.RESOURCES else 0


def jobs(cfg: Config, table: dict) -> list[Job]:
    """Every job of the config's DAG, with the tokens it processes."""
    ex, st, ev = cfg.expert_training, cfg.student_training, cfg.evaluation
    out: list[Job] = []
    raters = {r for d in cfg.datasets if STRATEGIES.get(d.difficulty.strategy).needs_rater for r in d.difficulty.raters}
    models = set(cfg.weak_models()) | set(cfg.strong_models()) | raters
    out += [Job("fetch_model", None, 0.0) for m in sorted(models) if cfg.model(m).source == "hub"]
    out += [Job("prepare_model", None, 0.0) for _ in sorted(models)]
    out += [Job("fetch_dataset", None, 0.0) for d in cfg.datasets
            if d.load_from == "hub" and not catalog.definition(d.name, d.definition).generator]
    for d in cfg.datasets:
        row = _dataset(table, d.name)
        train_row, eval_row = min(row["tokens_per_row"], ex.max_length), row["tokens_per_row"]
        scored = sum(d.sizes[s] if ev.limit is None else min(d.sizes[s], ev.limit) for s in ev.splits)
        per_score = scored * ((row["choices"] + 1) * eval_row + ev.max_new_tokens)
        pool = d.sizes["student_pool"] + (d.sizes["val"] if st.select_on_val else 0)
        per_label = pool * (eval_row + ev.max_new_tokens)
        student = st.epochs * d.sizes["student_pool"] * min(row["tokens_per_row"], st.max_length)
        rater = STRATEGIES.get(d.difficulty.strategy).needs_rater
        n = d.subsample or sum(d.sizes.values())
        folds = d.difficulty.folds
        ensembles = [(e, r) for e in cfg.variants_on(d.name) for r in cfg.boosting.ensemble_rounds(e)]
        taught = [(e, r) for e in cfg.variants_on(d.name) for r in cfg.boosting.student_rounds(e)]
        if rater:  # each rater of the panel fits every fold at its own rate, in the one job
            out += [Job("rate_data", m, (ex.epochs * (folds - 1) * n + n) * train_row, jobs=int(k == 0))
                    for k, m in enumerate(d.difficulty.raters)]
        else:
            out.append(Job("rate_data", None, 0.0))
        for _ in cfg.seeds:
            out.append(Job("prepare_data", None, 0.0))
            for w in cfg.weak_models():
                out.append(Job("evaluate", w, per_score))  # weak base
                for v in cfg.variants_on(d.name, experts_only=True):
                    # a partition member fits 1/T of the rows for T x the epochs: h_1's tokens; longer T x h_1's
                    epochs = ex.epochs * cfg.boosting.epochs_factor(v)
                    for _r in cfg.boosting.expert_rounds(v):
                        out.append(Job("train_expert", w, (epochs + 1) * d.sizes["weak_train"] * train_row))
                        out.append(Job("evaluate", w, per_score))  # the expert alone
                for e, r in ensembles:
                    out.append(Job("ensemble_manifest", None, 0.0))
                    if (e, r) in taught:
                        out.append(Job("pseudo_label", w, r * per_label))
                    if r > 1:
                        out.append(Job("evaluate", w, r * per_score))  # the ensemble
            for s in cfg.strong_models():
                out.append(Job("train_ceiling", s, student))
                out += [Job("evaluate", s, per_score)] * 2  # strong base and ceiling
            for p in cfg.pairs:
                for _ in taught:
                    out.append(Job("train_student", p.strong, student))
                    out.append(Job("evaluate", p.strong, per_score))
                if cfg.aa_replicate():  # the A/A control: a second student of METHOD's h_1
                    out.append(Job("train_replicate", p.strong, student))
                    out.append(Job("evaluate", p.strong, per_score))
        if METHOD in cfg.variants_on(d.name, experts_only=True):  # the first seed's go / no-go, per pair
            out += [Job("go_no_go", None, 0.0) for _ in cfg.pairs]
    out += [Job(step, None, 0.0) for step in ("metrics", "provenance", "all")]
    out += [Job("table", None, 0.0) for _ in tables_for(cfg)] + [Job("figure", None, 0.0) for _ in FIGURES.names()]
    return out


def load_table(path: str | Path = THROUGHPUT) -> dict:
    try:
        table = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"throughput table {path}: {exc}; pass a readable YAML file laid out as {THROUGHPUT}")
    if not isinstance(table, dict) or not {"job_overhead_s", "datasets", "cpu", "gpu"} <= set(table):
        raise UserError(f"throughput table {path}: needs the keys job_overhead_s, datasets, cpu and gpu, as {THROUGHPUT}")
    return table


def _dataset(table: dict, name: str) -> dict:
    if name not in table["datasets"]:
        raise UserError(f"throughput table: no entry for dataset {name!r}; add datasets.{name}: "
                        f"{{tokens_per_row: N, choices: K, source: ...}} to {THROUGHPUT} (or --throughput FILE)")
    return table["datasets"][name]


def _rate(cfg: Config, table: dict, step: str, model: str) -> tuple[float, str]:
    device, kind = ("gpu" if gpus(cfg, step) else "cpu"), KIND[step]
    entries = table[device] or {}
    spec = cfg.model(model)
    entry = entries.get(model) or (entries.get(spec.id) if spec.id else None)
    if not entry or kind not in entry:
        raise UserError(f"throughput table: no {device} {kind} rate for model {model!r} ({step}); add "
                        f"{device}.{model}: {{{kind}: TOKENS_PER_S, source: ...}} to {THROUGHPUT} "
                        f"(or pass --throughput FILE)")
    return float(entry[kind]), str(entry.get("source", "")).split(":")[0] or "unsourced"


def plan(cfg: Config, table: dict) -> list[Row]:
    """One row per step, in DAG order, and a total."""
    by_step: dict[str, list[Job]] = {}
    for job in jobs(cfg, table):
        by_step.setdefault(job.step, []).append(job)
    rows = []
    for step in sorted(by_step, key=ORDER.index):
        hours, sources = 0.0, set()
        for job in by_step[step]:
            if job.model and job.tokens:
                rate, source = _rate(cfg, table, step, job.model)
                device = "gpu" if gpus(cfg, step) else "cpu"
                # a per-GPU rate (N GPUs: 1/N the wall time); start-up is paid by each of the N
                hours += job.tokens / rate / 3600 + table["job_overhead_s"][device] * max(gpus(cfg, step), 1) / 3600
                sources.add(source)
        rows.append(Row(step, sum(j.jobs for j in by_step[step]), sum(j.tokens for j in by_step[step]),
                        gpus(cfg, step) if step in KIND else 0, hours, "/".join(sorted(sources)) or "-"))
    return rows


def render(cfg: Config, rows: list[Row], markdown: bool = False) -> str:
    """The plan as a text (or Markdown) table with the totals."""
    head = ("step", "jobs", "tokens", "GPUs/job", "GPU-hours", "CPU job-hours", "rates")
    body = [(r.step, f"{r.jobs:,}", f"{r.tokens:,.0f}", str(r.gpus) if r.step in KIND else "-",
             f"{r.hours:,.2f}" if r.gpus else "-", f"{r.hours:,.2f}" if r.step in KIND and not r.gpus else "-",
             r.rates) for r in rows]
    gpu_h = sum(r.hours for r in rows if r.gpus)
    cpu_h = sum(r.hours for r in rows if r.step in KIND and not r.gpus)
    body.append(("total", f"{sum(r.jobs for r in rows):,}", f"{sum(r.tokens for r in rows):,.0f}", "",
                 f"{gpu_h:,.2f}", f"{cpu_h:,.2f}", ""))
    title = (f"Cost plan of run `{cfg.run}`: {len(cfg.seeds)} seeds, {len(cfg.datasets)} datasets, "
             f"{len(cfg.pairs)} pairs, {len(cfg.boosting.variants)} variants, T = {cfg.boosting.rounds}; "
             f"rates from ensemw2s/throughput.yaml (measured / estimate: see each entry's source).")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return title + "\n\n" + "\n".join(lines)
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([title, fmt(head), *map(fmt, body)])


def run(cfg: Config, throughput: str | Path | None = None, markdown: bool = False) -> str:
    return render(cfg, plan(cfg, load_table(throughput or THROUGHPUT)), markdown)
