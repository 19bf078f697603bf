"""Registries of GAN families and architectures, and the plugins that add to them.

A family (models/losses.py) or an architecture (models/archs.py) is one entry; every
list of names (the config's choices, the report's order, labels and colours, the FLOP
count's discriminator kind, the paper rules) is read from the entries, so adding one is
one file and one call:

    # lsgan.py, anywhere
    from models.losses import Family, register_family
    register_family(Family("lsgan", "logit", d_loss, g_loss, "Least-squares GAN", label="LSGAN"))

    gansweep plan --plugin lsgan.py --config my.yaml --preset lsgan

Plugins are found, once per process, on first use of a registry:
  * installed packages that declare an entry point in the group `gansweep.families`
    (loading the entry point's module registers its families or archs);
  * the files or modules named in $GANSWEEP_PLUGINS (os.pathsep-separated), which
    `--plugin FILE` sets; a run records them in its manifest, and its Ray workers
    load them too, so resume and the workers see the same registry as the driver.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path

ENTRY_POINT_GROUP = "gansweep.families"
PLUGINS_ENV = "GANSWEEP_PLUGINS"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")  # a model is "family-arch", so no "-" in a name


class PluginError(Exception):
    """A plugin that cannot be found, imported or registered (one line for the user)."""


class Registry(Mapping):
    """name -> entry, in registration order; loads the plugins before the first lookup."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict = {}

    def register(self, entry, replace: bool = False):
        name = entry.name
        if not NAME_RE.match(name):
            raise PluginError(f"{self.kind} name {name!r}: lower-case letters, digits and '_', starting with a letter")
        if name in self._items and not replace and self._items[name] != entry:
            raise PluginError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
        self._items[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def __getitem__(self, name):
        load_plugins()
        return self._items[name]

    def __iter__(self):
        load_plugins()
        return iter(dict(self._items))

    def __len__(self):
        load_plugins()
        return len(self._items)

    def get_or_raise(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}") from None


_loaded: list[str] = []  # the plugin sources loaded in this process, in order
_entry_points_done = False
_env_loaded: tuple[str, int] | None = None  # ($GANSWEEP_PLUGINS, len(_loaded)) once its sources were loaded


def plugin_sources() -> list[str]:
    """The plugin files and modules loaded here (what a run records and its workers load)."""
    load_plugins()
    return list(_loaded)


def load_plugins(sources: list[str] | None = None) -> None:
    """Load the installed entry points (once), then every source in `sources` and in
    $GANSWEEP_PLUGINS not loaded yet. A source is a .py file or an importable module."""
    global _entry_points_done, _env_loaded
    if not _entry_points_done:
        _entry_points_done = True  # first, so a plugin that looks a family up does not recurse
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as e:
                raise PluginError(f"plugin {ep.name} ({ep.value}): {type(e).__name__}: {e}") from None
    raw = os.environ.get(PLUGINS_ENV, "")
    if not sources and (raw, len(_loaded)) == _env_loaded:  # every lookup calls this: 136,000 calls
        return  # to plan 7,168 points
    env = [s for s in raw.split(os.pathsep) if s]
    for source in [*(sources or []), *env]:
        _load_one(source)
    _env_loaded = (raw, len(_loaded))


def _key(source: str) -> str:
    """How a plugin source is recorded: a file by its absolute path, a module by its name."""
    return str(Path(source).resolve()) if source.endswith(".py") else source


def _load_one(source: str) -> None:
    key = _key(source)
    if key in _loaded:
        return
    _loaded.append(key)  # before running it: a plugin's own lookups must not load it again
    try:
        if source.endswith(".py"):
            path = Path(key)
            if not path.is_file():
                raise PluginError(f"plugin {source}: no such file")
            spec = importlib.util.spec_from_file_location(f"gansweep_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            importlib.import_module(source)
    except PluginError:
        _loaded.remove(key)
        raise
    except Exception as e:
        _loaded.remove(key)
        raise PluginError(f"plugin {source}: {type(e).__name__}: {e}") from None


def add_plugin_sources(sources: list[str]) -> None:
    """Make `sources` part of $GANSWEEP_PLUGINS (so local Ray workers inherit them) and load them."""
    keys = [_key(s) for s in sources]
    env = [s for s in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if s]
    os.environ[PLUGINS_ENV] = os.pathsep.join(dict.fromkeys(env + keys))
    load_plugins()
