"""py-spy on the gateway and the dequeuer while a scenario runs (``--profile DIR``).

Stacks are recorded in py-spy's ``raw`` format (collapsed stacks: one line per stack and its
sample count), which speedscope (https://www.speedscope.app) and flamegraph.pl open as they
are; :func:`summary` prints where the time goes without either.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from benchmarks.procs import Proc


@contextlib.contextmanager
def recording(procs: dict[str, Proc], out: Path, label: str, rate: int = 250) -> Iterator[None]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy (in the bench dependency group)")
    out.mkdir(parents=True, exist_ok=True)
    running = []
    for role, proc in procs.items():
        path = out / f"{label}-{role}.txt"
        running.append(
            subprocess.Popen(
                [py_spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", str(rate)]
                + ["--output", str(path), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        yield
    finally:
        for p in running:
            p.send_signal(signal.SIGINT)
        for p in running:
            p.wait(30)


def summary(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares of the hottest functions in a collapsed-stack file."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"{path.name}: {total} samples", "  self%  function"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in own.most_common(top)]
    lines += ["  incl%  function"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in incl.most_common(top * 2)]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(summary(Path(arg)))
