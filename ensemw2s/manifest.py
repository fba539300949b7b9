"""Ensemble manifests: the JSON contract between `ensemw2s ensemble` and every reader of an ensemble.

A manifest names the experts (`<round dir>/model` paths), their weights, the combine rule, the
weighting, the boosting rounds kept and the experts' tokenizer fingerprint. Torch-free at import (the
tokenizer is only loaded inside `write_manifest`), so the workflow and evaluate.py read manifests
without loading torch; `ensemble.load_ensemble` turns one into an Ensemble.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ensemw2s import provenance, steps
from ensemw2s.errors import UserError
from ensemw2s.io import read_json, write_json

MANIFEST_KEYS = ("experts", "weights", "combine", "tokenizer")


def write_manifest(cfg, expert_dirs: Sequence[str | Path], variant: str, out: str | Path) -> None:
    """Manifest of variant `variant`'s ensemble of the given boosting rounds: {experts, weights, combine,
    weighting, rounds, tokenizer}; the combine rule and the weighting are the variant's.

    Each `<dir>/boosting.json` says whether the round's expert exists (`stopped`: boosting ended there,
    no model was kept); stopped rounds are left out. `experts` are the `<dir>/model` paths as given.
    """
    from ensemw2s.models import check_same_tokenizer, load_tokenizer, tokenizer_fingerprint

    start = time.perf_counter()
    spec = cfg.boosting.variant(variant)
    weighting = spec.ensemble_weights
    experts, weights, rounds = [], [], []
    for d in map(Path, expert_dirs):
        info = read_json(d / "boosting.json")
        missing = [k for k in ("round", "alpha", "stopped") if k not in info]
        if missing:
            raise UserError(f"{d / 'boosting.json'}: missing field(s) {', '.join(missing)}")
        if info["stopped"]:
            continue
        if not (d / "model").exists():
            raise UserError(f"{d / 'model'} does not exist, but {d / 'boosting.json'} says round {info['round']} "
                            f"did not stop; rerun `ensemw2s train-expert` for it")
        if weighting == "alpha" and not float(info["alpha"]) > 0:
            raise UserError(f"{d / 'boosting.json'}: alpha {info['alpha']} is not positive but the round is not "
                            f"marked stopped")
        weight = _weight(d, info, weighting)
        if weight <= 0:  # alpha_without_prior: no better than a coin flip without the prior, so left out
            continue
        experts.append(str(d / "model"))
        weights.append(weight)
        rounds.append(int(info["round"]))
    if not experts:
        raise UserError(f"no usable expert among {len(expert_dirs)} round(s): every boosting.json says the round "
                        f"stopped (alpha <= 0), so there is no ensemble to build")
    check_same_tokenizer(experts)
    write_json(out, {
        "experts": experts,
        "weights": weights,
        "combine": spec.combine,
        "weighting": weighting,
        "rounds": rounds,
        "tokenizer": tokenizer_fingerprint(load_tokenizer(experts[0])),
    })
    provenance.record(out, cfg, steps.keys(cfg, "ensemble_manifest", variant=variant),
                      [Path(d) / "boosting.json" for d in expert_dirs],
                      {"step": "ensemble_manifest", "variant": variant, "weighting": weighting, "rounds": rounds,
                       "wall_time_s": time.perf_counter() - start})


def _weight(d: Path, info: dict, weighting: str) -> float:
    """An expert's unnormalised weight: its alpha; alpha minus the prior term, log((1-eps)/eps), clipped at
    0 (`alpha_without_prior`: how much of alpha is the expert's own accuracy); or 1 (`uniform`)."""
    if weighting == "uniform":
        return 1.0
    if weighting == "alpha":
        return float(info["alpha"])
    if info.get("prior_term") is None:
        raise UserError(f"{d / 'boosting.json'} records no prior_term (written before ensemble_weights "
                        f"alpha_without_prior existed, or by an unboosted kind); rerun `ensemw2s train-expert`")
    return max(0.0, float(info["alpha"]) - float(info["prior_term"]))


def read_manifest(path: str | Path) -> dict:
    """The manifest at `path`, refused (with the command that writes one) when a required key is missing."""
    manifest = read_json(path)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise UserError(f"{path}: not an ensemble manifest (missing {', '.join(missing)}); "
                        f"write it with `ensemw2s ensemble`")
    return manifest
