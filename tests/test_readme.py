"""readme.py: the README's generated blocks are exactly what the report functions print from results/."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.test_readme_commands import ENSEMW2S





@pytest.fixture(scope="module")
def committed_run(tmp_path_factory):
    """A repository stand-in: README.md beside results/fake/{metrics.csv, config.yaml, provenance.json}."""
    import copy as _copy

    from ensemw2s import config as config_mod
    from ensemw2s.collect import write_metrics
    from ensemw2s.io import write_json
    from tests.conftest import BASE_CONFIG
    from tests.test_collect import fake_run

    root = tmp_path_factory.mktemp("repo")
    run = root / "results" / "fake"
    raw = {**_copy.deepcopy(BASE_CONFIG), "results_dir": str(root / "results")}
    cfg = config_mod.from_dict(raw)
    pair = cfg.pairs[0]
    scores, boosting = fake_run(run, seeds=(0,), datasets=("synthetic",), ensembles=("boost",), variants=("boost",), weak=pair.weak,
                                strong=pair.strong)  # in the run, as a committed run holds its scores/
    write_metrics(cfg, scores, boosting, run / "metrics.csv")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.raw, sort_keys=True))
    write_json(run / "provenance.json", {
        "run": "fake", "commit": "0123456789abcdef", "dirty": False, "seeds": [0],
        "totals": {"steps": 4, "wall_time_s": 1500.0},
        "steps": [{"step": "experts/a", "source": "b/experts/a.tsv", "wall_time_s": 1000.0},
                  {"step": "experts/b", "source": "b/experts/b.tsv", "wall_time_s": 200.0},
                  {"step": "scores/c", "source": "b/scores/c.tsv", "wall_time_s": 300.0},
                  # the same job's own record: not counted again
                  {"step": "train_expert", "source": "experts/a/boosting.json.provenance.json", "wall_time_s": 990.0}]})
    return root


def test_generated_blocks_are_written_then_checked(committed_run):
    from ensemw2s import report, tables
    from ensemw2s.readme import END, readme

    readme_md = committed_run / "README.md"
    readme_md.write_text("intro\n<!-- generated: table summary from results/fake -->\nstale 99.9\n" + END + "\n"
                         "<!-- generated: provenance from results/fake -->\n" + END + "\noutro\n")
    assert readme(readme_md, write=False) == ["table summary from results/fake", "provenance from results/fake"]
    assert "stale 99.9" in readme_md.read_text()  # a check never writes
    assert readme(readme_md, write=True)
    text = readme_md.read_text()
    report.make("summary", committed_run / "results/fake/metrics.csv", [], committed_run / "summary",
                caption_note=tables.protocol_note(__import__("ensemw2s.config", fromlist=["load"]).load(
                    committed_run / "results/fake/config.yaml")))
    assert (committed_run / "summary.md").read_text() in text  # exactly what `ensemw2s report` writes
    assert "Run `fake`: commit `0123456` (dirty: false), seeds 0, 3 benchmarked jobs, 1,500 s of job time " \
           "(experts 1,200 s, scores 300 s)." in text
    assert text.startswith("intro\n") and text.endswith(END + "\noutro\n") and "stale" not in text
    assert readme(readme_md, write=False) == []  # now up to date
    cli_rc = subprocess.run([str(ENSEMW2S), "readme", "--readme", str(readme_md)], capture_output=True, text=True)
    assert cli_rc.returncode == 0, cli_rc.stderr
    readme_md.write_text(text.replace("| ", "|  ", 1))  # a hand edit of a generated number's row
    cli_rc = subprocess.run([str(ENSEMW2S), "readme", "--readme", str(readme_md)], capture_output=True, text=True)
    assert cli_rc.returncode == 2 and "generated blocks differ" in cli_rc.stderr and "ensemw2s readme --write" in cli_rc.stderr


def test_a_go_no_go_block_is_the_gate_of_the_runs_score_files(committed_run):
    from ensemw2s import config as config_mod
    from ensemw2s.planning import gate_scores, go_no_go, render_go_no_go
    from ensemw2s.readme import END, render

    run = committed_run / "results/fake"
    gates = gate_scores(run, config_mod.load(run / "config.yaml"))
    assert len(gates) == 1
    (files,) = gates.values()
    assert [p.relative_to(run / "scores/synthetic/s0").as_posix().split("/")[0] for p in files] == [
        "weak_base", "strong_base", "expert", "ceiling"]
    assert files[2].as_posix().endswith("/boost/r1.json")  # METHOD's h_1, not a later expert
    text, changed = render("<!-- generated: go_no_go from results/fake -->\n" + END + "\n", committed_run)
    assert changed == ["go_no_go from results/fake"]
    assert render_go_no_go(go_no_go(files)) in text and "synthetic, seed 0" in text


def test_generated_block_errors_name_the_fix(committed_run, tmp_path):
    from ensemw2s.errors import UserError
    from ensemw2s.readme import render

    with pytest.raises(UserError, match="has no '<!-- end generated -->' line"):
        render("<!-- generated: table summary from results/fake -->\nrows\n", committed_run)
    with pytest.raises(UserError, match="metrics.csv not found; commit that run's results"):
        render("<!-- generated: table summary from results/none -->\n<!-- end generated -->\n", committed_run)


def test_the_committed_readme_is_generated_from_the_committed_results():
    """What CI checks: every generated block of README.md equals what `ensemw2s readme` prints now."""
    from ensemw2s.readme import readme
    from tests.conftest import REPO

    assert readme(REPO / "README.md", write=False) == []
