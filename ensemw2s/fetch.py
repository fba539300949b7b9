"""Hub models and datasets fetched once, on the node with internet, into the run's store.

`ensemw2s fetch` (a Snakemake local rule: it runs where Snakemake runs) resolves a `source: hub` model
entry's revision, or a `load_from: hub` dataset's default branch, to a commit and downloads that commit
into `<run>/hub/models/<name>/` or `<run>/hub/datasets/<name>/`. Every other job runs with
HF_HUB_OFFLINE=1 and reads that copy (`prepare-model --fetched`, `prepare-data --fetched`), so compute
nodes need no internet and concurrent jobs never download into, or race on, one shared hub cache.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from ensemw2s import catalog, provenance, steps
from ensemw2s.config import Config
from ensemw2s.errors import UserError
from ensemw2s.io import atomic_dir, read_json

COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_commit(repo_id: str, revision: str | None, repo_type: str = "model") -> str:
    """The commit a revision (branch, tag, commit or None = the default branch) names now."""
    if revision and COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import HfApi

    info = HfApi().model_info if repo_type == "model" else HfApi().dataset_info
    return info(repo_id, revision=revision).sha


def _download(repo_id: str, revision: str | None, repo_type: str, out: Path, what: str, fix: str) -> str:
    """Download repo_id at its resolved commit to `out` (atomically); return the commit."""
    import httpx2  # huggingface_hub's HTTP client: its network errors (no route, DNS) are no OSErrors
    from huggingface_hub import snapshot_download

    try:
        commit = resolve_commit(repo_id, revision, repo_type)
        with atomic_dir(out) as tmp:
            snapshot_download(repo_id=repo_id, revision=commit, repo_type=repo_type, local_dir=tmp)
    except (OSError, httpx2.HTTPError) as exc:  # no such repo or revision, no network, a full disk
        raise UserError(
            f"{what}: cannot fetch {repo_id!r} at revision {revision or 'main'} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}); run the fetch on a node with internet (Snakemake runs it there), {fix}"
        ) from None
    return commit


def fetch_model(cfg: Config, name: str, out: Path) -> None:
    """Download model entry `name` at its resolved commit to `out` and record the commit."""
    spec = cfg.model(name)
    if spec.source != "hub":
        raise UserError(f"models.{name}: source is {spec.source!r}; only `source: hub` models are fetched")
    start = time.perf_counter()
    commit = _download(spec.id, spec.revision, "model", Path(out), f"models.{name}",
                       "fix the id or revision, or point the entry at a local copy (source: path)")
    provenance.record(out, cfg, steps.keys(cfg, "fetch_model", model=name), [], {
        "step": "fetch_model", "model": name, "id": spec.id, "revision": spec.revision, "commit": commit,
        "wall_time_s": time.perf_counter() - start,
    })


def fetch_dataset(cfg: Config, name: str, out: Path) -> None:
    """Download dataset `name` (its definition's hub id, default branch) at a commit to `out`; record it."""
    spec = cfg.dataset(name)
    definition = catalog.definition(name, spec.definition)
    if spec.load_from != "hub" or definition.hub is None:
        raise UserError(f"dataset {name!r}: only `load_from: hub` datasets whose definition names a `hub:` id "
                        f"are fetched (this one: load_from {spec.load_from}, hub {definition.hub})")
    start = time.perf_counter()
    commit = _download(definition.hub, None, "dataset", Path(out), f"dataset {name!r}",
                       f"or set load_from: local and point data_dir at local copies")
    provenance.record(out, cfg, steps.keys(cfg, "fetch_dataset", dataset=name), [definition.path], {
        "step": "fetch_dataset", "dataset": name, "id": definition.hub, "commit": commit,
        "wall_time_s": time.perf_counter() - start,
    })


def fetched_commit(fetched: Path) -> str:
    """The commit a fetched copy holds, from its fetch record."""
    record = provenance.record_path(fetched)
    if not record.is_file():
        raise UserError(f"{fetched}: no fetch record {record.name} beside it; fetch it with `ensemw2s fetch`")
    return read_json(record)["extra"]["commit"]
