"""chute's benchmark harness (``nox -s bench``, or ``python -m benchmarks``); see
docs/performance.md for what it measures and the latest figures."""
