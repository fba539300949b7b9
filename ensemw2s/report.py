"""`ensemw2s report`: metrics.csv -> one table (CSV, Markdown, LaTeX) or figure (PNG, PDF) per name.

The tables live in `tables.py` (`TABLES`), the figures in `figures.py` (`FIGURES`), over the row
selections they share (`selections.py`); this module only finds a name and writes its output.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ensemw2s.errors import UserError
from ensemw2s.figures import FIGURES, save_figure
from ensemw2s.registry import unknown_name_message
from ensemw2s.selections import load_metrics
from ensemw2s.tables import TABLES, Table, write_table


def names() -> list[str]:
    """Every table and figure `ensemw2s report --name` knows."""
    return TABLES.names() + FIGURES.names()


def build_table(name: str, metrics_csv: str | Path, boosting_files: Iterable[str | Path] = (),
                caption_note: str = "") -> Table:
    """Table `name` from metrics.csv, its caption followed by `caption_note` (the run's protocol choices)."""
    table = TABLES.get(name)(load_metrics(metrics_csv), [Path(b) for b in boosting_files])
    return replace(table, caption=f"{table.caption} {caption_note}".strip())


def make(name: str, metrics_csv: str | Path, boosting_files: Iterable[str | Path], out: str | Path,
         caption_note: str = "") -> None:
    """Write table or figure `name` from metrics.csv to `out` + extensions (.csv/.md/.tex or .png/.pdf)."""
    boosting = [Path(b) for b in boosting_files]
    if name in TABLES:
        write_table(build_table(name, metrics_csv, boosting, caption_note), out)
    elif name in FIGURES:
        save_figure(FIGURES.get(name)(load_metrics(metrics_csv), boosting), out)
    else:
        raise UserError(unknown_name_message("report", name, names()))
