"""Kept for ``python benchmarks/bench.py``: the harness is the ``benchmarks`` package now
(``python -m benchmarks``, or ``nox -s bench``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
