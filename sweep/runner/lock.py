"""One writer per run directory: `run` and `resume` hold RUN_DIR/.gansweep.lock for their whole life.

The lock is an OS file lock (flock) on an open file: the kernel releases it when the
holder's process ends in any way, SIGKILL included, so a dead driver never leaves a stale
lock behind. The file also names its holder (pid, host, start time) for the error line.
`status` and `report` never take it: the tables are only ever replaced atomically, so a
reader always sees a whole table.

On shared storage: Linux emulates flock with NFS byte-range locks (NFSv4, or v3 with
lockd), so two drivers on different hosts exclude each other when the server supports
locking; on a filesystem without lock support (some FUSE mounts) the lock is only
local to one host. Start a run's drivers from one machine.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from sweep.errors import UserError
from sweep.record.layout import LOCK


class RunLock:
    def __init__(self, run_dir: Path, command: str):
        self.path = Path(run_dir) / LOCK
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        # O_CLOEXEC (Python's default): Ray's processes must not inherit, and so keep, the lock
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"{self.path.parent} is in use by {holder(self.path)}: wait for it to end "
                            "(`gansweep status` reads the run meanwhile), or stop it first") from None
        except OSError as e:  # no lock support on this filesystem: say so, go on
            logging.getLogger("gansweep").warning("cannot lock %s (%s); make sure no other gansweep writes "
                                                  "this run", self.path, e.strerror)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (it may be taken again at once)
            self.fd = None
        return False


def holder(path: Path) -> str:
    """`gansweep resume (pid 123 on host, since ...)` from a lock file, as best it can."""
    try:
        h = json.loads(Path(path).read_text())
        return f"`gansweep {h['command']}` (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another gansweep process"
