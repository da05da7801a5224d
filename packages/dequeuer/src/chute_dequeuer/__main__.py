"""``python -m chute_dequeuer``: the same as the ``chute-dequeuer`` command."""

import sys

from chute_dequeuer.cli import main

sys.exit(main())
