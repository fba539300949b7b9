"""`ensemw2s readme`: the README's numbers, generated from the committed `results/`, never typed by hand.

A generated block in README.md is the text between a marker line and `<!-- end generated -->`:

    <!-- generated: table summary from results/default -->
    <!-- generated: provenance from results/cpu-real-pilot -->
    <!-- generated: go_no_go from results/cpu-real-arc -->

`table NAME` is the report registry's table NAME rendered (caption and Markdown) from that run's
`metrics.csv`, with the protocol sentence of the run's resolved `config.yaml`, exactly as
`ensemw2s report` writes `tables/NAME.md`; `provenance` is a few lines from the run's `provenance.json`
(commit, dirty, seeds, job time per step kind); `go_no_go` is the first seed's gate of each dataset and
pair (`ensemw2s.planning.go_no_go`, from the run's score files). `--write` replaces every block's body; without it the
command checks and exits 1 naming the blocks that differ (CI runs the check before `make run` rewrites
`results/default`, since another CPU's last bits can flip an argmax).
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ensemw2s.errors import UserError
from ensemw2s.io import read_json, write_text

BEGIN = re.compile(r"^<!-- generated: (?P<kind>table (?P<name>[a-z_]+)|provenance|go_no_go) from (?P<run>\S+) -->$")
END = "<!-- end generated -->"


def _provenance(run: Path) -> str:
    """Commit, state and job time of a run, from its provenance.json: the wall time of each job's Snakemake
    benchmark (what `totals` sums), per rule family. The step records' own times are the same jobs again."""
    prov = read_json(run / "provenance.json")
    per_kind: dict[str, float] = defaultdict(float)
    for step in prov["steps"]:
        if step["source"].endswith(".tsv") and step.get("wall_time_s") is not None:
            per_kind[step["step"].split("/")[0]] += float(step["wall_time_s"])
    kinds = ", ".join(f"{kind} {seconds:,.0f} s" for kind, seconds in sorted(per_kind.items(), key=lambda kv: -kv[1]))
    jobs = sum(step["source"].endswith(".tsv") for step in prov["steps"])
    return (f"Run `{prov['run']}`: commit `{prov['commit'][:7]}` (dirty: {str(prov['dirty']).lower()}), seeds "
            f"{', '.join(map(str, prov['seeds']))}, {jobs} benchmarked jobs, {prov['totals']['wall_time_s']:,.0f} s of job "
            f"time ({kinds}).\n")


def _go_no_go(run: Path) -> str:
    """The first seed's go / no-go of each dataset and pair of the run (ensemw2s.planning.go_no_go)."""
    from ensemw2s import config as config_mod
    from ensemw2s.planning import gate_scores, go_no_go, render_go_no_go

    gates = gate_scores(run, config_mod.load(run / "config.yaml"))
    if not gates:
        raise UserError(f"{run}/scores: no dataset and pair with the first seed's bases, h_1 and ceiling scored")
    return "\n".join(render_go_no_go(go_no_go(files)) + "\n" for files in gates.values())


def _table(run: Path, name: str) -> str:
    from ensemw2s import config as config_mod
    from ensemw2s.report import build_table
    from ensemw2s.tables import protocol_note, table_markdown

    cfg = config_mod.load(run / "config.yaml")
    return table_markdown(build_table(name, run / "metrics.csv", caption_note=protocol_note(cfg)))


def render(text: str, root: Path) -> tuple[str, list[str]]:
    """(README with every generated block rendered anew, names of the blocks whose body changed)."""
    lines = text.splitlines(keepends=True)
    out, changed, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        m = BEGIN.match(line.strip())
        if not m:
            continue
        end = next((j for j in range(i, len(lines)) if lines[j].strip() == END), None)
        if end is None:
            raise UserError(f"README block {line.strip()!r} has no {END!r} line after it")
        run = root / m["run"]
        if not (run / "metrics.csv").is_file():
            raise UserError(f"README block {line.strip()!r}: {run}/metrics.csv not found; commit that run's results")
        body = (_provenance(run) if m["kind"] == "provenance" else _go_no_go(run) if m["kind"] == "go_no_go"
                else _table(run, m["name"]))
        if "".join(lines[i:end]) != body:
            changed.append(f"{m['kind']} from {m['run']}")
        out.append(body)
        i = end
    return "".join(out), changed


def readme(path: str | Path, write: bool) -> list[str]:
    """Render README `path`'s generated blocks from the results beside it; write them, or return the stale ones."""
    path = Path(path)
    text, changed = render(path.read_text(encoding="utf-8"), path.resolve().parent)
    if write and changed:
        write_text(path, text)
    return changed
