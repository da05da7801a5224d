"""Every install line the README and the docs give for a clone works, run as written with pip in
a fresh virtual environment on a clean copy of the checkout (issue 15, item 1); and the hint
chute prints for a missing backend is a line that works there too.

The published forms (``pip install "chute[redis]"``) cannot run before chute is on PyPI; each
must stand beside a clone line that installs the same packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chute.install import EXTRA_PACKAGES

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS += sorted((ROOT / "packages").glob("*/README.md"))
DOCS += sorted((ROOT / "examples").glob("*/README.md"))
#: ``pip install ./packages/...`` as a line of a code block or in an inline code span.
CLONE_LINE = re.compile(r"(?:^|`|\$ )(pip install (?:\./packages/[\w.-]+\s*)+)", re.M)
PUBLISHED = re.compile(r"pip install \"?(chute(?:-dequeuer)?)(?:\[(\w+)\])?\"?")
#: A whole install-and-try line can take this long (pip builds each package).
LINE_TIMEOUT = 300

#: On one xdist worker (--dist=loadgroup): one clean copy of the checkout.
pytestmark = [pytest.mark.install, pytest.mark.xdist_group("test_install")]


def documented_clone_lines() -> dict[str, list[Path]]:
    lines: dict[str, list[Path]] = {}
    for doc in DOCS:
        for match in CLONE_LINE.finditer(doc.read_text()):
            lines.setdefault(" ".join(match[1].split()), []).append(doc.relative_to(ROOT))
    return lines


def quick_start_line() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```console\n(.*?)```", readme, re.S)
    assert block is not None
    return block.group(1).strip().splitlines()[0]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of the checkout: the files git tracks (and new ones it does not ignore),
    without .venv, build output or state directories."""
    target = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked archive): copy the tree
        shutil.copytree(
            ROOT,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".venv", ".nox", ".git", ".chute", "__pycache__"),
        )
        return target
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def fresh_venv(path: Path, *, real_pip: bool = True) -> Path:
    """A new virtual environment. With ``real_pip`` it has pip itself; else its ``pip`` is uv's
    (``uv pip``, the same resolver rules for directories, several times faster), when uv is
    there. uv makes the environment in a fraction of a second."""
    uv = shutil.which("uv")
    if uv is None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=LINE_TIMEOUT)
        return path
    seed = ["--seed"] if real_pip else []
    command = [uv, "venv", "--quiet", *seed, "--python", sys.executable, str(path)]
    subprocess.run(command, check=True, timeout=LINE_TIMEOUT)
    if not real_pip:
        shim = path / "bin" / "pip"
        # --no-sources: only what the package's own metadata says, as pip reads it (not the
        # workspace's [tool.uv.sources]).
        shim.write_text(
            f'#!/bin/sh\nexec {uv} pip "$@" --no-sources --python "{path}/bin/python"\n'
        )
        shim.chmod(0o755)
    return path


def run_line(line: str, venv: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a documented command line as a user would in a shell with ``venv`` activated."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHUTE_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LINE_TIMEOUT,
        check=False,
    )


def installed(venv: Path, distribution: str) -> bool:
    probe = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            f"import importlib.metadata as m; m.version({distribution!r})",
        ],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def distribution_of(directory: str) -> str:
    text = (ROOT / directory / "pyproject.toml").read_text()
    match = re.search(r'^name = "([^"]+)"', text, re.M)
    assert match is not None
    return match[1]


def test_every_published_install_line_has_a_clone_line_beside_it() -> None:
    clone_lines = documented_clone_lines()
    assert clone_lines, "no clone install line found in the docs"
    for doc in DOCS:
        text = doc.read_text()
        for match in PUBLISHED.finditer(text):
            name, extra = match.groups()
            if name == "chute-dequeuer":
                extra = "dequeuer"
            wanted = ["core", *EXTRA_PACKAGES.get(extra or "", ())]
            beside = [
                line
                for line, where in clone_lines.items()
                if doc.relative_to(ROOT) in where or doc.name == "README.md"
            ]
            assert any(all(f"./packages/{p}" in line for p in wanted) for line in beside), (
                f"{doc.relative_to(ROOT)}: {match[0]!r} has no clone line installing {wanted}"
            )


def test_the_quick_start_line_runs_the_demo_in_a_fresh_venv(clone: Path, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv")
    line = quick_start_line()
    done = run_line(line, venv, clone)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    assert "Next: run it yourself" in done.stdout

    # chute names the missing Redis backend with a line that works here; run that line.
    asked = run_line(
        "chute dead-letter list hello-world --queue redis://127.0.0.1:6379/9", venv, clone
    )
    assert asked.returncode != 0
    hint = re.search(r"install it with: (pip install .*)$", asked.stderr, re.M)
    assert hint is not None, asked.stderr
    assert "packages/backends-redis" in hint[1]
    followed = run_line(hint[1], venv, tmp_path)  # from anywhere: the hint has full paths
    assert followed.returncode == 0, f"{hint[1]}\n{followed.stderr}"
    assert installed(venv, "chute-redis")


@pytest.mark.parametrize("line", sorted(documented_clone_lines()))
def test_each_documented_clone_install_line_works_in_a_fresh_venv(
    line: str, clone: Path, tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv", real_pip=False)  # the quick start runs real pip
    done = run_line(line, venv, clone)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    for directory in re.findall(r"\./(packages/[\w.-]+)", line):
        assert installed(venv, distribution_of(directory)), f"{line}: {directory} not installed"
    version = run_line("chute --version", venv, clone)
    assert version.returncode == 0, version.stderr
