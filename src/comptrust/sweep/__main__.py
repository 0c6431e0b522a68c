"""``python -m comptrust.sweep PLAN.toml``: the same as the ``sweep`` command."""

import sys

from comptrust.sweep.cli import main

sys.exit(main())
