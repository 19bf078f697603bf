"""`gansweep bench`: the harness against the machine and a plain loop; `--scale`: Tune at paper scale."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sweep.cli.common import add_config_arg, add_data_args, sweep_file_of

WHAT = "measure the harness against the machine and a plain loop (or Tune at paper scale)"
EXAMPLES = ["gansweep bench --out bench.json", "gansweep bench --device cuda --out bench-cuda.json",
            "gansweep bench --scale --pack 14"]
log = logging.getLogger("gansweep.bench")


def add_arguments(p) -> None:
    p.add_argument("--out", default="bench.json", help="where to write the results as JSON (default: bench.json)")
    p.add_argument("--device", default="cpu",
                   help="cpu: the harness against the machine and a plain loop (about 6 minutes on 2 cores); "
                        "cuda or cuda:N: throughput and MFU, concurrency and packs on that GPU, TF32 off and on "
                        "(about 3 minutes on one H100) (default: cpu)")
    p.add_argument("--scale", action="store_true",
                   help="instead: the whole paper plan through the engine with the work cut to nothing "
                        "(about 10 minutes on 2 cores)")
    p.add_argument("--pack", default="14", help="with --scale: points per Tune trial (default: 14, what --pack "
                                                "auto picks for the paper preset on a GPU)")
    p.add_argument("--work", default=None, help="with --scale: folder for its runs (default: a temporary one)")
    add_config_arg(p)
    add_data_args(p)


def run(a) -> int:
    from sweep.plan.grid import load_preset
    from sweep.measure.bench import format_table, run_bench
    from sweep.train.data import load_mnist

    if a.scale:
        return scale(a)
    from sweep.cli.common import device_of

    a.device = device_of(a.device)  # auto -> what is here; cuda where there is none: one line, exit 2
    if a.device != "cpu":
        return on_device(a)
    config = sweep_file_of(a)
    load_preset(config, "mini")  # the sweep file must hold a valid mini preset
    load_mnist(a.data_root, a.download)  # fail (or download) now, not after minutes of benchmarking
    res = run_bench(config, a.data_root, Path(a.out), log=lambda m: log.info("bench: %s", m))
    print(format_table(res))
    log.info("bench: wrote %s", a.out)
    store_cost_model(res["cost_model"], "cpu")
    return 0


def store_cost_model(model: dict, device_type: str) -> None:
    """Where `gansweep plan` finds it: this machine's model for `device_type` (sweep/plan/cost.py)."""
    import json

    from sweep.plan.cost import cost_file
    from sweep.record.results import write_atomic

    path = cost_file(device_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: Path(p).write_text(json.dumps(model, indent=2)))
    log.info("bench: the cost model `gansweep plan` reads is in %s", path)


def on_device(a) -> int:
    import json

    from sweep.record.results import write_atomic
    from sweep.measure.devbench import BUDGETS, format_device_table, run_device_bench
    from sweep.train.data import load_mnist

    load_mnist(a.data_root, a.download)
    res = run_device_bench(a.device, a.data_root, BUDGETS["gpu"], log=lambda m: log.info("bench: %s", m))
    write_atomic(Path(a.out), lambda p: Path(p).write_text(json.dumps(res, indent=2)))
    print(format_device_table(res))
    log.info("bench: wrote %s", a.out)
    return 0


def scale(a) -> int:
    from sweep.plan.grid import load_preset
    from sweep.plan.packs import parse_pack
    from sweep.measure.scale import format_scale, run_scale, write_json
    from sweep.train.data import load_mnist

    config = sweep_file_of(a)
    load_preset(config, "paper")  # the sweep file must hold a valid paper preset
    parse_pack(a.pack)
    load_mnist(a.data_root, a.download)
    with tempfile.TemporaryDirectory(prefix="gansweep-scale-") as tmp:
        res = run_scale(config, Path(a.work or tmp), a.pack, a.data_root,
                        lambda m: log.info("bench --scale: %s", m))
    write_json(res, Path(a.out))
    print(format_scale(res))
    log.info("bench --scale: wrote %s", a.out)
    return 0
