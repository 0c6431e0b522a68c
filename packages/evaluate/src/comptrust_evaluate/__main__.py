"""``python -m comptrust_evaluate`` is the ``evaluate`` command."""

import sys

from comptrust_evaluate.cli import main

sys.exit(main())
