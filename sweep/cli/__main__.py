"""python -m sweep.cli: the `gansweep` command."""
import sys

from sweep.cli import main

sys.exit(main())
