"""gansweep's sweep side: trial configs, the one trial loop, the Ray Tune engine, the CLI."""
try:
    from importlib.metadata import version as _version

    __version__ = _version("gansweep")
except Exception:  # running from a source tree that was never installed
    __version__ = "0.1.0"
