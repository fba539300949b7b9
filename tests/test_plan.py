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
    """T = 3, variants boost, boost-uniform (its r = 1 is boost's h_1) and partition (3 members, ensemble at r = 3
    only, no students), the A/A replicate student; sizes weak_train 300, val 100, test_id 200, student_pool 300,
    test_ood 200, epochs 4, max_new_tokens 12, rows of 50 tokens; one seed here, three in the config."""
    rows = by_step(plan.plan(default(seeds=[0]), TABLE))
    assert {s: r.jobs for s, r in rows.items()} == {
        "prepare_model": 2, "rate_data": 1, "prepare_data": 1, "train_expert": 3 + 3, "ensemble_manifest": 3 + 2 + 1,
        "pseudo_label": 5, "train_student": 5, "train_replicate": 1, "train_ceiling": 1,
        "evaluate": 2 + 1 + 6 + 5 + 5 + 1, "go_no_go": 1, "metrics": 1, "provenance": 1, "table": 12,
        "figure": 6, "all": 1}
    # a partition member fits a third of the rows for 3 x the epochs: h_1's tokens, as the plan counts them
    assert rows["train_expert"].tokens == 6 * (4 + 1) * 300 * 50
    assert rows["train_student"].tokens == 5 * 4 * 300 * 50
    assert rows["train_replicate"].tokens == rows["train_ceiling"].tokens == 4 * 300 * 50
    members = 1 + 2 + 3 + 2 + 3  # boost r1..3, boost-uniform r2..3 (the partition ensemble teaches no one)
    assert rows["pseudo_label"].tokens == members * (300 + 100) * (50 + 12)
    # bases, ceiling, experts, ensembles r >= 2 (boost, boost-uniform, partition r3), students, replicate
    scored = 2 + 1 + 6 + (2 + 3 + 2 + 3 + 3) + 5 + 1
    assert rows["evaluate"].tokens == scored * 500 * ((3 + 1) * 50 + 12)
    assert rows["rate_data"].tokens == rows["prepare_data"].tokens == 0  # the synthetic split needs no rater
    # gpu: 0 everywhere: CPU job-hours at the cpu rates
    assert rows["train_expert"].gpus == 0
    assert rows["train_expert"].hours == pytest.approx(6 * 5 * 300 * 50 / 1000 / 3600)
    assert rows["pseudo_label"].hours == pytest.approx(members * 400 * 62 / 500 / 3600)
    three = by_step(plan.plan(default(), TABLE))  # the config's three seeds: every per-seed job three times
    shared = ("prepare_model", "rate_data", "go_no_go", "metrics", "provenance", "table", "figure", "all")
    assert {s: r.jobs for s, r in three.items()} == {s: r.jobs * (1 if s in shared else 3) for s, r in rows.items()}


def test_truncation_limit_and_gpus_change_the_plan():
    cfg = default(**{"training.expert.max_length": 40, "evaluation.limit": 50, "resources.train_expert": {"gpu": 2},
                     "seeds": [0], "boosting.variants": {"boost": {}, "boost-uniform": {"ensemble_weights": "uniform"}},
                     "evaluation.aa_replicate": False})
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
    assert {r.step: r.jobs for r in rows} == counts and sum(counts.values()) == total == 5455
    assert all(r.hours > 0 for r in rows if r.step in plan.KIND)  # every GPU step has a rate for its models


def test_measured_cpu_rates_are_the_provenance():
    """Each cpu rate measured on the committed ARC run (results/cpu-real-arc) is sum(tokens_processed) / sum(wall_time_s) of
    that model's jobs (results/default is rerun often, so its rates carry their commit instead)."""
    run = "cpu-real-arc"
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


def test_the_controls_jobs_and_tokens_by_hand():
    """partition: 3 members (each about h_1's tokens), one ensemble at r = 3 (scored, never a supervisor);
    longer: one expert of 3 x 4 epochs, its ensemble of one teaching one student."""
    variants = {"boost": {}, "partition": {"kind": "partition"}, "longer": {"kind": "longer"}}
    base, controls = (by_step(plan.plan(default(**{"boosting.variants": v, "seeds": [0]}), TABLE))
                      for v in ({"boost": {}}, variants))
    jobs = {s: controls[s].jobs - base[s].jobs for s in ("train_expert", "ensemble_manifest", "pseudo_label",
                                                          "train_student", "evaluate")}
    assert jobs == {"train_expert": 4, "ensemble_manifest": 2, "pseudo_label": 1, "train_student": 1, "evaluate": 6}
    assert controls["table"].jobs == base["table"].jobs + 1  # the controls table
    extra = 3 * (4 + 1) * 300 * 50 + (3 * 4 + 1) * 300 * 50  # partition members, the longer expert
    assert controls["train_expert"].tokens - base["train_expert"].tokens == extra
    assert controls["pseudo_label"].tokens - base["pseudo_label"].tokens == 1 * (300 + 100) * (50 + 12)
    assert controls["evaluate"].tokens - base["evaluate"].tokens == (4 + 3 + 1) * 500 * ((3 + 1) * 50 + 12)


def test_the_controls_plan_equals_the_dry_run(tmp_path):
    extra = tmp_path / "controls.yaml"
    extra.write_text(yaml.safe_dump({"boosting": {"variants": {
        "boost": {}, "partition": {"kind": "partition"}, "longer": {"kind": "longer"}}}}))
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["boosting"]["variants"] = yaml.safe_load(extra.read_text())["boosting"]["variants"]
    counts = dry_run(tmp_path, "--configfile", str(REPO / "config" / "config.yaml"), str(extra))
    rows = by_step(plan.plan(config.from_dict(raw), TABLE))
    for step in ("train_expert", "ensemble_manifest", "pseudo_label", "train_student", "table"):  # what controls change
        assert rows[step].jobs == counts[step], step
