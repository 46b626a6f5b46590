"""``python -m normpos.gpu_proof``: see the package docstring."""

import sys

from normpos.gpu_proof.cli import main

sys.exit(main())
