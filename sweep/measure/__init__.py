"""Measuring gansweep, not running a sweep: `gansweep bench` (bench.py: the engine's harness and pack
sizes on CPU; devbench.py: a device's rates; scale.py: the engine on the whole paper plan) and the
device check (device_check.py, tools/device-check.sh). Above sweep/runner in the layers: it may time
anything below it, and nothing that runs a sweep imports it."""
