"""`gansweep plan`: what a preset would run (points per model, FLOPs, time, Tune trials, disk); runs nothing."""
from __future__ import annotations

from sweep.cli.common import (add_config_arg, add_cost_args, add_pack_args, add_preset_args, cost_model_of, pack_size_of,
                              preset_of)

WHAT = "trial counts per model, FLOPs, estimated time and disk use of a preset (runs nothing)"
EXAMPLES = ["gansweep plan --preset paper", "gansweep plan --preset mini --set epochs=4 --seeds 0,1",
            "gansweep plan --preset paper --sample 100"]


def add_arguments(p) -> None:
    add_preset_args(p)
    add_pack_args(p)
    add_cost_args(p)
    add_config_arg(p)


def run(a) -> int:
    import torch

    from sweep.plan.disk import estimate_disk, fmt_bytes
    from sweep.plan.grid import flops_by_model, source_name
    from sweep.plan.packs import make_packs

    path, preset = preset_of(a)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # what --pack auto picks on this machine
    cost = cost_model_of(a, device)
    packs = make_packs(preset.trials, pack_size_of(a, len(preset.trials), device))
    flops = flops_by_model(preset.trials)
    total = sum(flops.values())
    print(f"preset {preset.name} of {source_name(path)}: {preset.description}")
    overridden = preset.overrides.describe()
    print(f"points: {preset.scope}" + (f"; overridden: {overridden}" if overridden else ""))
    print(f"{'model':<15} {'trials':>7} {'TFLOP':>10}")
    for model, n in preset.counts().items():
        print(f"{model:<15} {n:>7} {flops[model] / 1e12:>10.1f}")
    print(f"{'total':<15} {len(preset.trials):>7} {total / 1e12:>10.1f}")
    print(f"estimated cost: {cost.slot_hours(preset.trials):.1f} slot-hours ({cost.source}; settings: "
          f"{', '.join(f'{k} {v}' for k, v in preset.settings.items()) or 'the defaults'})")
    cells = figure3_line(preset)
    if cells:
        print(cells)
    biggest = max(len(p.points) for p in packs)
    print(f"Tune trials: {len(packs)} (--pack {a.pack}{' on ' + device if a.pack == 'auto' else ''}: packs of up to "
          f"{biggest} point{'s' if biggest > 1 else ''})")
    disk = estimate_disk(packs, a.keep_weights)
    print(f"disk: peak {fmt_bytes(disk['peak'])} while {disk['slots']} trials run at once (their checkpoints: "
          f"weights and optimizer state), final {fmt_bytes(disk['final'])} ({fmt_bytes(disk['final_per_point'])} "
          f"a point: samples, tables, Tune's logs{', G weights' if a.keep_weights else ''})")
    return 0



def figure3_line(preset) -> str:
    """"GAN points in Figure 3's 12 (optimD, optimG, lr) cells: 12 of 12 have one or more (1 each)"
    for a grid whose GANs span several cells (a sample covers them: sweep/plan/subset.py); else ""."""
    from collections import Counter

    from sweep.plan.subset import COVERED_FAMILY, figure3_cell

    per_cell = Counter(figure3_cell(t) for t in preset.trials if t.family == COVERED_FAMILY)
    if preset.gan_cells < 2:
        return ""
    lo, hi = (min(per_cell.values()), max(per_cell.values())) if len(per_cell) == preset.gan_cells else (0, 0)
    each = f"{lo} each" if lo == hi else f"{lo} to {hi} each"
    return (f"GAN points in Figure 3's {preset.gan_cells} (optimD, optimG, lr) cells: {len(per_cell)} of "
            f"{preset.gan_cells} have one or more" + (f" ({each})" if lo else ""))
