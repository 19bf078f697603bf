"""`gansweep slurm`: a sweep as a chain of Slurm batch jobs (sweep/runner/slurm.py).

    gansweep slurm --preset smoke --dry-run                    # print the batch script
    gansweep slurm --preset paper --gpus-per-node 4 --gpus-per-trial 0.25 --submit
    gansweep slurm --resume runs/paper-20261126-101500 --submit
"""
from __future__ import annotations

import argparse
import os
import re
from datetime import datetime
from pathlib import Path

from sweep.cli import run as run_command
from sweep.cli.common import Parser, log, preset_of
from sweep.errors import UserError
from sweep.record.rundir import RunDir
from sweep.runner.cluster import check_storage

WHAT = "run a sweep as Slurm batch jobs that stop before their time limit and chain until it is done"
EXAMPLES = ["gansweep slurm --preset smoke --dry-run",
            "gansweep slurm --preset paper --gpus-per-node 4 --gpus-per-trial 0.25 --time 24:00:00 --submit",
            "gansweep slurm --resume runs/paper-20261126-101500 --submit"]
SET_BY_THE_JOB = ("address", "num_cpus")  # the script passes these to gansweep run / resume itself
# Slurm's names: a partition (or a comma-separated list of them) and an account
SLURM_NAME = re.compile(r"[A-Za-z0-9_.-]+")
SLURM_LIST = re.compile(r"[A-Za-z0-9_.-]+(?:,[A-Za-z0-9_.-]+)*")


def add_arguments(p) -> None:
    s = p.add_argument_group("Slurm (each job of the chain)")
    s.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes per job (default 1; more start a "
                                                                      "Ray cluster across them)")
    s.add_argument("--cpus-per-node", type=int, default=8, metavar="N", help="CPUs per node (default 8)")
    s.add_argument("--gpus-per-node", type=int, default=0, metavar="N", help="GPUs per node (default 0)")
    s.add_argument("--time", default="24:00:00", metavar="LIMIT",
                   help="each job's time limit, in Slurm's format (default 24:00:00)")
    s.add_argument("--grace", type=int, default=300, metavar="SECONDS",
                   help="stop the sweep and submit the next job this long before the limit (default 300)")
    s.add_argument("--partition", default="", metavar="NAME", help="the partition to run in (default: Slurm's)")
    s.add_argument("--account", default="", metavar="NAME", help="the account to charge (default: yours)")
    s.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="one more sbatch option, e.g. --sbatch=--qos=long (repeatable)")
    s.add_argument("--join-timeout", type=int, default=120, metavar="SECONDS",
                   help="with --nodes > 1: how long the head waits for every node's Ray to join before the "
                        "sweep starts on those that did (default 120)")
    s.add_argument("--max-jobs", type=int, default=20, metavar="N", help="jobs in the chain at most (default 20)")
    s.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="carry on this run (its preset and options are recorded) instead of starting one")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    what.add_argument("--submit", action="store_true", help="write the script and submit its first job (sbatch)")
    run_command.add_arguments(p.add_argument_group("the sweep (as gansweep run)"))


def run(a) -> int:
    from sweep.runner.slurm import SCRIPT_NAME, SlurmJob, script, submit

    check_values(a)  # before anything is read, written or queued
    job = SlurmJob(nodes=a.nodes, cpus_per_node=a.cpus_per_node, gpus_per_node=a.gpus_per_node, time=a.time,
                   grace=a.grace, partition=a.partition, account=a.account, extra=tuple(a.sbatch),
                   max_jobs=a.max_jobs, join_timeout=a.join_timeout)
    job.check()
    for dest in SET_BY_THE_JOB:
        if getattr(a, dest) is not None:
            raise UserError(f"--{dest.replace('_', '-')}: each job sets it (its nodes' CPUs, its own Ray cluster)")
    if a.resume:
        run_dir, run_args = _resumed(a)
    else:
        run_dir, run_args = _new(a)
    if job.nodes > 1:  # every node's Ray worker writes there: found now, not after the queue wait
        check_storage(str(run_dir.parent), "slurm", a.shared_storage)
    data = os.environ.get("GANSWEEP_DATA")
    env = {"GANSWEEP_DATA": str(Path(data).expanduser().resolve())} if data else {}
    text = script(job, run_dir, run_args, [], env)
    if a.dry_run:
        print(text, end="")
        return 0
    script_file = RunDir(run_dir).slurm_dir / SCRIPT_NAME
    script_file.parent.mkdir(parents=True, exist_ok=True)
    script_file.write_text(text)
    script_file.chmod(0o755)
    if not a.submit:
        log.info("wrote %s; submit its first job with: sbatch %s", script_file, script_file)
        return 0
    job_id = submit(script_file)
    print(f"submitted job {job_id}: run {run_dir} (its output: {run_dir}/slurm/{job_id}.out)")
    return 0


def check_values(a) -> None:
    """Every value this command may write into the batch script, refused in one line when the script
    could not hold it as given: a control character (a newline or carriage return would start a line
    of its own, which bash runs when the job starts) in any value, and a partition or account outside
    Slurm's names. Values the script runs are single-quoted words, and #SBATCH lines are comments to
    bash, so `$(...)` or a backquote stays text there."""
    flags = {}
    for act in _parser()._actions:
        if act.option_strings:
            flags[act.dest] = next(s for s in act.option_strings if s.startswith("--"))
    for dest, flag in flags.items():
        value = getattr(a, dest, None)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and any(ord(c) < 32 or ord(c) == 127 for c in v):
                raise UserError(f"{flag} {v!r}: holds a control character (a newline, say), which would "
                                "start a line of its own in the job script")
    for flag, value, pattern in (("--partition", a.partition, SLURM_LIST), ("--account", a.account, SLURM_NAME)):
        if value and not pattern.fullmatch(value):
            raise UserError(f"{flag} {value!r}: not a Slurm name (letters, digits, '_', '-' and '.'"
                            f"{', comma-separated' if pattern is SLURM_LIST else ''})")


def _parser() -> Parser:
    p = Parser(prog="gansweep slurm")
    add_arguments(p)
    return p


def _no_whitespace(run_dir: Path) -> Path:
    """A run directory an #SBATCH line can name (--output=RUN_DIR/slurm/%j.out): sbatch ends a value
    at whitespace."""
    if any(c.isspace() for c in str(run_dir)):
        raise UserError(f"{run_dir}: a run directory for Slurm jobs must have no whitespace in its path "
                        "(#SBATCH --output names it); pick another --storage or --name")
    return run_dir


def _resumed(a) -> tuple[Path, list[str]]:
    from sweep.record.layout import MANIFEST

    changed = [f for f in run_argv(a) if f.startswith("--") and f != "--shared-storage"]
    if changed:
        raise UserError(f"--resume: the run's options are recorded; pass Slurm options only (not {changed[0]})")
    run_dir = _no_whitespace(Path(a.resume).resolve())
    if not (run_dir / MANIFEST).exists():
        raise UserError(f"--resume {a.resume}: no run there ({MANIFEST} not found)")
    return run_dir, []


def _new(a) -> tuple[Path, list[str]]:
    """The run directory of a new sweep, and its `gansweep run` arguments (checked now: an error in
    the preset is found here, not hours later in the queue)."""
    from sweep.record.layout import MANIFEST
    from sweep.record.store import Storage

    _, preset = preset_of(a)
    run_command.check_runtime(a)
    # the chain must know the run directory before the first job starts
    a.name = run_command.check_name(a.name or f"{preset.name}-{datetime.now():%Y%m%d-%H%M%S}")
    storage = Storage.parse(a.storage)
    if storage.remote:
        raise UserError("--storage: gansweep slurm keeps runs on a filesystem the nodes share; "
                        "give a path (object storage: see docs/cluster.md)")
    a.storage = str(Path(a.storage).resolve())  # the job's `gansweep run` reads it from another folder
    run_dir = _no_whitespace(Storage.parse(a.storage).run_dir(a.name))
    if (run_dir / MANIFEST).exists():
        raise UserError(f"{run_dir} already holds a run: `gansweep slurm --resume {run_dir}` continues it")
    return run_dir, run_argv(a)


def run_argv(a) -> list[str]:
    """The `gansweep run` arguments that give a's sweep options: each one that differs from its default."""
    p = Parser(prog="gansweep run")
    run_command.add_arguments(p)
    out: list[str] = []
    for act in p._actions:
        if not act.option_strings or act.dest in SET_BY_THE_JOB + ("help",):
            continue
        value, flag = getattr(a, act.dest), next(s for s in act.option_strings if s.startswith("--"))
        if value == act.default:
            continue
        if isinstance(act, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            out.append(flag)
        elif isinstance(act, argparse._AppendAction):
            for v in value:
                out += [flag, str(v)]
        else:
            out += [flag, str(value)]
    return out
