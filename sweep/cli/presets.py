"""`gansweep presets`: every preset of the sweep file, with its trial count and estimated cost."""
from __future__ import annotations

import shutil
import textwrap

from sweep.cli.common import add_config_arg, add_cost_args, cost_model_of, sweep_file_of

WHAT = "list the sweep file's presets: description, trials, estimated cost"
EXAMPLES = ["gansweep presets", "gansweep presets --config my.yaml"]


def add_arguments(p) -> None:
    add_config_arg(p)
    add_cost_args(p)


def run(a) -> int:
    import torch

    from sweep.plan.grid import load_file, load_preset, source_name

    path = sweep_file_of(a)
    names = list(load_file(path)["presets"])
    cost = cost_model_of(a, "cuda" if torch.cuda.is_available() else "cpu")
    print(f"presets of {source_name(path)}\n(cost: slot-hours, {cost.source}; "
          "`gansweep plan --preset NAME` for the details):")
    rows = []
    for name in names:
        p = load_preset(path, name)
        hours = cost.slot_hours(p.trials)
        rows.append((name, f"{len(p.trials):,}", f"{hours:,.1f}", p.description))
    w = [max(len(r[i]) for r in rows + [("preset", "trials", "slot-h", "")]) for i in range(3)]
    indent = " " * (2 + w[0] + 2 + w[1] + 2 + w[2] + 2)
    width = max(shutil.get_terminal_size((100, 24)).columns, len(indent) + 40)
    print(f"  {'preset':<{w[0]}}  {'trials':>{w[1]}}  {'slot-h':>{w[2]}}  description")
    for r in rows:
        head = f"  {r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  "
        print(textwrap.fill(r[3] or "-", width, initial_indent=head, subsequent_indent=indent))
    return 0
