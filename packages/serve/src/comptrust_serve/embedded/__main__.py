"""``python -m comptrust_serve.embedded --model DIR --host 127.0.0.1 --port N``."""

import sys

from comptrust_serve.embedded.server import main

sys.exit(main())
