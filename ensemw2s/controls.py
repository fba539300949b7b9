"""The controls of a boosting comparison (torch-free): what each member is fit on, and their metrics.csv rows.

- `partition` (positive control): T members, member r fit on part r of weak_train only (the questions'
  `datasets[].partition_key` values dealt into T parts), each for about h_1's optimizer steps. If each
  member is competent on its own part, the *routed* ensemble (each question answered by its part's member)
  must beat every member on the union, or the measurement is broken; the token-level ensemble of the same
  members shows how much of that gain token mixing keeps.
- `longer` (compute-matched baseline): one expert fit for T x h_1's optimizer steps, what an ensemble of T
  experts must beat to be worth its training cost.
The fit plans are Kind.fit_plan hooks (ensemw2s/variants.py), called by train_expert (rounds.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ensemw2s import metrics as M
from ensemw2s.config import stable_hash
from ensemw2s.errors import ConfigError, DataFileError
from ensemw2s.io import read_json
from ensemw2s.splitdir import EVAL_SPLITS, read_split_field
from ensemw2s.variants import FitPlan

PARTITION_FILE = "partition.json"  # beside a partition member's boosting.json
LEVEL = 0.05  # competence: one-sided exact binomial test against chance on the member's own part
PART_SPLITS = ("weak_train", *EVAL_SPLITS)  # the splits partition.json assigns to parts

# metrics.csv names (collect.METRICS splices these in; PAIRED get seed-stratified `all` rows here)
CONTROL_KINDS = ("partition", "longer")  # the variant kinds (variants.KINDS) whose rows the `controls` table shows
TABLE = "controls"
PAIRED = ("routed_minus_member", "improvement_vs_longer")
METRICS = ("partition_own_part_acc", "partition_other_parts_acc", "partition_member_competent",
           "token_ensemble_part_acc", "routed_acc", "partition_valid", "token_ensemble_kept_share", *PAIRED)


def has_controls(cfg) -> bool:
    """Whether the config has a control variant, so a `controls` table (workflow and cost plan)."""
    return any(v.kind in CONTROL_KINDS for v in cfg.boosting.variants.values())


# ---------------------------------------------------------------------------------------------
# fit plans


def steps_per_epoch(n_rows: int, spec) -> int:
    """Optimizer steps of one epoch over n_rows under `spec`, as the Trainer counts them (training.py)."""
    return max(math.ceil(math.ceil(n_rows / spec.batch_size) / spec.grad_accum), 1)


def optimizer_steps(n_rows: int, spec) -> int:
    """Optimizer steps of a fit on n_rows under `spec`."""
    return math.ceil(spec.epochs * steps_per_epoch(n_rows, spec))


def partition_key(cfg, dataset: str) -> str:
    key = cfg.dataset(dataset).partition_key
    if not key:
        raise ConfigError(f"config key datasets[{dataset}].partition_key: a `kind: partition` variant splits "
                          f"weak_train by a field of the questions; set partition_key (e.g. relation, subject) "
                          f"or drop the partition variant")
    return key


def parts(values: Iterable, T: int, key: str) -> list[list]:
    """The sorted distinct key values dealt into T parts: value i -> part i % T."""
    distinct = sorted(set(values))
    if len(distinct) < T:
        raise ConfigError(f"partition_key {key!r} has {len(distinct)} distinct value(s) in weak_train "
                          f"({', '.join(map(str, distinct))}) but boosting.rounds = {T} members need one part each; "
                          f"lower boosting.rounds to {max(len(distinct), 1)} or choose a key with more values")
    return [distinct[p::T] for p in range(T)]


def _key_of(rows: list[dict], key: str, where: str) -> list:
    missing = [r["uid"] for r in rows if key not in r]
    if missing:
        raise DataFileError(f"{where}: {len(missing)} row(s) lack the partition_key field {key!r} (e.g. uid "
                            f"{missing[0]}); set datasets[].partition_key to a field of the rows, or rerun "
                            f"`ensemw2s prepare-data`")
    return [r[key] for r in rows]


def partition_plan(cfg, dataset: str, data_dir, rows: list[dict], spec, round: int) -> FitPlan:
    """Member `round` of T = boosting.rounds: fit on the weak_train rows of part `round`, with epochs
    scaled so that it takes (about) h_1's optimizer steps on all rows."""
    T, key = cfg.boosting.rounds, partition_key(cfg, dataset)
    if not 1 <= round <= T:
        raise ConfigError(f"a partition control has boosting.rounds = {T} members; round {round} is not one")
    data_dir = Path(data_dir)
    split = parts(_key_of(rows, key, str(data_dir / "weak_train.jsonl")), T, key)
    part_index = {v: p for p, values in enumerate(split) for v in values}
    part_of: dict[str, dict[str, int]] = {"weak_train": {r["uid"]: part_index[r[key]] for r in rows}}
    n_choices: dict[str, dict[str, int]] = {}
    for name in EVAL_SPLITS:
        fields = read_split_field(data_dir, name, (key, "choices"))
        # a value weak_train never showed has no member: its questions get none (not scored as routed)
        part_of[name] = {uid: part_index[f[key]] for uid, f in fields.items() if f[key] in part_index}
        n_choices[name] = {uid: len(f["choices"]) for uid, f in fields.items()}
    mine = [r for r in rows if part_of["weak_train"][r["uid"]] == round - 1]
    h1_steps = optimizer_steps(len(rows), spec)
    member = dataclasses.replace(spec, epochs=spec.epochs * steps_per_epoch(len(rows), spec)
                                 / steps_per_epoch(len(mine), spec))
    record = {"control": "partition", "key": key, "member": round, "values": split[round - 1],
              "n_rows": len(mine), "n_weak_train": len(rows), "uids": [r["uid"] for r in mine],
              "epochs": member.epochs, "optimizer_steps": optimizer_steps(len(mine), member),
              "h1_optimizer_steps": h1_steps}
    files = {PARTITION_FILE: {"key": key, "parts": split, "member": round, "part_of": part_of,
                              "n_choices": n_choices}}
    return FitPlan(rows=mine, spec=member, record=record, files=files)


def longer_plan(cfg, dataset: str, data_dir, rows: list[dict], spec, round: int) -> FitPlan:
    """The one expert of a longer variant: all rows, T x training.expert.epochs (T x h_1's optimizer steps)."""
    T = cfg.boosting.rounds
    if round != 1:
        raise ConfigError(f"a `kind: longer` variant trains one expert (round 1), not round {round}")
    member = dataclasses.replace(spec, epochs=T * spec.epochs)
    record = {"control": "longer", "factor": T, "n_rows": len(rows), "epochs": member.epochs,
              "optimizer_steps": optimizer_steps(len(rows), member), "h1_optimizer_steps": optimizer_steps(len(rows), spec)}
    return FitPlan(rows=list(rows), spec=member, record=record)


# ---------------------------------------------------------------------------------------------
# metrics.csv rows


def _partitions(boosting_files: Iterable[Path]) -> dict[tuple, dict]:
    """(weak, dataset, seed, variant) -> partition.json of its members (all members write the same parts)."""
    from ensemw2s.collect import _weak_model

    out: dict[tuple, dict] = {}
    for path in sorted(Path(p) for p in boosting_files):
        part = path.parent / PARTITION_FILE
        if not part.is_file():
            continue
        rec = read_json(path)
        key = (_weak_model(path, rec), rec["dataset"], int(rec["seed"]), rec["variant"])
        out.setdefault(key, read_json(part))
    return out


def binomial_competent(correct: int, n: int, chance: float) -> tuple[bool, float]:
    """(beats chance at LEVEL, p-value): one-sided exact binomial test of `correct` of `n` against `chance`."""
    from scipy.stats import binomtest

    if n == 0:
        return False, math.nan
    p = float(binomtest(int(correct), int(n), chance, alternative="greater").pvalue)
    return p < LEVEL, p


def _block(score: dict, split: str) -> tuple[list[str], np.ndarray] | None:
    block = score["splits"].get(split)
    if block is None or "acc" not in block["per_example"]:
        return None
    return block["uids"], np.asarray(block["per_example"]["acc"], dtype=float)


NAN2 = (math.nan, math.nan)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _ci(x: np.ndarray, n_boot: int, tag: list) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean over a subset of a split (its own draws, seeded by `tag`)."""
    if not x.size:
        return NAN2
    return M.bootstrap_ci(x, M.resample_weights(len(x), n_boot, int(stable_hash([*tag, len(x)]), 16)))


def rows(cfg, scores, boosting_files: Iterable[Path]) -> list[dict]:
    """The partition control's and the longer baseline's rows of metrics.csv (score `acc`), per seed, plus
    seed-stratified `all` rows of the PAIRED comparisons (collect leaves those out of its seed means)."""
    from ensemw2s.collect import _row, _paired

    n_boot, T = cfg.evaluation.bootstrap, cfg.boosting.rounds
    out: list[dict] = []
    families: dict[tuple, list] = defaultdict(list)

    def paired(ident, split, metric, this, base, note=""):
        mean, cov, n = M.paired_moments(this - base)
        value, se = 100.0 * float(mean[0]), 100.0 * math.sqrt(max(float(cov[0, 0]), 0.0))
        out.append(_row(ident, split, "acc", metric, value, M.normal_ci(value, se), n, note))
        families[(metric, split, *(ident[k] for k in ("weak_model", "dataset", "role", "ensemble", "round")))].append(
            (mean, cov, ident, note))
        return value

    for (weak, ds, seed, name), part in sorted(_partitions(boosting_files).items()):
        members = [scores.get("expert", ds, seed, weak, ensemble=name, round=r) for r in range(1, T + 1)]
        if any(m is None for m in members):
            continue
        ens = {"weak_model": weak, "strong_model": "", "dataset": ds, "seed": seed, "role": "ensemble",
               "ensemble": name, "round": T}
        token = scores.get("ensemble", ds, seed, weak, ensemble=name, round=T)
        for split in EVAL_SPLITS:
            blocks = [_block(m[0], split) for m in members]
            if any(b is None for b in blocks) or split not in part["part_of"]:
                continue
            uids = blocks[0][0]
            tok = _block(token[0], split) if token is not None else None
            if any(b[0] != uids for b in blocks) or (tok is not None and tok[0] != uids):
                raise DataFileError(f"the partition members of {name} ({ds}, seed {seed}) and its ensemble scored "
                                    f"different rows of {split}; rerun `ensemw2s evaluate` on the same split files")
            of, k_of = part["part_of"][split], part.get("n_choices", {}).get(split, {})
            part_idx = np.asarray([of.get(u, -1) for u in uids], dtype=int)
            kept = part_idx >= 0  # a key value weak_train never showed has no member: left out of the union
            accs = np.vstack([b[1] for b in blocks])  # (T, n)
            routed = accs[np.clip(part_idx, 0, T - 1), np.arange(len(uids))][kept]
            incompetent = []
            for r in range(1, T + 1):
                own, other = part_idx == r - 1, kept & (part_idx != r - 1)
                mem = {**ens, "role": "expert", "round": r}
                for metric, mask in (("partition_own_part_acc", own), ("partition_other_parts_acc", other)):
                    x = accs[r - 1][mask]
                    out.append(_row(mem, split, "acc", metric, _mean(x), _ci(x, n_boot, [ds, seed, split, metric, r]),
                                    int(x.size)))
                chance = _mean(np.asarray([1.0 / k_of[u] for u, o in zip(uids, own) if o and u in k_of]))
                ok, p = binomial_competent(int(accs[r - 1][own].sum()), int(own.sum()), chance)
                incompetent += [] if ok else [r]
                out.append(_row(mem, split, "acc", "partition_member_competent", float(ok), NAN2, int(own.sum()),
                                f"one-sided exact binomial p = {p:.3g} against chance {chance:.3g}"))
                if tok is not None:
                    out.append(_row(mem, split, "acc", "token_ensemble_part_acc", _mean(tok[1][own]), NAN2,
                                    int(own.sum()), f"the token-level ensemble r{T} on member {r}'s part"))
                broken = float(routed.mean() - accs[r - 1][kept].mean()) <= 0
                paired(mem, split, "routed_minus_member", routed, accs[r - 1][kept],
                       f"routed ensemble does not beat member {r}: measurement broken" if broken else "")
            out.append(_row(ens, split, "acc", "partition_valid", float(not incompetent), NAN2, T,
                            f"incompetent member(s): {', '.join(map(str, incompetent))}" if incompetent else ""))
            out.append(_row(ens, split, "acc", "routed_acc", float(routed.mean()),
                            _ci(routed, n_boot, [ds, seed, split, "routed"]), int(routed.size),
                            "each question answered by the member of its part"))
            if tok is not None:
                best = float(accs[:, kept].mean(axis=1).max())
                gain = float(routed.mean()) - best
                value = (float(tok[1][kept].mean()) - best) / gain if gain > 0 else math.nan
                out.append(_row(ens, split, "acc", "token_ensemble_kept_share", value, NAN2, int(routed.size),
                                "" if gain > 0 else "routed ensemble does not beat the best member"))

    longer = [n for n, v in cfg.boosting.variants.items() if v.kind == CONTROL_KINDS[1] and v.experts == n]
    if longer:
        ref_name = longer[0]
        for ds, seed, weak in sorted({(k[0], k[1], k[3]) for k in scores.by_key if k[2] == "expert"}):
            ref = scores.get("expert", ds, seed, weak, ensemble=ref_name, round=1)
            for name in cfg.boosting.variants if ref is not None else ():
                if name == ref_name:
                    continue
                this = scores.get("ensemble", ds, seed, weak, ensemble=name, round=T)
                if this is None:
                    continue
                ident = {"weak_model": weak, "strong_model": "", "dataset": ds, "seed": seed, "role": "ensemble",
                         "ensemble": name, "round": T}
                for split in this[0]["splits"]:
                    arrays = _paired([this, ref], split, "acc")
                    if arrays is not None:
                        paired(ident, split, "improvement_vs_longer", arrays[0], arrays[1],
                               f"vs the compute-matched {ref_name} (one expert, {T} x h_1's steps)")

    for (metric, split, *_), members in families.items():
        if len(members) < 2:
            continue
        mean, cov = M.stratified([(m, c) for m, c, _, _ in members])
        value, se = 100.0 * float(mean[0]), 100.0 * math.sqrt(max(float(cov[0, 0]), 0.0))
        ident = {**members[0][2], "seed": "all"}
        note = members[0][3] if metric == "improvement_vs_longer" else (
            f"routed ensemble does not beat member {ident['round']}: measurement broken" if value <= 0 else "")
        out.append(_row(ident, split, "acc", metric, value, M.normal_ci(value, se), len(members), note))
    return out
