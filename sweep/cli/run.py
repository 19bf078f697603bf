"""`gansweep run`: a preset as a Ray Tune sweep, into a new run directory (sweep/runner/engine.py)."""
from __future__ import annotations

from datetime import datetime

from sweep.cli.common import add_config_arg, add_data_args, add_pack_args, add_preset_args, pack_size_of, preset_of
from sweep.errors import UserError
from sweep.record.store import Storage
from sweep.runner.trackers import TRACKERS

WHAT = "run a preset as a Ray Tune sweep; results land in RUN_DIR as they finish"
EXAMPLES = ["gansweep run --preset mini", "gansweep run --preset paper --gpus-per-trial 0.25 --pack auto",
            "gansweep run --preset mini --set epochs=4 --tracker mlflow"]


def add_arguments(p) -> None:
    add_preset_args(p)
    p.add_argument("--name", default=None, metavar="NAME", help="run name (default: <preset>-<time>)")
    p.add_argument("--storage", default="runs", metavar="PATH", help="where runs live: a path, NFS path, s3:// or gs://")
    add_cluster_args(p)
    p.add_argument("--shared-storage", action="store_true",
                   help="assert that a --storage path is visible from every node")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="CPUs reserved per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="F",
                   help="e.g. 0.25: four trials per GPU (default 0)")
    p.add_argument("--max-concurrent", type=int, default=0, metavar="N", help="at most this many trials at once "
                                                                              "(default 0: as many as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, metavar="N",
                   help="retries per trial, from its checkpoint (default 2)")
    p.add_argument("--tracker", action="append", default=[], choices=TRACKERS,
                   help="also log every point to an experiment tracker (repeatable): wandb reads "
                        "WANDB_PROJECT / WANDB_MODE, mlflow MLFLOW_TRACKING_URI (default: RUN_DIR/mlruns); "
                        "needs pip install 'gansweep[wandb]' or '[mlflow]'")
    add_pack_args(p)
    add_config_arg(p)
    add_data_args(p)
    add_disk_check_arg(p)


def add_disk_check_arg(p) -> None:
    """--no-disk-check and --stall-timeout, shared with resume."""
    p.add_argument("--no-disk-check", dest="disk_check", action="store_false",
                   help="start even when the run's disks have less free space than the plan's estimated peak use")
    p.add_argument("--stall-timeout", type=float, default=None, metavar="SECONDS",
                   help="a trial silent this long is stopped and retried from its checkpoint, and trials pending "
                        "with none running this long stop the sweep (0: never; default: 10x a trial's expected "
                        "epoch time at the slowest rate seen, at least 5 minutes; 10 minutes with none running)")


def add_cluster_args(p) -> None:
    """--address and --num-cpus, shared with resume."""
    p.add_argument("--address", default=None, metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    p.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray instance (default: all)")


def check_runtime(a) -> None:
    if not a.cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {a.cpus_per_trial:g}")
    if a.gpus_per_trial < 0 or (a.gpus_per_trial > 1 and a.gpus_per_trial != int(a.gpus_per_trial)):
        raise UserError(f"--gpus-per-trial must be a fraction in (0, 1] or a whole number, "
                        f"got {a.gpus_per_trial:g}")
    if a.max_concurrent < 0 or a.max_failures < 0:
        raise UserError("--max-concurrent and --max-failures must be >= 0")
    check_session_options(a)


def check_session_options(a) -> None:
    """The options `resume` takes too (its other runtime options are the run's own, recorded)."""
    if a.num_cpus is not None and a.num_cpus < 1:
        raise UserError("--num-cpus must be >= 1")
    if a.stall_timeout is not None and a.stall_timeout < 0:
        raise UserError(f"--stall-timeout must be >= 0 (0: off), got {a.stall_timeout:g}")


def check_name(name: str) -> str:
    """A run's name: one folder under --storage (gansweep slurm applies the same rule)."""
    if "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: a plain name, without '/' or a leading '.'")
    return name


def run(a) -> int:
    from sweep.runner.cluster import Runtime
    from sweep.runner.engine import run_sweep
    from sweep.runner.trackers import check_tracker

    config_file, preset = preset_of(a)
    check_runtime(a)
    pack = pack_size_of(a, len(preset.trials), "cuda" if a.gpus_per_trial > 0 else "cpu")
    name = check_name(a.name or f"{preset.name}-{datetime.now():%Y%m%d-%H%M%S}")
    rt = Runtime(cpus_per_trial=a.cpus_per_trial, gpus_per_trial=a.gpus_per_trial,
                 max_concurrent=a.max_concurrent, max_failures=a.max_failures, address=a.address,
                 num_cpus=a.num_cpus, data_root=a.data_root, pack=pack, keep_weights=a.keep_weights,
                 trackers=tuple(dict.fromkeys(a.tracker)), stall_timeout=a.stall_timeout)
    for tracker in rt.trackers:
        check_tracker(tracker)  # installed? before anything starts
    run_sweep(preset, config_file, Storage.parse(a.storage), name, rt, shared_storage=a.shared_storage,
              download=a.download, disk_check=a.disk_check)
    return 0
