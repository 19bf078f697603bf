"""Shared fixtures: the real MNIST (../shared/mnist or $GANSWEEP_DATA) and the committed scorer."""
from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that wait for work sleep instead of spinning, in this process and every process it
# starts (set before torch loads libgomp, which reads it once). The suite runs three workers of two
# threads, Ray and subprocesses on two cores: spinning threads take the cores from the ones with
# work. Three processes training a pack at 2 threads each took 15-24 s spinning, 2.5-4.1 s passive
# (1.4 s vs 2.0 s alone on an idle machine). Values are the same either way: it is only how idle
# threads wait.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ray starts its workers at nice 15 (its worker_niceness), below every test process at nice 0: on two
# busy cores the Ray tests' trials, the suite's longest chains, then waited for the tests without Ray.
# The lost-node test took 209 s beside three busy loops (its trial workers took 3 minutes to start), 86 s
# with workers at nice 0, and 39 s alone. Scheduling priority changes no value a test checks.
os.environ.setdefault("RAY_worker_niceness", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def mnist_root() -> Path:
    env = os.environ.get("GANSWEEP_DATA")
    # Absolute: tests start gansweep in temporary folders with GANSWEEP_DATA set to this,
    # and the README's `export GANSWEEP_DATA=../shared/mnist` is relative to the checkout.
    root = (Path(env).expanduser() if env else REPO.parent / "shared" / "mnist").resolve()
    if not (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        pytest.exit(f"tests need MNIST: {root}/MNIST/raw not found (set GANSWEEP_DATA)", returncode=2)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    return mnist_root()


@pytest.fixture(scope="session")
def mnist(data_root):
    from sweep.train.data import load_mnist

    return load_mnist(data_root)


@pytest.fixture(scope="session")
def scorer(mnist):
    from sweep.train.scoring import build_scorer

    return build_scorer(mnist.test_images)[0]


# torch's intra-op threads for every test: 2 (this machine's cores), or OMP_NUM_THREADS when set, as
# Ray workers, Slurm and many clusters set it (.ci/run runs the equivalence tests again with 1).
THREADS = int(os.environ.get("OMP_NUM_THREADS") or 2)


# The Ray tests' modules in queues of about equal time (measured in a full run of the README's
# command, under the others' load): a module not named here joins the first. ray-1 and ray-2 start
# at once on two workers; TAIL_QUEUES go after every module without Ray, so the third worker takes
# them once those are done (before, it idled for the last 3 minutes at 10-25% idle CPU).
# Measured 2026-11-27: engine 195 s, packs 97, storage 62, trackers 36, run_dir 70 (460);
# reliability 305, slurm 129 (434); device_check 88, plugins 28 after 340 s of the rest (456). Later
# that day, on a VM then ~45% slower (`import torch` 2.75 -> 4.0 CPU-s): 695, 775 and 661 s (151 after
# 510), with the Ray tests' work cut by the changes of docs/performance.md "The test suite". That
# evening, with a leaner Ray instance and trial workers at nice 0 (above): 583, 604 and 142 s. That
# night 582, 582 and 124 s after 487 s of the rest (docs/performance.md "Cuts of 2026-11-27, night").
RAY_QUEUES = {"ray-1": ("test_engine", "test_packs", "test_storage", "test_trackers", "test_run_dir"),
              "ray-2": ("test_reliability", "test_slurm"),
              "ray-3": ("test_device_check", "test_plugins", "test_kept_files")}
TAIL_QUEUES = ("ray-3",)


def ray_queue(module: str) -> str:
    return next((q for q, mods in RAY_QUEUES.items() if module in mods), "ray-1")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Queues for `pytest -n 3 --dist loadgroup` (the README's test command): the tests that start
    Ray in two queues, which start at once on two workers (see pytest_configure), and a tail queue
    (RAY_QUEUES above); the other tests by module, so a module's fixtures are built once, on the
    third worker or whichever is free next. In one queue, with the Slurm and S3 tests,
    pytest took 19 min; in two queues on two workers 17 min 39 s; on three, 14 min 34 s, and
    11 min 58 s once the commands without Ray ran in-process and OpenMP stopped spinning, 7 min 00 s
    once each `gansweep run` cost less CPU (README.md) and the Ray tests trained less (the cores are
    busy throughout: vmstat about 0% idle until the last minute); a day later the same VM took
    9 min 25 s for that code and 9 min 16 s for 428 tests with the driver cuts of sweep/runner/
    (its speed moves by 25% and more between days); on 2026-11-27 again 9 min 43 s (428), then 8 min 54 s
    and 7 min 58 s (436, two fresh clones of nearly the same code) with the third queue, a `resume` of a finished run without Ray and cheaper trials. Without xdist
    the marks do nothing.
    tests/test_layout.py checks that xdist keeps the groups."""
    def group(item) -> str:
        return ray_queue(item.module.__name__) if item.get_closest_marker("ray") else item.module.__name__

    first = [q for q in RAY_QUEUES if q not in TAIL_QUEUES]

    def rank(item) -> int:  # the first queues, then every module without Ray, then the tail queues
        g = group(item)
        return first.index(g) if g in first else len(first) + 1 if g in TAIL_QUEUES else len(first)

    items.sort(key=rank)  # stable
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))


def pytest_configure(config):
    # xdist hands out groups largest first by test count, which put the Ray queues (fewer tests, but
    # the longest in time) after other modules; in collection order they go first, one per worker.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
