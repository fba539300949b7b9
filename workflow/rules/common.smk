# Validation, the resolved config every step reads, names, path patterns, resources and input functions.
# No science here: every name comes from a registry or the config (ensemw2s.config.Config), and every
# rerun trigger from ensemw2s.steps. Parsing imports only light modules (no torch, no transformers), and
# writes nothing: the resolved config is written when the workflow starts (onstart).
import functools
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ensemw2s import catalog, steps
from ensemw2s import config as ew_config
from ensemw2s.errors import UserError
from ensemw2s.figures import FIGURES as FIGURE_REGISTRY
from ensemw2s.scores import ROLES
from ensemw2s.strategies import STRATEGIES
from ensemw2s.tables import TABLES as TABLE_REGISTRY, tables_for
from ensemw2s.variants import METHOD

# One schema for the CLI and the workflow (workflow/schemas/config.schema.yaml links to the package's).
validate(config, "../schemas/config.schema.yaml")
try:
    C = ew_config.from_dict(config)
except UserError as exc:
    raise WorkflowError(f"invalid config: {exc}")

RUN = str(C.run_dir)
CFG = f"{RUN}/config.yaml"  # the resolved config every `ensemw2s` call reads


onstart:
    # rewritten only when its content changes, atomically, so a job never reads half a file
    p, text = Path(CFG), yaml.safe_dump(C.raw, sort_keys=True)
    if not (p.is_file() and p.read_text() == text):
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, p)


T = C.boosting.rounds
ROUNDS = list(range(1, T + 1))
SEEDS = list(C.seeds)
DATASETS = [d.name for d in C.datasets]
PAIRS = list(C.pairs)
WEAK = C.weak_models()
STRONG = C.strong_models()
VARIANTS = list(C.boosting.variants)  # every variant is an ensemble
EXPERT_VARIANTS = C.boosting.expert_variants()  # the variants that train experts
TABLES = TABLE_REGISTRY.names()
FIGURES = FIGURE_REGISTRY.names()


def one_of(names):
    return "|".join(map(re.escape, names))


wildcard_constraints:
    seed=r"\d+",
    r=r"\d+",
    variant=one_of(EXPERT_VARIANTS),
    ensemble=one_of(VARIANTS),
    dataset=one_of(DATASETS),
    weak=one_of(C.models),
    strong=one_of(C.models),
    model=one_of(C.models),
    role=one_of(ROLES),


# --- resources: defaults per step, overridden by config `resources.<step>` --------------------


def res(step):
    """Resources of a step (ensemw2s.steps.resources): threads is separate in Snakemake, the rest go to
    `resources:`."""
    merged = steps.resources(C, step)
    merged.pop("threads")
    return merged


def threads(step):
    return steps.resources(C, step)["threads"]


# Every shell line runs the CLI of the Python running Snakemake (whether or not its environment is
# activated: job shells only search PATH) with the job's thread budget (torch would take every core).
# Jobs do not reach the hub (HF_HUB_OFFLINE=1): hub models and datasets are read from the copies that
# fetch_model / fetch_dataset downloaded on the submitting node, so compute nodes need no internet.
# EW_ONLINE (the hub on) is for those two local rules only (data.smk).
EW_ONLINE = (f"OMP_NUM_THREADS={{threads}} MKL_NUM_THREADS={{threads}} HF_HUB_DISABLE_TELEMETRY=1"
             f" {shlex.quote(sys.executable)} -m ensemw2s")
EW = f"HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {EW_ONLINE}"


@functools.cache
def _step_hash(step, labels):
    return steps.identity(C, step, **dict(labels))


def step_hash(step, **labels):
    """A job reruns when a config key its step depends on changes (the params trigger)."""
    return _step_hash(step, tuple(sorted(labels.items())))


# --- paths -------------------------------------------------------------------------------------
def fetched_model(model):
    """The run's copy of a `source: hub` model (fetch_model), read by every job in place of the hub."""
    return f"{RUN}/hub/models/{model}"


def fetched_dataset(dataset):
    """The run's copy of a `load_from: hub` dataset (fetch_dataset), read by prepare_data."""
    return f"{RUN}/hub/datasets/{dataset}"


def ratings_dir(dataset):
    """The dataset's one difficulty rating (rate_data), cut into every seed's splits."""
    return f"{RUN}/ratings/{dataset}"


def split_dir(dataset, seed):
    return f"{RUN}/data/{dataset}/s{seed}"


def expert_dir(weak, dataset, seed, variant, r):
    return f"{RUN}/experts/{weak}/{dataset}/s{seed}/{variant}/r{r}"


def manifest(weak, dataset, seed, ensemble, r):
    return f"{RUN}/ensembles/{weak}/{dataset}/s{seed}/{ensemble}/r{r}.json"


def pseudo(weak, dataset, seed, ensemble, r):
    return f"{RUN}/pseudo/{weak}/{dataset}/s{seed}/{ensemble}/r{r}.jsonl"


def pseudo_val(weak, dataset, seed, ensemble, r):
    """The same ensemble's answers for val: what its students select their epoch on (never gold val)."""
    return pseudo(weak, dataset, seed, ensemble, r).removesuffix(".jsonl") + ".val.jsonl"


# students select on their supervisor's val answers (select_on_val), else train a fixed number of epochs
STUDENT_SELECTS = C.student_training.select_on_val


def student_dir(weak, strong, dataset, seed, ensemble, r):
    return f"{RUN}/students/{weak}__{strong}/{dataset}/s{seed}/{ensemble}/r{r}"


def replicate_dir(weak, strong, dataset, seed, ensemble, r):
    """The A/A control: the student of the same supervisor trained with another seed (--replicate 1)."""
    return f"{RUN}/replicates/{weak}__{strong}/{dataset}/s{seed}/{ensemble}/r{r}"


AA_REPLICATE = C.aa_replicate()  # the A/A control: a second student of METHOD's h_1


def ceiling_dir(strong, dataset, seed):
    return f"{RUN}/ceiling/{strong}/{dataset}/s{seed}"


def score_file(dataset, seed, role, subject):
    return f"{RUN}/scores/{dataset}/s{seed}/{role}/{subject}.json"


def student_ensembles(dataset):
    """(ensemble, r) that write pseudo-labels and teach students on `dataset` (not the partition control's)."""
    return [(e, r) for e in C.variants_on(dataset) for r in C.boosting.student_rounds(e)]


def log(path):
    return f"{RUN}/logs/{path}.log"


def bench(path):
    return f"{RUN}/benchmarks/{path}.tsv"


# --- what a score file scores: role -> (input, evaluate's arguments, labels), from its subject ------
def _scored_model(w, parts):
    (model,) = parts
    side = "weak" if w.role == "weak_base" else "strong"
    path = f"{RUN}/models/{model}"
    return path, f"--model {path}", f"{side}_model={model} round=0"


def _scored_expert(w, parts):
    weak, variant, r = parts
    path = expert_dir(weak, w.dataset, w.seed, variant, r[1:])
    return path, f"--model {path}", f"weak_model={weak} ensemble={variant} round={r[1:]}"


def _scored_ensemble(w, parts):
    weak, ensemble, r = parts
    path = manifest(weak, w.dataset, w.seed, ensemble, r[1:])
    return (path, f"--manifest {path} --cache {RUN}/cache/{w.dataset}/s{w.seed}",
            f"weak_model={weak} ensemble={ensemble} round={r[1:]}")


def _scored_student(w, parts):
    pair, ensemble, r = parts
    weak, strong = pair.split("__")
    path = student_dir(weak, strong, w.dataset, w.seed, ensemble, r[1:])
    return path, f"--model {path}/model", f"weak_model={weak} strong_model={strong} ensemble={ensemble} round={r[1:]}"


def _scored_replicate(w, parts):
    pair, ensemble, r = parts
    weak, strong = pair.split("__")
    path = replicate_dir(weak, strong, w.dataset, w.seed, ensemble, r[1:])
    return path, f"--model {path}/model", f"weak_model={weak} strong_model={strong} ensemble={ensemble} round={r[1:]}"


def _scored_ceiling(w, parts):
    (strong,) = parts
    path = ceiling_dir(strong, w.dataset, w.seed)
    return path, f"--model {path}/model", f"strong_model={strong} round=0"


SCORED = {"weak_base": _scored_model, "strong_base": _scored_model, "expert": _scored_expert,
          "ensemble": _scored_ensemble, "student": _scored_student, "replicate": _scored_replicate,
          "ceiling": _scored_ceiling}
if set(SCORED) != set(ROLES):
    raise WorkflowError(f"workflow/rules/common.smk: SCORED covers {sorted(SCORED)}, the score roles are {sorted(ROLES)}")


def scored(w):
    """(input path, evaluate's arguments, the labels stored with the scores) of score file w.role/w.subject."""
    return SCORED[w.role](w, w.subject.split("/"))


# --- targets -----------------------------------------------------------------------------------
def score_files():
    out = []
    for ds in DATASETS:
        for s in SEEDS:
            out += [score_file(ds, s, "weak_base", w) for w in WEAK]
            out += [score_file(ds, s, role, m) for role in ("strong_base", "ceiling") for m in STRONG]
            for w in WEAK:
                out += [score_file(ds, s, "expert", f"{w}/{v}/r{r}") for v in C.variants_on(ds, experts_only=True)
                        for r in C.boosting.expert_rounds(v)]
                out += [score_file(ds, s, "ensemble", f"{w}/{e}/r{r}") for e in C.variants_on(ds)
                        for r in C.boosting.ensemble_rounds(e) if r > 1]
            for p in PAIRS:
                out += [score_file(ds, s, "student", f"{p.name}/{e}/r{r}") for e, r in student_ensembles(ds)]
                if AA_REPLICATE:
                    out.append(score_file(ds, s, "replicate", f"{p.name}/{METHOD}/r1"))
    return out


GATE_SEED = SEEDS[0]  # the go / no-go is decided on the first seed, before the others are paid for


def go_no_go_file(dataset, weak, strong):
    return f"{RUN}/go_no_go/{dataset}/{weak}__{strong}.json"


def go_no_go_files():
    """One gate per dataset and pair, where the run trains METHOD's h_1 (ensemw2s.planning.go_no_go)."""
    return [go_no_go_file(ds, p.weak, p.strong) for ds in DATASETS for p in PAIRS
            if METHOD in C.variants_on(ds, experts_only=True)]


def pseudo_meta_files():
    """The sidecar of every pseudo-label file: truncated and choice-matching pseudo-answers."""
    return [pseudo(w, ds, s, e, r) + ".meta.json" for ds in DATASETS for s in SEEDS for w in WEAK
            for e, r in student_ensembles(ds)]


def expert_dirs():
    return [expert_dir(w, ds, s, v, r) for ds in DATASETS for s in SEEDS for w in WEAK
            for v in C.variants_on(ds, experts_only=True) for r in C.boosting.expert_rounds(v)]


def report_targets():
    out = [f"{RUN}/tables/{t}.{ext}" for t in tables_for(C) for ext in ("csv", "md", "tex")]
    out += [f"{RUN}/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    return out
