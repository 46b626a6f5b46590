"""``python -m normpos.theory``: see :mod:`normpos.theory.cli`."""

import os
import sys

# torch's OpenMP threads spin while they wait for each other; on a shared 2-core machine a busy neighbour
# (another training job) then makes every step 5-10 times slower (measured here: 1.5 s vs 7-19 s for the
# same small-model step). Passive waiting costs little when the machine is idle. It only takes effect if
# set before torch is loaded, hence here, before the CLI imports anything.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# and the same floats on any AVX2 host (normpos.numerics; NORMPOS_NUMERICS=native to let torch choose)
from normpos import numerics  # noqa: E402

numerics.pin_process()

from .cli import main  # noqa: E402

sys.exit(main())
