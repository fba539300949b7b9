"""`ensemw2s plan`: hand-worked jobs and tokens on the default config, the paper grid's job counts as a
real dry run lists them, and the table's measured rates as the committed provenance records them."""
from __future__ import annotations

import collections
import json
import re

import pytest
import yaml

from ensemw2s import config, plan
from ensemw2s.errors import UserError
from tests.conftest import REPO
from tests.test_workflow import dry_run

TABLE = {"job_overhead_s": {"cpu": 0, "gpu": 36}, "datasets": {"synthetic": {"tokens_per_row": 50, "choices": 3}},
         "cpu": {m: {"train": 1000, "score": 2000, "decode": 500} for m in ("tiny-weak", "tiny-strong")},
         "gpu": {}}


def default(**overrides) -> config.Config:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in overrides.items():  # dotted keys
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return config.from_dict(raw)


def by_step(rows):
    return {r.step: r for r in rows}


def test_default_config_by_hand():
    """T = 3, variants boost and boost-uniform (its r = 1 is boost's h_1), sizes weak_train 300, val 100,
    test_id 200, student_pool 300, test_ood 200, epochs 4, max_new_tokens 12, rows of 50 tokens."""
    rows = by_step(plan.plan(default(), TABLE))
    assert {s: r.jobs for s, r in rows.items()} == {
        "prepare_model": 2, "prepare_data": 1, "train_expert": 3, "ensemble_manifest": 5, "pseudo_label": 5,
        "train_student": 5, "train_ceiling": 1, "evaluate": 2 + 1 + 3 + 4 + 5, "metrics": 1, "provenance": 1,
        "table": 7, "figure": 5, "all": 1}
    assert rows["train_expert"].tokens == 3 * (4 + 1) * 300 * 50
    assert rows["train_student"].tokens == 5 * 4 * 300 * 50
    assert rows["train_ceiling"].tokens == 4 * 300 * 50
    members = 1 + 2 + 3 + 2 + 3  # boost r1..3, boost-uniform r2..3
    assert rows["pseudo_label"].tokens == members * (300 + 100) * (50 + 12)
    scored = 1 + 1 + 1 + 3 + (2 + 3 + 2 + 3) + 5  # bases, ceiling, experts, ensembles r >= 2, students
    assert rows["evaluate"].tokens == scored * 500 * ((3 + 1) * 50 + 12)
    assert rows["prepare_data"].tokens == 0  # the synthetic split needs no rater
    # gpu: 0 everywhere: CPU job-hours at the cpu rates
    assert rows["train_expert"].gpus == 0
    assert rows["train_expert"].hours == pytest.approx(3 * 5 * 300 * 50 / 1000 / 3600)
    assert rows["pseudo_label"].hours == pytest.approx(members * 400 * 62 / 500 / 3600)


def test_truncation_limit_and_gpus_change_the_plan():
    cfg = default(**{"training.expert.max_length": 40, "evaluation.limit": 50, "resources.train_expert": {"gpu": 2}})
    table = {**TABLE, "gpu": {"tiny-weak": {"train": 4000}}}
    rows = by_step(plan.plan(cfg, table))
    assert rows["train_expert"].tokens == 3 * 5 * 300 * 40  # rows cut at max_length
    assert rows["train_expert"].gpus == 2
    # a per-GPU rate, and each of the 2 GPUs waits through the job's 36 s start-up
    assert rows["train_expert"].hours == pytest.approx(3 * 5 * 300 * 40 / 4000 / 3600 + 3 * 2 * 36 / 3600)
    assert rows["evaluate"].tokens == 21 * (50 * 3) * (4 * 50 + 12)  # 50 rows of each of 3 splits
    text = plan.render(cfg, list(rows.values()))
    assert re.search(r"^train_expert\s+3\s+180,000\s+2\s+0\.07\s", text, re.M)  # 0.0125 + 0.06 h
    assert "| train_expert | 3 | 180,000 | 2 |" in plan.render(cfg, list(rows.values()), markdown=True)


def test_a_model_without_a_rate_names_the_fix():
    table = {**TABLE, "cpu": {"tiny-weak": TABLE["cpu"]["tiny-weak"]}}
    with pytest.raises(UserError, match=r"no cpu train rate for model 'tiny-strong'.*throughput.yaml"):
        plan.plan(default(), table)


def test_paper_grid_counts_equal_the_dry_run(tmp_path):
    cfg = config.load(REPO / "config" / "paper.yaml")
    rows = plan.plan(cfg, plan.load_table())
    counts = dry_run(tmp_path, "--configfile", str(REPO / "config" / "paper.yaml"))
    total = counts.pop("total")
    assert {r.step: r.jobs for r in rows} == counts and sum(counts.values()) == total == 5321
    assert all(r.hours > 0 for r in rows if r.step in plan.KIND)  # every GPU step has a rate for its models


def test_measured_cpu_rates_are_the_provenance():
    """Each cpu rate measured on the committed cpu-real run is sum(tokens_processed) / sum(wall_time_s) of
    that model's jobs (results/default is rerun often, so its rates carry their commit instead)."""
    run = "cpu-real"
    kind = {"train_expert": "train", "train_student": "train", "evaluate": "score", "pseudo_label": "decode"}
    total = collections.defaultdict(lambda: [0, 0.0])
    for rec in json.loads((REPO / "results" / run / "provenance.json").read_text())["steps"]:
        if rec.get("tokens_processed") and rec["step"] in kind:
            parts = rec["artefact"].split("/")[2:]
            if parts[0] == "scores":
                parts = parts[3:]
            model = parts[1].split("__")[-1].removesuffix(".json")
            acc = total[(model, kind[rec["step"]])]
            acc[0] += rec["tokens_processed"]
            acc[1] += rec["wall_time_s"]
    cpu = plan.load_table()["cpu"]
    assert total
    for (model, k), (tokens, wall) in total.items():
        assert f"results/{run}/provenance.json" in cpu[model]["source"]
        assert cpu[model][k] == pytest.approx(tokens / wall, rel=1e-3), (model, k)


def test_the_readme_shows_the_paper_grids_plan():
    """README.md's plan block is what `ensemw2s plan --config config/paper.yaml --markdown` prints now."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^<!-- plan: ensemw2s plan --config config/paper.yaml --markdown .*?-->\n(.*?)^<!-- end plan -->",
                      text, re.M | re.S)
    assert block, "README.md has no plan block"
    expected = plan.run(config.load(REPO / "config" / "paper.yaml"), markdown=True)
    assert block.group(1).strip() == expected, ("README.md's plan block is stale: paste the output of "
                                                "`ensemw2s plan --config config/paper.yaml --markdown`")
