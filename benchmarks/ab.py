"""Redis's cost per request of two or more checkouts, measured alternately, round by round.

A single run's Redis µs per request moves by 10-20 % with the machine's state (the batch sizes
follow the timing of the processes), so comparing two runs made minutes apart says little.
This runs the bench in each checkout in turn, ``--rounds`` times over, and reports each
round's figures, the pooled medians and the median of the rounds' ratios against the first
checkout (docs/performance.md, fifth and sixth rounds of issue 12):

    git worktree add ../before f4f3610 && (cd ../before && uv sync --all-packages --all-groups)
    python -m benchmarks.ab ../before . --rounds 5

Each checkout runs its own bench with its own virtualenv (``<checkout>/.venv``), one round of
``--scenarios`` on chute-redis (gateway on uvicorn), and the figures are read from the
"Redis's cost per request" table every version of the bench prints.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: A row of the "Redis's cost per request" table: scenario, system, req/s, µs, commands.
ROW = re.compile(r"^\| (flood|fleet) \| chute-redis \| (\d+) \| (\d+) \| ([\d.]+) \|", re.M)


def one_run(checkout: Path, scenarios: str, extra: Sequence[str] = ()) -> dict[str, int]:
    """Redis µs per request by scenario, from one round of the bench in ``checkout``
    (``extra``: more arguments for it, as ``--concurrency 64``)."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{checkout}: no .venv (run `uv sync --all-packages --all-groups` there)")
    args = [str(python), "-m", "benchmarks", "--scenarios", scenarios, "--backends", "redis"]
    args += ["--servers", "uvicorn", "--no-celery", "--no-floor", "--rounds", "1", *extra]
    out = subprocess.run(args, cwd=checkout, capture_output=True, text=True, check=False)
    found = {m.group(1): int(m.group(3)) for m in ROW.finditer(out.stdout)}
    if not found:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
        print(
            f"  {checkout}: no figures (exit {out.returncode}); left out\n{tail}", file=sys.stderr
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="the first is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenarios", default="flood,fleet")
    parser.add_argument(
        "--bench-args",
        default="",
        help="more arguments for every checkout's bench, as one string ('--concurrency 64')",
    )
    args = parser.parse_args()
    trees: list[Path] = [c.resolve() for c in args.checkouts]
    scenarios = [s for s in args.scenarios.split(",") if s]
    # runs[round][tree] = {scenario: µs}
    runs: list[list[dict[str, int]]] = []
    for n in range(args.rounds):
        runs.append([])
        for tree in trees:
            got = one_run(tree, args.scenarios, args.bench_args.split())
            runs[-1].append(got)
            figures = ", ".join(f"{s} {got.get(s, '-')} µs" for s in scenarios)
            print(f"round {n + 1} {tree}: {figures}", flush=True)
    base = trees[0]
    for scenario in scenarios:
        print(f"\n{scenario}: Redis µs per request (pooled median) and against {base.name}")
        base_values = [r[0][scenario] for r in runs if scenario in r[0]]
        for i, tree in enumerate(trees):
            values = [r[i][scenario] for r in runs if scenario in r[i]]
            if not values:
                continue
            line = f"  {tree}: {statistics.median(values)} µs (rounds {values})"
            if i > 0 and base_values:
                pairs = [
                    r[0][scenario] / r[i][scenario]
                    for r in runs
                    if scenario in r[0] and scenario in r[i]
                ]
                pooled = statistics.median(base_values) / statistics.median(values)
                line += f"; {pooled:.2f}x pooled, {statistics.median(pairs):.2f}x median round"
                line += f" ({min(pairs):.2f}-{max(pairs):.2f})"
            print(line)


if __name__ == "__main__":
    main()
