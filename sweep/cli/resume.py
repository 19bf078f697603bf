"""`gansweep resume RUN_DIR`: carry on a run with its recorded preset, overrides and sample."""
from __future__ import annotations


from sweep.cli.common import add_data_args
from sweep.cli.run import add_cluster_args, add_disk_check_arg, check_session_options

WHAT = "carry on a sweep whose driver stopped, with its recorded preset, overrides and sample"
EXAMPLES = ["gansweep resume runs/mini-20261124-101500", "gansweep resume s3://bucket/gansweep/mini-20261124-101500", "gansweep resume runs/mini-... --restart-errored"]


def add_arguments(p) -> None:
    p.add_argument("run_dir")
    errored = p.add_mutually_exclusive_group()
    errored.add_argument("--skip-errored", action="store_true", help="do not retry errored trials")
    errored.add_argument("--restart-errored", action="store_true",
                         help="retry errored trials from scratch, not from their last checkpoint")
    add_cluster_args(p)
    add_data_args(p)
    add_disk_check_arg(p)


def run(a) -> int:
    from sweep.record.store import run_argument
    from sweep.runner.engine import resume_sweep

    check_session_options(a)
    overrides = {k: v for k, v in (("address", a.address), ("num_cpus", a.num_cpus), ("data_root", a.data_root),
                                   ("stall_timeout", a.stall_timeout)) if v is not None}
    run_dir, store = run_argument(a.run_dir)  # a run in object storage: worked on in ./runs/<name>, pulled first
    resume_sweep(run_dir, overrides, skip_errored=a.skip_errored, restart_errored=a.restart_errored,
                 download=a.download, disk_check=a.disk_check, store=store)
    return 0
