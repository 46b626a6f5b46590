"""``python -m normpos.theory``: see :mod:`normpos.theory.cli`."""

import sys

# The same floats on any AVX2 host (normpos.numerics; NORMPOS_NUMERICS=native to let torch choose), and
# OpenMP threads that wait passively (a busy neighbour would make every step 5-10 times slower). Both only take
# effect if set before torch is loaded, hence here, before the CLI imports anything.
from normpos import numerics

numerics.pin_process()

from .cli import main  # noqa: E402

sys.exit(main())
