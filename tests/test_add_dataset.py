"""Adding a dataset is a file: a local JSONL of one's own, one definition YAML and one config entry
(`datasets[].definition`) run through the real workflow, with no code (config/README.md, "Add a dataset").

The rows are questions of the synthetic task (so the tiny models, pretrained on its text, can answer
some) in a layout of their own: other field names, lettered labels, the tier as a field.
"""
from __future__ import annotations

import csv

import yaml

from ensemw2s import synthetic
from ensemw2s.io import write_jsonl
from tests.test_end_to_end import ROLES, run_dir, snakemake, workdir

SIZES = {"weak_train": 8, "val": 4, "test_id": 4, "student_pool": 8, "test_ood": 8}
DEFINITION = {
    "description": "Synthetic questions in a layout of their own (tests/test_add_dataset.py).",
    "parts": [{"folder": "creatures"}],
    "splits": ["train", "test"],
    "fields": {"id": "qid", "question": "query", "choices": {"text": "options.text", "label": "options.label"},
               "answer": {"label": "key"}, "source": "tier"},
    "hard_sources": ["hard"],
    "strategies": ["source", "length"],
    "defaults": {"difficulty": {"strategy": "source"}, "sizes": SIZES},
}


def own_rows() -> list[dict]:
    """24 easy and 16 hard questions: exactly what the splits take."""
    rows, wanted = [], {"easy": 24, "hard": 16}
    for q in synthetic.questions():
        if wanted[q["source"]]:
            wanted[q["source"]] -= 1
            labels = "ABCD"[: len(q["choices"])]
            rows.append({"qid": q["id"], "query": q["question"], "options": {"text": q["choices"], "label": list(labels)},
                         "key": labels[q["label"]], "tier": q["source"]})
    return rows


def test_a_dataset_of_ones_own_runs_through_the_workflow(tmp_path):
    rows = own_rows()
    assert len(rows) == 40
    data = tmp_path / "data"
    write_jsonl(data / "creatures" / "train.jsonl", rows[::2])
    write_jsonl(data / "creatures" / "test.jsonl", rows[1::2])
    definition = tmp_path / "creatures.yaml"
    definition.write_text(yaml.safe_dump(DEFINITION, sort_keys=False))
    wd = workdir(tmp_path / "wd", data_dir=str(data), boosting={"rounds": 1, "variants": {"boost": {}}},
                 datasets=[{"name": "creatures", "definition": str(definition)}])
    metrics_csv = run_dir(wd) / "metrics.csv"
    res = snakemake(wd, "--cores", "2", "--", str(metrics_csv))  # the tables and figures are test_end_to_end's
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    with open(metrics_csv, newline="") as fh:
        metrics = list(csv.DictReader(fh))
    assert metrics and {r["dataset"] for r in metrics} == {"creatures"}
    assert {r["role"] for r in metrics} == ROLES
    n = {r["eval_split"]: int(r["n"]) for r in metrics if r["role"] == "ceiling" and r["metric"] == "acc"}
    assert n == {"val": 4, "test_id": 4, "test_ood": 8}
