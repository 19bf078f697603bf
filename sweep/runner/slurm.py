"""A sweep as a chain of Slurm batch jobs that carries on past each job's time limit.

    gansweep slurm --preset paper --gpus-per-node 4 --gpus-per-trial 0.25 --time 24:00:00 --submit

`gansweep slurm` writes one batch script per run, RUN_DIR/slurm/job.sbatch, and every job of
the chain runs that same file:
  1. Ray: on one node, gansweep starts its own local instance (as on a laptop); on several, the
     script starts a head on the first node and a worker on each other one (srun), as Ray's own
     Slurm guide does, and the driver joins it with --address;
  2. the sweep: `gansweep run` when RUN_DIR holds no run yet, else `gansweep resume`;
  3. near the time limit Slurm sends the batch shell SIGUSR1 (`--signal=B:USR1@GRACE`); the
     script passes SIGTERM to the driver, which stops the sweep the way every signal does
     (sweep/runner/signals.py: unfinished points `pending`, Tune's state saved), then submits
     the same file again with `--dependency=afterany:<this job>`: the next job resumes;
  4. `scancel` signals every process of the job with SIGTERM, the driver included: the same
     clean stop, and no successor (only the USR1 of the time limit chains);
  5. the chain ends when the sweep finishes (exit 0), when a job ends any other way (bad input,
     a full disk, a crash: another job would only repeat it), when two jobs in a row finished no
     point (each spent its time starting up, say: a longer --time is needed), or after MAX_JOBS jobs.

A successor by dependency, not `scontrol requeue`: requeue keeps the job id but needs the
cluster to allow it (JobRequeue, `--requeue`), while a dependent submission works on any Slurm.
Each session of the run records its job id (SLURM_JOB_ID) in the manifest; `gansweep status`
lists them.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sweep.errors import UserError
from sweep.record.layout import MANIFEST, SLURM_DIR

TEMPLATE = Path(__file__).with_name("slurm_job.sh")  # the script's bash, with @NAME@ placeholders
SCRIPT_NAME = "job.sbatch"  # RUN_DIR/slurm/job.sbatch; each job's output is RUN_DIR/slurm/<job id>.out
CHAIN_EXIT = 143  # the driver's exit status after the SIGTERM the script sends it on USR1 (128 + 15)


@dataclass(frozen=True)
class SlurmJob:
    """What each job of the chain asks Slurm for."""

    nodes: int = 1  # nodes per job; more than one starts a Ray cluster across them
    cpus_per_node: int = 8  # CPUs per node (--cpus-per-task of the one task per node)
    gpus_per_node: int = 0  # GPUs per node (--gpus-per-node)
    time: str = "24:00:00"  # each job's time limit, in Slurm's format (minutes, H:MM:SS, D-HH:MM:SS)
    grace: int = 300  # seconds before the limit at which the sweep is stopped and the next job submitted
    partition: str = ""  # --partition, when set
    account: str = ""  # --account, when set
    extra: tuple[str, ...] = ()  # more #SBATCH options, verbatim (e.g. "--qos=long")
    max_jobs: int = 20  # jobs in one chain at most: a guard against a run that never finishes
    join_timeout: int = 120  # seconds the head waits for every node's Ray to join (then goes on without)

    def check(self) -> None:
        if self.nodes < 1 or self.cpus_per_node < 1 or self.gpus_per_node < 0:
            raise UserError("--nodes and --cpus-per-node must be >= 1, --gpus-per-node >= 0")
        if self.join_timeout < 1:
            raise UserError(f"--join-timeout must be >= 1 second, got {self.join_timeout}")
        if self.max_jobs < 1:
            raise UserError(f"--max-jobs must be >= 1, got {self.max_jobs}")
        limit = time_limit_seconds(self.time)
        if not 0 < self.grace < limit:
            raise UserError(f"--grace {self.grace}s must be positive and shorter than --time {self.time} "
                            f"({limit}s): the sweep needs the rest of the job to run")
        for line in self.extra:  # one #SBATCH line each: sbatch ends an option's value at whitespace
            if not line.startswith("--") or any(c.isspace() for c in line):
                raise UserError(f"--sbatch {line!r}: one sbatch option, without spaces, e.g. --sbatch=--qos=long")


def time_limit_seconds(text: str) -> int:
    """Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise UserError(f"--time {text!r}: expected Slurm's format, e.g. 90, 4:00:00 or 1-12:00:00")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H[:M[:S]]
        h, mi, s = a, b or 0, c or 0
        return ((days * 24 + h) * 60 + mi) * 60 + s
    if c is not None:  # H:M:S
        return (a * 60 + b) * 60 + c
    if b is not None:  # M:S
        return a * 60 + b
    return a * 60  # M


def script(job: SlurmJob, run_dir: Path, run_args: list[str], resume_args: list[str], env: dict[str, str]) -> str:
    """The batch script of a run: every job of the chain runs it (module docstring).

    run_args: the `gansweep run` arguments of the first job (preset, --name, --storage, ...);
    resume_args: what every later job adds to `gansweep resume RUN_DIR`; env: variables to export
    (GANSWEEP_DATA, say). run_dir must be absolute: jobs may start in another folder."""
    ray = shlex.quote(str(Path(sys.executable).with_name("ray")))
    gpus = f" --num-gpus={job.gpus_per_node}" if job.gpus_per_node else ""
    sbatch = [f"--job-name=gansweep-{run_dir.name}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
              f"--cpus-per-task={job.cpus_per_node}", f"--time={job.time}", f"--signal=B:USR1@{job.grace}",
              f"--output={run_dir}/{SLURM_DIR}/%j.out", "--open-mode=append"]
    sbatch += [f"--gpus-per-node={job.gpus_per_node}"] * bool(job.gpus_per_node)
    sbatch += [f"--partition={job.partition}"] * bool(job.partition)
    sbatch += [f"--account={job.account}"] * bool(job.account)
    sbatch += list(job.extra)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    resume = " ".join(['"${GANSWEEP[@]}" resume "$RUN" "${CLUSTER[@]}"', shlex.join(resume_args), "&"]).replace("  ", " ")
    launch = (f'if [ -f "$RUN/{MANIFEST}" ]; then\n  {resume}\nelse\n'
              f'  "${{GANSWEEP[@]}}" run {shlex.join(run_args)} "${{CLUSTER[@]}}" &\nfi') if run_args else resume
    values = {"NAME": run_dir.name, "DATE": f"{datetime.now():%Y-%m-%d %H:%M}",
              "SBATCH": "\n".join("#SBATCH " + s for s in sbatch), "RUN": shlex.quote(str(run_dir)),
              "MAX_JOBS": str(job.max_jobs), "PYTHON": shlex.quote(sys.executable),
              "CWD": shlex.quote(str(Path.cwd())), "EXPORTS": exports, "RAY": ray, "GPUS": gpus, "LAUNCH": launch,
              "SRUN_GPUS": f" --gpus-per-node={job.gpus_per_node}" if job.gpus_per_node else "", "GRACE": str(job.grace), "JOIN_TIMEOUT": str(job.join_timeout), "CHAIN_EXIT": str(CHAIN_EXIT), "SCRIPT_NAME": SCRIPT_NAME}
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def sbatch_path() -> str:
    path = shutil.which("sbatch")
    if path is None:
        raise UserError("sbatch not found: run `gansweep slurm --submit` on a Slurm login node "
                        "(or write the script without --submit and submit it there)")
    return path


def submit(script_file: Path) -> str:
    """Submit a batch script; returns its job id."""
    r = subprocess.run([sbatch_path(), "--parsable", str(script_file)], capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"sbatch refused {script_file}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip().split(";")[0]


def wait_for_nodes(address: str, timeout: float, expected: dict[str, str], log_dir: str = "RUN_DIR/slurm") -> int:
    """In a job of several nodes, before the sweep starts: wait until the Ray node of every Slurm node
    (name -> the IP address it announces) is alive in the cluster at `address`, at most `timeout`
    seconds. Prints one line: the cluster that formed, or each node that did not join (the sweep then
    runs on the others: the allocation is paid for either way, and Tune places trials on a node that
    joins later). Exit status 1 when the head itself never answered: there is nothing to run on."""
    import time

    import ray

    t0, error, job = time.monotonic(), "", os.environ.get("SLURM_JOB_ID", "JOB")
    while not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except Exception as e:  # the head still starting, or refusing us (a wrong token)
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if time.monotonic() - t0 > timeout:
                print(f"gansweep-slurm: the Ray head at {address} did not answer within {timeout:.0f} s: {error}")
                return 1
            time.sleep(1)
    while True:
        alive = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        missing = [name for name, ip in expected.items() if ip not in alive]
        if not missing or time.monotonic() - t0 > timeout:
            break
        time.sleep(1)
    ray.shutdown()
    took = time.monotonic() - t0
    if not missing:
        print(f"gansweep-slurm: Ray cluster of {len(expected)} nodes up in {took:.0f} s: {', '.join(expected)}")
        return 0
    for name in missing:
        print(f"gansweep-slurm: node {name} ({expected[name]}) did not join the Ray cluster within {timeout:.0f} s "
              f"(its Ray's output: {log_dir}/{job}-ray-{name}.log)")
    print(f"gansweep-slurm: the sweep runs on {len(expected) - len(missing)} of {len(expected)} nodes")
    return 0


if __name__ == "__main__":  # the job script's own steps (slurm_job.sh)
    if len(sys.argv) == 3 and sys.argv[1] == "finished-points":
        from sweep.record.results import finished_count

        print(finished_count(Path(sys.argv[2])))
        sys.exit(0)
    if len(sys.argv) >= 4 and sys.argv[1] == "wait-for-nodes":
        pairs = dict(arg.split("=", 1) for arg in sys.argv[4:])
        sys.exit(wait_for_nodes(sys.argv[2], float(sys.argv[3]), pairs, f"{os.environ.get('RUN', 'RUN_DIR')}/{SLURM_DIR}"))
    sys.exit(f"usage: python -m {__spec__.name} wait-for-nodes ADDRESS TIMEOUT NAME=IP... | finished-points RUN_DIR")
