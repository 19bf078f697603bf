"""`gansweep init [FILE]`: an editable copy of the shipped sweep file, pointed at the installed schema."""
from __future__ import annotations

import re
from pathlib import Path

from sweep.cli.common import log
from sweep.errors import UserError

WHAT = "write an editable copy of the shipped sweep file"
EXAMPLES = ["gansweep init                 # ./sweep.yaml", "gansweep init studies/lsgan.yaml"]


def add_arguments(p) -> None:
    p.add_argument("file", nargs="?", default="sweep.yaml", help="where to write it (default: ./sweep.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(a) -> int:
    from sweep.plan.grid import PACKAGED_SWEEP, SCHEMA_FILE
    from sweep.record.results import write_atomic

    out = Path(a.file)
    if out.exists() and not a.force:
        raise UserError(f"init: {out} exists; pass --force to overwrite it, or name another file")
    if out.is_dir() or not out.parent.is_dir():
        raise UserError(f"init: {out}: not a file in an existing folder")
    # The header's schema line points at the installed schema, so editors validate this copy too.
    text = re.sub(r"^# yaml-language-server: \$schema=.*$", f"# yaml-language-server: $schema={SCHEMA_FILE.resolve()}",
                  PACKAGED_SWEEP.read_text(), count=1, flags=re.M)
    write_atomic(out, lambda p: Path(p).write_text(text))
    here = out.resolve() == Path("sweep.yaml").resolve()
    log.info("wrote %s: edit it; %s", out, "plan and run read it from this folder" if here else
             f"pass --config {out} to plan and run")
    return 0
