"""Provenance: what produced an artefact, from which inputs, with which code, config and hardware.

`record` writes one JSON record beside an artefact, `<artefact>.provenance.json` (beside, not inside,
so a directory artefact's own hash does not change). `write_run_provenance` aggregates the records of
a run (and Snakemake benchmark TSVs, which carry wall time and memory of every job) into
`<run>/provenance.json`.

Wall time and the timestamp live only here: score files and metrics.csv stay byte-identical on reruns.
"""
from __future__ import annotations

import csv
import hashlib
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ensemw2s.config import Config
from ensemw2s.errors import DataFileError, UserError
from ensemw2s.io import read_json, sha256_file, write_json

PACKAGES = ("torch", "transformers", "peft", "lm_eval", "datasets", "ensemw2s")
SUFFIX = ".provenance.json"
REPO = Path(__file__).resolve().parents[1]


def record_path(artefact: str | Path) -> Path:
    """Where the record of `artefact` lives: `<artefact>.provenance.json`, beside it."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + SUFFIX)


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """{"commit": sha or "unknown", "dirty": bool or None} of the repository holding the package; dirty =
    a tracked file outside results/ differs from the commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        # the committed outputs under results/ are rewritten by the runs themselves: they are not the code
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hardware() -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "gpus": gpus}


def input_hash(path: str | Path) -> str:
    """sha256 of a file; of a directory: sha256 over its files' relative paths and sha256s, sorted."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise UserError(f"provenance input {path} does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\t{sha256_file(f)}\n".encode())
    return h.hexdigest()


def record(out_path: str | Path, cfg: Config, config_keys: Iterable[str], inputs: Iterable[str | Path],
           extra: dict[str, Any] | None = None) -> Path:
    """Write the provenance record of the artefact `out_path`; return the record's path.

    `config_keys` are the top-level config keys that influence the artefact (their hash identifies the
    step's configuration). `extra` may hold `step`, `wall_time_s` and `tokens_processed` (lifted to the
    top level, where `write_run_provenance` finds them) and anything else worth keeping.
    """
    extra = dict(extra or {})
    keys = sorted(config_keys)
    rec = {
        "artefact": str(out_path),
        "step": extra.pop("step", None),
        **git_commit(),
        "config_keys": keys,
        "config_hash": cfg.hash(*keys),
        "seeds": list(cfg.seeds),
        "inputs": {str(p): input_hash(p) for p in inputs},
        "versions": versions(),
        "hardware": hardware(),
        "wall_time_s": extra.pop("wall_time_s", None),
        "tokens_processed": extra.pop("tokens_processed", None),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extra": extra,
    }
    path = record_path(out_path)
    write_json(path, rec)
    return path


def _benchmark(path: Path) -> dict[str, Any]:
    """A Snakemake benchmark TSV -> a step entry (wall time of the job, peak memory, CPU time)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise DataFileError(f"{path}: not a Snakemake benchmark file (expected a tab-separated header with 's')")

    def num(key: str) -> float | None:
        vals = [float(r[key]) for r in rows if r.get(key) not in (None, "", "NA", "-")]
        return sum(vals) / len(vals) if vals else None  # repeats: the mean

    parts = path.with_suffix("").parts
    name = "/".join(parts[parts.index("benchmarks") + 1:]) if "benchmarks" in parts else path.stem
    return {"step": name, "source": str(path), "wall_time_s": num("s"), "max_rss_mb": num("max_rss"),
            "cpu_time_s": num("cpu_time"), "tokens_processed": None}


def _record_entry(path: Path) -> dict[str, Any]:
    rec = read_json(path)
    if not isinstance(rec, dict) or "artefact" not in rec:
        raise DataFileError(f"{path}: not a provenance record (written by ensemw2s.provenance.record)")
    keep = ("step", "artefact", "commit", "dirty", "config_hash", "inputs", "hardware", "versions",
            "wall_time_s", "tokens_processed", "timestamp")
    return {"source": str(path), **{k: rec.get(k) for k in keep}}


def _expand(records: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory contributes every record and benchmark TSV below it (found at run
    time, so a workflow rule can name the run directory before its jobs have written anything)."""
    out = []
    for p in map(Path, records):
        if p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file() and (f.name.endswith(SUFFIX) or f.suffix == ".tsv")]
        else:
            out.append(p)
    return sorted(set(out))


def write_run_provenance(cfg: Config, records: Iterable[str | Path], out: str | Path) -> dict[str, Any]:
    """Aggregate per-artefact records (`*.provenance.json`) and Snakemake benchmark TSVs into `out`.
    Directories among `records` are searched for both."""
    steps = []
    for path in _expand(records):
        if not path.is_file():
            raise UserError(f"provenance record {path} not found")
        steps.append(_benchmark(path) if path.suffix == ".tsv" else _record_entry(path))
    here = git_commit()
    commits = sorted({s["commit"] for s in steps if s.get("commit")} | {here["commit"]})
    jobs = [s for s in steps if s["source"].endswith(".tsv")]
    # a job with both a benchmark and a record must not count twice: wall time from the benchmarks
    # (every job has one) when there are any, tokens from the records (only they know tokens)
    timed = jobs or steps
    summary = {
        "run": cfg.run,
        **here,
        "commits_seen": commits,
        "config": cfg.raw,
        "config_hash": cfg.hash(),
        "versions": versions(),
        "seeds": list(cfg.seeds),
        # the tier each dataset's student pool is drawn from (METHOD.md: easy = the W2S protocol)
        "student_pool": {ds.name: ds.student_pool for ds in cfg.datasets},
        "hardware": hardware(),
        "steps": steps,
        "totals": {
            "steps": len(steps),
            "wall_time_s": sum(s["wall_time_s"] for s in timed if s.get("wall_time_s") is not None),
            "tokens_processed": sum(s["tokens_processed"] for s in steps if s.get("tokens_processed") is not None),
        },
    }
    write_json(out, summary)
    return summary
