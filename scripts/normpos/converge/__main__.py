"""``python -m normpos.converge``: see :mod:`normpos.converge.cli`."""

import sys

from .cli import main

sys.exit(main())
