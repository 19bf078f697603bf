"""The names of a run directory's files and folders: the one home of its layout (RunDir builds its paths
from these; the store, the lock, the lease, Slurm and the report read them here).

RUN_DIR holds:
    gansweep.json      the manifest: preset, overrides, sample, runtime options, versions, the
                       defaults of its settings, sessions (the one file that cannot be rebuilt)
    .gansweep.lock     held by the one `run` / `resume` writing the run (sweep/runner/lock.py)
    .gansweep.lease    in object storage only: the one driver writing a bucket's run (sweep/record/lease.py)
    sweep.yaml         the sweep file as it was when the run started (its plan is rebuilt from it)
    results.parquet    one row per grid point (and .csv); curves.parquet, one per scored epoch
    samples/           the last evaluated samples of every finished point (64 x 32 x 32 uint8)
    weights/           with --keep-weights, every ok point's final G weights (a state_dict)
    tune/              Ray Tune's experiment (on a cluster, under --storage instead)
    report/            `gansweep report`'s page and figures
    slurm/             with `gansweep slurm`: the batch script and each job's output
"""
MANIFEST = "gansweep.json"
LOCK = ".gansweep.lock"
LEASE = ".gansweep.lease"
SWEEP_FILE = "sweep.yaml"
RESULTS, RESULTS_CSV = "results.parquet", "results.csv"
CURVES, CURVES_CSV = "curves.parquet", "curves.csv"
SAMPLES_DIR, WEIGHTS_DIR = "samples", "weights"  # RUN_DIR/<dir>/<point_id>.npy / .pt
TUNE_DIR, REPORT_DIR, SLURM_DIR = "tune", "report", "slurm"  # Tune's experiment, `report`'s, `slurm`'s

# what stays on the machine that runs: the lock guards this machine's copy, the lease the bucket's run,
# and Tune writes its own experiment (sweep/record/store.py mirrors the rest)
LOCAL_ONLY = (LOCK, LEASE, TUNE_DIR)
# upload order: a table or manifest never names a file that is not uploaded yet
UPLOAD_ORDER = (f"{SAMPLES_DIR}/", f"{WEIGHTS_DIR}/", CURVES.split(".")[0] + ".", RESULTS.split(".")[0] + ".",
                MANIFEST)
