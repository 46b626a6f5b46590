"""``python -m normpos.frontier``: see :mod:`normpos.frontier.cli`."""

import sys

from .cli import main

sys.exit(main())
