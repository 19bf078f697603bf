"""Errors that end a command with one line on stderr and no traceback (see sweep/cli/__init__.py)."""

EXIT_DISK_FULL = 75  # a sweep stopped because a disk filled up (sysexits' EX_TEMPFAIL: free space, resume)
EXIT_STORAGE = 69  # a sweep stopped because its object storage could not be reached (EX_UNAVAILABLE: resume)
EXIT_IDLE = 70  # a sweep stopped because no trial could start for IDLE_S (sweep/runner/stalls.py; resume)


class UserError(Exception):
    """Bad input from the user: the message is the whole story; exit status 2."""


class Interrupted(Exception):
    """A sweep stopped by a signal (or a full disk) after saving what it had: the message says how
    far it got and how to continue; exit status 128 + the signal's number, as a shell reports it
    (a full disk: EXIT_DISK_FULL)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status
