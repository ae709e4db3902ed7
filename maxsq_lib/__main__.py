"""``python -m maxsq_lib`` = the ``maxsq`` command (works under ``torchrun -m``)."""

import sys

from .cli import main

sys.exit(main())
