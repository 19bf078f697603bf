"""Stopping a sweep on a signal, the same way for the three that stop jobs:

    SIGINT   Ctrl-C in the terminal                 exit 130
    SIGTERM  `kill`, Slurm's scancel, Kubernetes    exit 143
    SIGHUP   the terminal or SSH session went away  exit 129

The first signal only records itself; Tune's loop (sweep/runner/callback.py) then asks
Tune to stop through Tune's own stop path (its SIGUSR1 handler): Tune saves its
experiment state and stops the running trials, whose last checkpoints stay for
`gansweep resume`. The ledger writes the tables one last time, with every point
that did not finish `pending`, and `gansweep` exits with the resume line. A
second signal forces: it exits at once (tables are only ever replaced
atomically, so they hold the last flush, which is consistent).

A full disk stops a sweep the same way (`STOP.fault`): the engine and the callback call it
when a write fails with ENOSPC, and gansweep exits with EXIT_DISK_FULL (sweep/errors.py).

Signal dispositions belong to the process, so the request is one process-wide
object, STOP.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal

from sweep.errors import EXIT_DISK_FULL, EXIT_STORAGE
from sweep.plan.disk import fmt_bytes

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self.fault_name, self.fault_status = "", 0  # a stop for another cause than a signal
        self._forwarded = False
        self._previous: dict = {}

    def install(self) -> None:
        """Handle SIGNALS from now on (main thread only, as Python requires).

        Call again after `ray.init`: Ray replaces the driver's SIGTERM handler with its
        own (a sys.exit, then a native handler that logs a stack). A repeated call keeps
        a signal already received and the handlers `restore` puts back.
        """
        if not self._previous:
            self.signum, self._forwarded = None, False
            self.fault_name, self.fault_status = "", 0
        for s in SIGNALS:
            old = signal.signal(s, self._handle)
            self._previous.setdefault(s, old)

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def record(self, signum: int) -> None:
        """A signal that reached another handler first (Ray's, during ray.init): the first one wins."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.record(signum)  # acted on by forward_to_tune / the engine, never here
            return
        os.write(2, f"gansweep: {signal.Signals(signum).name} again: stopped at once; the tables hold "
                    "their last update and `gansweep resume RUN_DIR` continues\n".encode())
        _kill_descendants()  # a local Ray instance's agents outlive a driver that just exits
        os._exit(128 + signum)

    @property
    def active(self) -> bool:
        """Installed (between install and restore)."""
        return bool(self._previous)

    def fault(self, name: str, exit_status: int) -> None:
        """Stop the sweep as a signal would, for another cause (the first cause wins)."""
        if self.signum is None and not self.fault_name:
            self.fault_name, self.fault_status = name, exit_status

    @property
    def requested(self) -> bool:
        return self.signum is not None or bool(self.fault_name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else self.fault_name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum if self.signum else self.fault_status

    def forward_to_tune(self) -> None:
        """Ask a running Tune loop to stop, once (call from the loop, on the main thread).

        tune.run installs a SIGUSR1 handler that sets its `experiment interrupted` event;
        calling it directly is Tune's graceful stop without a second, asynchronous signal.
        """
        if not self.requested or self._forwarded:
            return
        handler = signal.getsignal(signal.SIGUSR1)
        if callable(handler):
            self._forwarded = True
            handler(signal.SIGUSR1, None)


def is_disk_full(error: BaseException | str) -> bool:
    """Whether an error (or its message, e.g. a trial's error file) says the disk is full (ENOSPC)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(error) or "[Errno 28]" in str(error)


def stop_for_full_disk(path: str | os.PathLike) -> None:
    """Stop the sweep as a signal would: the disk that holds `path` is full."""
    try:
        free = f"{fmt_bytes(shutil.disk_usage(path).free)} free"
    except OSError:
        free = "free space unknown"
    STOP.fault(f"disk full ({path}: {free})", EXIT_DISK_FULL)


def stop_for_storage(uri: str, reason: str) -> None:
    """Stop the sweep as a signal would: its object storage cannot be reached or refuses (the endpoint
    down, the bucket gone, the credentials refused; sweep/record/store.py store_fault)."""
    STOP.fault(f"storage unreachable ({uri}: {reason})", EXIT_STORAGE)


def stop_for_lost_lease(holder: str) -> None:
    """Stop the sweep as a signal would: the run's lease in object storage was taken over (this driver
    stalled past it, say), so it writes nothing more there (sweep/record/lease.py)."""
    STOP.fault(f"lease lost (the run is now written by {holder})", EXIT_STORAGE)


def _kill_descendants() -> None:
    """SIGKILL every process below this one (Linux /proc; elsewhere nothing)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    todo, found = [os.getpid()], []
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


STOP = StopRequest()
