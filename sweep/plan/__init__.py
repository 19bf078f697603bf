"""Planning a sweep, before anything runs: a trial's config (config.py), the sweep file and its
presets (grid.py, its JSON Schema from yaml_schema.py), stratified samples (subset.py), packs of
points per Tune trial (packs.py) and the disk a run will use (disk.py)."""
