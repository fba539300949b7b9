"""Every command README.md shows is checked: here in a cheap form (`--help`, `make -n`, `snakemake -n`), or
by a named test that runs it (ELSEWHERE). A command added to the README that no rule below covers fails
`test_every_command_shown_is_covered`, naming it.

Commands are every line of a shell code block and every inline code span of two words or more that starts
with a program of PROGRAMS (the step table, `make setup-gguf`, `snakemake --unlock`, ...), split at `&&`.
"""
from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ensemw2s import cli
from tests.conftest import REPO
from tests.test_workflow import dry_run, snakemake

README = REPO / "README.md"
ENSEMW2S = Path(sys.executable).with_name("ensemw2s")  # the console script of `pip install -e .` (pyproject)
PROGRAMS = {"ensemw2s", "snakemake", ".venv/bin/snakemake", "make", "lm_eval", "lm-eval", "python", "pip",
            ".venv/bin/pip", ".venv/bin/python", "mamba", "conda", "pytest"}
SHELL_FENCE = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.M | re.S)
ANY_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
NOT_COMMANDS = {"ensemw2s <step>: error: ...": "the format of an error line, not a command"}
# options that change neither the jobs of the DAG nor what a dry run checks
SNAKEMAKE_NEUTRAL = {"-n", "-p", "--rerun-incomplete"}
SNAKEMAKE_NEUTRAL_WITH_VALUE = {"--cores"}
# a command's check -> the tests that run it, as (module, test, strings its source must contain)
ELSEWHERE = {
    ("dag", None, ()): [("tests.test_workflow", "test_default_dag_expands_rounds_and_roles", ("dry_run(tmp_path)",))],
    ("dag", None, ("config/paper.yaml",)): [("tests.test_workflow", "test_paper_grid_dry_run_lists_every_job",
                                             ('"paper.yaml"',))],
    # the profile and the grid are each dry-run there; the two together are another 40 s dry run
    ("dag", "profiles/slurm", ("config/paper.yaml",)): [
        ("tests.test_workflow", "test_slurm_profile_dry_run", ("profiles/slurm",)),
        ("tests.test_workflow", "test_paper_grid_dry_run_lists_every_job", ('"paper.yaml"',))],
    ("unlock",): [("tests.test_end_to_end", "test_a_killed_run_resumes_to_a_byte_identical_metrics_csv",
                   ('"--unlock"', '"--rerun-incomplete"'))],
    ("benchmark", "benchmarks/gpu_check.py"): [
        ("tests.test_benchmarks", "test_gpu_check_refuses_without_cuda_and_runs_on_cpu_at_tiny_shapes",
         ('"gpu_check.py"', '"--device", "cpu"'))],
    ("step", cli.LM_EVAL): [("tests.test_lmeval_model", "test_lm_eval_command_writes_the_suites_scores",
                             ('"lm-eval"', '"--include_path"'))],
    ("step", "power-plan"): [("tests.test_planning", "test_the_real_runs_config_holds_the_plan_the_readme_command_prints",
                              ('"power-plan"', '"results/cpu-real-pilot"', '"results/ablation"'))],
}


def readme_commands(text: str) -> list[str]:
    """The commands of `text` (one space between words, placeholders like `<output path>` one word)."""
    found: list[str] = []

    def add(span: str, any_program: bool) -> None:
        for part in span.split("&&"):
            part = re.sub(r"<[^>]*>", lambda m: m.group().replace(" ", "_"), part)
            words = part.split()
            if words and (any_program or (words[0] in PROGRAMS and len(words) > 1)):  # `pytest`: a mention
                found.append(" ".join(words))

    for block in SHELL_FENCE.findall(text):
        for line in block.splitlines():
            add(re.sub(r"(^|\s)#.*", "", line), any_program=True)
    for span in INLINE.findall(ANY_FENCE.sub("", text)):
        add(span, any_program=False)
    return [c for c in dict.fromkeys(found) if c not in NOT_COMMANDS]


def _snakemake_check(args: list[str]) -> tuple:
    profile, configfiles, check, target = None, [], None, None
    taking_files = False
    it = iter(args)
    for arg in it:
        if taking_files and not arg.startswith("-"):
            configfiles.append(arg)
            continue
        taking_files = False
        if arg in SNAKEMAKE_NEUTRAL:
            continue
        if arg in SNAKEMAKE_NEUTRAL_WITH_VALUE:
            next(it)
        elif arg == "--profile":
            profile = next(it)
        elif arg == "--configfile":  # takes every word up to the next option, as snakemake does
            configfiles.append(next(it))
            taking_files = True
            continue
        elif arg in ("-f", "--report", "--unlock") and check is None:
            check = {"-f": "force", "--report": "report", "--unlock": "unlock"}[arg]
            if arg != "--unlock":
                next(it)  # the target / the report file: checked with a path of the test's own
        elif not arg.startswith("-") and target is None and check is None:
            target = arg  # a rule to run instead of `all` (`gate`)
        else:
            return ("uncovered", f"snakemake option {arg}")
    if check == "unlock":
        return ("unlock",)
    if target is not None:
        return ("target", profile, tuple(configfiles), target)
    return (check or "dag", profile, tuple(configfiles))


def check_of(command: str) -> tuple:
    """How `command` is checked: a key of ELSEWHERE, or one the tests of this module run."""
    program, *args = command.split()
    if program in ("ensemw2s", ".venv/bin/ensemw2s") and args:
        return ("step", args[0])
    if program == "make" and args and not any(a.startswith("-") for a in args):
        return ("make", *args)
    if program in ("snakemake", ".venv/bin/snakemake"):
        return _snakemake_check(args)
    if program in ("python", ".venv/bin/python") and args[:1] == ["benchmarks/gpu_check.py"]:
        return ("benchmark", args[0])  # needs a GPU: its CPU smoke test is in ELSEWHERE
    if (program in ("python", ".venv/bin/python") and args[:2] == ["-m", "venv"]) or (
            program in ("pip", ".venv/bin/pip") and args[:1] == ["install"]) or (
            program == "mamba" and args[:2] == ["env", "create"]) or (program == "conda" and args[:1] == ["activate"]):
        return ("install", command)
    return ("uncovered", command)


COMMANDS = readme_commands(README.read_text())
CHECKS = {c: check_of(c) for c in COMMANDS}


def checks(kind: str) -> list[tuple]:
    return list(dict.fromkeys(k for k in CHECKS.values() if k[0] == kind))


def steps() -> list[str]:
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_extraction_finds_blocks_inline_spans_and_chains():
    text = ("```bash\nmake run    # set up, then run\nsnakemake --cores 8\n```\n"
            "| `ensemw2s ensemble --experts DIR... --out F` | x |\n"
            "Run `make setup-gguf && .venv/bin/snakemake -n -f <output path>`; see `config/config.yaml`.\n")
    assert readme_commands(text) == ["make run", "snakemake --cores 8", "ensemw2s ensemble --experts DIR... --out F",
                                     "make setup-gguf", ".venv/bin/snakemake -n -f <output_path>"]
    assert check_of("snakemake --cores 8") == ("dag", None, ())
    assert check_of("snakemake --profile profiles/slurm --configfile config/paper.yaml -n") == (
        "dag", "profiles/slurm", ("config/paper.yaml",))
    assert check_of("snakemake --cores 8 --until metrics") == ("uncovered", "snakemake option --until")
    assert check_of("snakemake gate --cores 2 --configfile c.yaml") == ("target", None, ("c.yaml",), "gate")
    assert check_of("snakemake gate --configfile c.yaml d.yaml --cores 2") == ("target", None, ("c.yaml", "d.yaml"), "gate")
    assert check_of("docker run ensemw2s") == ("uncovered", "docker run ensemw2s")


def test_every_command_shown_is_covered():
    assert len(COMMANDS) >= 20, f"extraction found only {COMMANDS}"  # the table alone has 10 rows
    uncovered = [c for c, k in CHECKS.items() if k[0] == "uncovered"]
    assert not uncovered, (f"README.md shows commands no test checks: {uncovered}; add a rule to check_of "
                           f"(tests/test_readme_commands.py) and a check, or a test to ELSEWHERE")
    for key in set(CHECKS.values()) & set(ELSEWHERE):
        for module, name, must_contain in ELSEWHERE[key]:
            path = REPO / (module.replace(".", "/") + ".py")
            source = path.read_text()  # read, not imported: the end-to-end module's imports take seconds
            test = next((f for f in ast.parse(source).body if isinstance(f, ast.FunctionDef) and f.name == name), None)
            assert test is not None, f"{module}.{name} (which runs the README's {key}) does not exist"
            body = ast.get_source_segment(source, test)
            assert all(s in body for s in must_contain), f"{module}.{name} no longer runs {must_contain}"


def help_text(step: str, capsys) -> str:
    """`ensemw2s STEP --help`, in this process; lm-eval's options are those of its `run` command."""
    argv = [step, *(["run"] if step == cli.LM_EVAL else []), "--help"]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 0, f"`ensemw2s {' '.join(argv)}` exited with {exited.value.code}"
    return capsys.readouterr().out


def test_the_console_script_lists_every_step():
    res = subprocess.run([str(ENSEMW2S), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{ENSEMW2S} --help failed (install the package: pip install -e .): {res.stderr}"
    assert all(step in res.stdout for step in steps()), res.stdout


@pytest.mark.parametrize("step", [k[1] for k in checks("step")])
def test_ensemw2s_steps_shown_exist_with_the_options_shown(step, capsys):
    shown = {w.strip("[]") for c, k in CHECKS.items() if k == ("step", step) for w in c.split()}
    for name in steps() if step == "<step>" else [step]:
        usage = help_text(name, capsys)
        missing = sorted(w for w in shown if w.startswith("--") and w not in usage)
        assert not missing, f"README shows `ensemw2s {name}` with options it does not have: {missing}"


@pytest.mark.parametrize("targets", [k[1:] for k in checks("make")])
def test_make_targets_shown_exist(targets):
    res = subprocess.run(["make", "-n", *targets], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("key", [k for k in checks("dag") if k not in ELSEWHERE])
def test_snakemake_commands_shown_dry_run(key, tmp_path):
    _, profile, configfiles = key
    counts = dry_run(tmp_path, *(["--profile", profile] if profile else []),
                     *[a for f in configfiles for a in ("--configfile", str(REPO / f))])
    assert counts.get("all") == 1


@pytest.mark.parametrize("key", checks("target"))
def test_snakemake_targets_shown_dry_run(key, tmp_path):
    """`snakemake ... gate`: the target rule exists and plans only what it needs (no `all`)."""
    _, profile, configfiles, target = key
    counts = dry_run(tmp_path, *(["--profile", profile] if profile else []),
                     *[a for f in configfiles for a in ("--configfile", str(REPO / f))], "--", target)
    assert counts.get(target) == 1 and "all" not in counts and "metrics" not in counts, counts


@pytest.mark.parametrize("key", checks("force"))
def test_a_forced_target_prints_its_ensemw2s_line(key, tmp_path):
    """`snakemake -n -p -f <output path>` prints the job's command line (README: rerun one step by hand)."""
    _, profile, configfiles = key
    extra = [*(["--profile", profile] if profile else []),
             *[a for f in configfiles for a in ("--configfile", str(REPO / f))]]
    run = yaml.safe_load((REPO / (configfiles[-1] if configfiles else "config/config.yaml")).read_text())["run"]
    res = snakemake("-n", "-p", "--cores", "1", "--directory", str(REPO), *extra, "--config",
                    f"results_dir={tmp_path}", "-f", str(tmp_path / run / "metrics.csv"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"ensemw2s metrics --config \S+", res.stdout), res.stdout[-3000:]


@pytest.mark.parametrize("key", checks("report"))
def test_the_report_command_on_the_committed_run(key, tmp_path):
    """`snakemake --report` needs a finished run (it has no dry-run form): checked on the committed one."""
    _, profile, configfiles = key
    extra = [*(["--profile", profile] if profile else []),
             *[a for f in configfiles for a in ("--configfile", str(REPO / f))]]
    res = snakemake("--directory", str(REPO), *extra, "--report", str(tmp_path / "report.html"))
    assert res.returncode == 0, (f"the README's `snakemake --report` fails on the committed run of "
                                 f"{configfiles or 'config/config.yaml'} (commit its results/<run>/ metrics.csv, "
                                 f"tables and figures): {res.stderr[-2000:]}")
    assert (tmp_path / "report.html").stat().st_size > 0


@pytest.mark.parametrize("command", [k[1] for k in checks("install")])
def test_install_commands_name_the_files_and_pins_of_make_setup(command):
    """Installing needs the network (CI installs from a fresh clone with `make setup`); what the README's own
    install lines name must exist and agree with the Makefile: the files, the torch pin, the venv, the env."""
    makefile = (REPO / "Makefile").read_text()
    words = command.split()
    for flag, value in zip(words, words[1:]):
        if flag in ("-r", "-f"):
            assert (REPO / value).is_file(), f"`{command}`: {value} does not exist"
    for pin in (w for w in words if w.startswith("torch==")):
        assert f"pip install -q {pin}" in makefile, f"`{command}`: the Makefile does not install {pin}"
    if words[1:3] == ["-m", "venv"]:
        assert re.search(rf"^VENV\s*\?=\s*{re.escape(words[3])}$", makefile, re.M), command
    if words[0] == "conda":
        assert yaml.safe_load((REPO / "environment.yml").read_text())["name"] == words[2], command
