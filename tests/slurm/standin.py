"""Stand-ins for SLURM's commands, just enough for the real snakemake-executor-plugin-slurm to drive a run.

`python standin.py <command> ARGS...` behaves as `<command> ARGS...` (sbatch, srun, sacct, squeue, scancel,
sinfo, sacctmgr) against a cluster that is this machine. Every call appends one JSON line {"cmd", "argv",
"job"} to $STANDIN_SLURM_DIR/calls.jsonl, so a test reads back exactly what was submitted. A job is one
file $STANDIN_SLURM_DIR/jobs/<id>.json holding its name, options and State, which sacct and squeue print as
the real ones do (`<id>|<STATE>`). (Its variables do not start with SLURM_: the job-step plugin drops
those before it calls srun.) `sbatch` returns the id at once, as --parsable does, and runs the job's
--wrap script in the background with SLURM's job variables; a job whose --comment contains
$STANDIN_SLURM_FAIL_FIRST fails (State FAILED) without running, the first time only, so a test sees how a
failed job is reported and retried.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

STATE_DIR = Path(os.environ["STANDIN_SLURM_DIR"])
JOBS = STATE_DIR / "jobs"
# sbatch options the plugin passes as two tokens; all others are one token (`--gpus=1`) or a flag
TWO_TOKEN = {"--job-name", "--output", "--comment", "-A", "-p", "-t", "-C", "--mem", "--mem-per-cpu", "-D",
             "--clusters", "-J", "--qos", "--reservation"}


def log_call(cmd: str, argv: list[str]) -> None:
    line = json.dumps({"cmd": cmd, "argv": argv, "job": os.environ.get("SLURM_JOB_ID")})
    with open(STATE_DIR / "calls.jsonl", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line + "\n")


def options(argv: list[str]) -> dict[str, str | bool]:
    """sbatch's options as {name: value}; a flag maps to True."""
    opts, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg in TWO_TOKEN:
            opts[arg], i = argv[i + 1], i + 2
            continue
        name, eq, value = arg.partition("=")
        opts[name] = value if eq else True
        i += 1
    return opts


def read_job(job_id: str) -> dict:
    return json.loads((JOBS / f"{job_id}.json").read_text())


def write_job(job: dict) -> None:
    tmp = JOBS / f"{job['id']}.json.tmp"
    tmp.write_text(json.dumps(job))
    tmp.replace(JOBS / f"{job['id']}.json")


def new_job_id() -> str:
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "counter", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        job_id = int(f.read() or 1000) + 1
        f.seek(0)
        f.truncate()
        f.write(str(job_id))
    return str(job_id)


def sbatch(argv: list[str]) -> int:
    opts = options(argv)
    job_id = new_job_id()
    fail_marker = os.environ.get("STANDIN_SLURM_FAIL_FIRST")
    fail = bool(fail_marker) and fail_marker in opts.get("--comment", "") and not any(
        read_job(p.stem).get("failed_on_purpose") for p in JOBS.glob("*.json"))
    write_job({"id": job_id, "name": opts["--job-name"], "opts": opts, "state": "PENDING",
               "failed_on_purpose": fail})
    subprocess.Popen([sys.executable, __file__, "_run", job_id], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(job_id)  # --parsable: the id alone
    return 0


def run(job_id: str) -> int:
    """The batch job: its --wrap script under `sh`, output to --output, then its final State."""
    job = read_job(job_id)
    opts = job["opts"]
    job.update(state="RUNNING", pid=os.getpid())
    write_job(job)
    if job["failed_on_purpose"]:
        job["state"] = "FAILED"
        write_job(job)
        return 1
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_JOB_NAME": job["name"]}
    if "--gpus" in opts:
        env["SLURM_GPUS"] = opts["--gpus"]
    with open(opts["--output"].replace("%j", job_id), "w") as out:
        code = subprocess.call(["sh", "-c", opts["--wrap"]], cwd=opts.get("-D"), env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    job["state"] = "COMPLETED" if code == 0 else "FAILED"
    write_job(job)
    return code


def states(argv: list[str]) -> int:
    """sacct --parsable2 / squeue --format=%i|%T: `<id>|<STATE>` per job of --name; sacct -j: no reason."""
    name = argv[argv.index("--name") + 1] if "--name" in argv else None
    if name is None:
        return 0
    for path in sorted(JOBS.glob("*.json")):
        job = read_job(path.stem)
        if job["name"] == name:
            print(f"{job['id']}|{job['state']}")
    return 0


def scancel(argv: list[str]) -> int:
    for job_id in (a for a in argv if a.isdigit()):
        job = read_job(job_id)
        if "pid" in job:
            try:
                os.killpg(job["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        job["state"] = "CANCELLED"
        write_job(job)
    return 0


def srun(argv: list[str]) -> int:
    """A job step: srun's own options come first, then the command, which replaces this process."""
    command = argv[next(i for i, a in enumerate(argv) if not a.startswith("-")):]
    os.execvp(command[0], command)


def main() -> int:
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "_run":
        return run(argv[0])
    log_call(cmd, argv)
    if cmd == "sbatch":
        return sbatch(argv)
    if cmd == "srun":
        return srun(argv)
    if cmd in ("sacct", "squeue"):
        return states(argv)
    if cmd == "scancel":
        return scancel(argv)
    if cmd == "sinfo":
        print("PARTITION\ngpu*")
        return 0
    if cmd == "sacctmgr":  # the accounts the user may charge: the plugin checks slurm_account against them
        print(os.environ.get("STANDIN_SLURM_ACCOUNTS", ""))
        return 0
    raise SystemExit(f"standin.py: unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
