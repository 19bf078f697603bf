"""Errors that reach the user as one line and exit status 2 (see sweep/cli.py)."""


class UserError(Exception):
    """Bad input from the user: the message is the whole story, no traceback."""
