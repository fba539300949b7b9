"""The README table of benchmark results: one row per measurement of the given JSON files.

    python benchmarks/table.py benchmarks/results/cpu-*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    bench = path.stem
    load = data["machine"]["loadavg_start"][0]
    out = []
    for r in data["results"]:
        target = "" if r["target"] is None else f"{'<=' if r['better'] == 'lower' else '>='} {r['target']}"
        met = {None: "-", True: "yes", False: "**no**"}[r["met"]]
        out.append(f"| {bench} | {r['name']} | {r['ratio']:.3f} | {target} | {met} | {load} |")
    return out


def main(paths: list[str]) -> None:
    print("| file | measurement | ratio | target | met | load at start |")
    print("|---|---|---|---|---|---|")
    for p in paths:
        print("\n".join(rows(Path(p))))


if __name__ == "__main__":
    main(sys.argv[1:])
