# Validation, the resolved config every step reads, path patterns, resources and input functions.
# No science here: which experts form which ensemble comes from ensemw2s.config.Config.
import os
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ensemw2s import config as ew_config
from ensemw2s.config import stable_hash
from ensemw2s.errors import UserError
from ensemw2s.report import FIGURES as FIGURE_REGISTRY, TABLES as TABLE_REGISTRY

# One schema for the CLI and the workflow (workflow/schemas/config.schema.yaml links to the package's).
validate(config, "../schemas/config.schema.yaml")
try:
    C = ew_config.from_dict(config)
except UserError as exc:
    raise WorkflowError(f"invalid config: {exc}")

RUN = str(C.run_dir)
CFG = f"{RUN}/config.yaml"  # the resolved config every `ensemw2s` call reads


def _write_if_changed(path, text):
    """Keep the resolved config's mtime stable unless its content changes (no spurious reruns)."""
    p = Path(path)
    if p.is_file() and p.read_text() == text:
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


_write_if_changed(CFG, yaml.safe_dump(C.raw, sort_keys=True))

T = C.boosting.rounds
ROUNDS = list(range(1, T + 1))
SEEDS = list(C.seeds)
DATASETS = [d.name for d in C.datasets]
PAIRS = list(C.pairs)
WEAK = C.weak_models()
STRONG = C.strong_models()
ENSEMBLES = C.ensembles()  # name -> (variant, weighting)
VARIANTS = list(C.boosting.variants)
SPLITS = list(C.evaluation.splits)
TABLES = list(TABLE_REGISTRY.names())
FIGURES = list(FIGURE_REGISTRY.names())

wildcard_constraints:
    seed=r"\d+",
    r=r"\d+",
    variant="|".join(["boost", "bagging", "sequence"]),
    ensemble=r"[a-z]+(-[a-z]+)?",
    dataset=r"[A-Za-z0-9_]+",
    weak=r"[A-Za-z0-9._-]+",
    strong=r"[A-Za-z0-9._-]+",
    model=r"[A-Za-z0-9._-]+",


# --- resources: defaults per step, overridden by config `resources.<step>` --------------------
_RESOURCE_DEFAULTS = {
    "prepare_model": dict(gpu=0, mem_mb=16000, runtime=120, cpus_per_gpu=4, threads=1),
    "prepare_data": dict(gpu=1, mem_mb=16000, runtime=240, cpus_per_gpu=4, threads=1),
    "train_expert": dict(gpu=1, mem_mb=32000, runtime=480, cpus_per_gpu=8, threads=1),
    "ensemble_manifest": dict(gpu=0, mem_mb=4000, runtime=10, cpus_per_gpu=1, threads=1),
    "pseudo_label": dict(gpu=1, mem_mb=32000, runtime=240, cpus_per_gpu=8, threads=1),
    "train_student": dict(gpu=1, mem_mb=64000, runtime=720, cpus_per_gpu=8, threads=1),
    "evaluate": dict(gpu=1, mem_mb=32000, runtime=240, cpus_per_gpu=8, threads=1),
    "report": dict(gpu=0, mem_mb=4000, runtime=30, cpus_per_gpu=1, threads=1),
}


def res(step):
    """Resources of a step: threads is separate in Snakemake, the rest go to `resources:`."""
    merged = {**_RESOURCE_DEFAULTS[step], **C.resources.get(step, {})}
    merged.pop("threads")
    return merged


def threads(step):
    return {**_RESOURCE_DEFAULTS[step], **C.resources.get(step, {})}["threads"]


# Jobs find `ensemw2s` beside the Python running Snakemake, whether or not its environment is activated
# (`make run` calls .venv/bin/snakemake; job shells only search PATH).
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])

# Every shell line runs the CLI with the job's thread budget (torch would otherwise take every core).
ENV = "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} HF_HUB_DISABLE_TELEMETRY=1"
EW = f"{ENV} ensemw2s"


# --- config identities: a job reruns when a key that influences it changes (params trigger) ---
def h(*parts):
    return stable_hash([C.raw.get(p) if isinstance(p, str) and p in C.raw else p for p in parts])


def model_hash(name):
    return stable_hash(C.raw["models"][name])


def prepared_model_hash(name):
    """A tiny model is also built from the first seed and its pretrain dataset's options."""
    spec = C.model(name)
    if spec.source != "tiny":
        return model_hash(name)
    return stable_hash([C.raw["models"][name], C.seeds[0], C.dataset(spec.tiny.pretrain_dataset).options])


def dataset_hash(name):
    spec = C.dataset(name)
    parts = [ew_config.as_dict(spec), C.data_dir]
    if spec.difficulty.strategy == "model":  # the rater is fine-tuned with the expert settings
        parts.append(C.raw["training"]["expert"])
    return stable_hash(parts)


# evaluation keys that change scores (bootstrap only changes metrics.csv)
EVAL_KEYS = ("batch_size", "max_new_tokens", "splits", "limit", "device")


def eval_hash():
    return stable_hash({k: C.raw["evaluation"][k] for k in EVAL_KEYS})


# --- paths -------------------------------------------------------------------------------------
def data_dir(dataset, seed):
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


def ceiling_dir(strong, dataset, seed):
    return f"{RUN}/ceiling/{strong}/{dataset}/s{seed}"


def ensemble_rounds(ensemble):
    """Rounds at which an ensemble is its own object: at r = 1 every ensemble is the single expert h_1,
    scored and used once (as the `expert` role and the `boost` ensemble)."""
    return ROUNDS if ensemble in VARIANTS else [r for r in ROUNDS if r > 1]


def student_ensembles():
    return [(e, r) for e in ENSEMBLES for r in ensemble_rounds(e)]


def log(path):
    return f"{RUN}/logs/{path}.log"


def bench(path):
    return f"{RUN}/benchmarks/{path}.tsv"


# --- targets -----------------------------------------------------------------------------------
def score_files():
    out = []
    for ds in DATASETS:
        for s in SEEDS:
            base = f"{RUN}/scores/{ds}/s{s}"
            out += [f"{base}/weak_base/{w}.json" for w in WEAK]
            out += [f"{base}/strong_base/{m}.json" for m in STRONG]
            out += [f"{base}/ceiling/{m}.json" for m in STRONG]
            for w in WEAK:
                out += [f"{base}/expert/{w}/{v}/r{r}.json" for v in VARIANTS for r in ROUNDS]
                out += [f"{base}/ensemble/{w}/{e}/r{r}.json" for e in ENSEMBLES for r in ensemble_rounds(e) if r > 1]
            for p in PAIRS:
                out += [f"{base}/student/{p.name}/{e}/r{r}.json" for e, r in student_ensembles()]
    return out


def pseudo_meta_files():
    """The sidecar of every pseudo-label file: truncated and choice-matching pseudo-answers."""
    return [pseudo(w, ds, s, e, r) + ".meta.json" for ds in DATASETS for s in SEEDS for w in WEAK
            for e, r in student_ensembles()]


def expert_dirs():
    return [expert_dir(w, ds, s, v, r) for ds in DATASETS for s in SEEDS for w in WEAK for v in VARIANTS for r in ROUNDS]


def report_targets():
    out = [f"{RUN}/tables/{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    out += [f"{RUN}/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]
    return out
