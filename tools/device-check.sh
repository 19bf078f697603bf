#!/usr/bin/env bash
# The device check (sweep/measure/device_check.py): on a machine with a GPU, every step that a GPU
# changes, measured in one call of at most 8 minutes, and one summary table; figures in --out.
#
#   tools/device-check.sh                         # --device cuda, --out device-check.json
#   tools/device-check.sh --device cpu            # the dry run on CPU, tiny budgets (a test runs it)
#
# Python: the project's virtualenv (.venv, README's install) where there is one; else the machine's
# python3 with this checkout on PYTHONPATH, as on a GPU image that has torch and no internet:
# nothing is installed either way. MNIST: --data-root or $GANSWEEP_DATA.
# Exit status: 0 every step ran, 1 a step failed, 2 no such device or bad input.
set -uo pipefail
cd "$(dirname "$0")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KINETO_LOG_LEVEL="${KINETO_LOG_LEVEL:-5}"
exec "$py" -m sweep.measure.device_check "$@"
