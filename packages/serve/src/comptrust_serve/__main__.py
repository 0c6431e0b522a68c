"""``python -m comptrust_serve``: the same as the ``serve`` command."""

import sys

from comptrust_serve.cli import main

sys.exit(main())
