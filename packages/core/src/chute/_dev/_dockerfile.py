"""How a container would start, read from its Dockerfile, for ``chute dev``.

A Cortex API file names an image, never a command: Cortex ran the image's ``CMD``. To run such a
project as local processes, ``chute dev`` reads the Dockerfile beside the API file the way
``docker build`` + ``docker run`` would use it:

* the final stage (inheriting from an earlier stage it is built ``FROM``);
* ``ENTRYPOINT`` and ``CMD`` in exec (JSON) and shell form — a shell form runs under
  ``/bin/sh -c``, so ``$CORTEX_PORT`` is expanded by the shell at start, as in the image;
* ``ENV`` and ``ARG`` (with ``${VAR}``, ``${VAR:-default}`` substitution);
* ``WORKDIR``, mapped through the ``COPY``/``ADD`` lines to the local folder they copy from
  (``COPY app /app`` + ``WORKDIR /app`` runs in ``./app``), and so are ``ENV`` values and
  arguments that name a copied path (``PYTHONPATH=/app``);
* ``EXPOSE``, and the requirements file a ``RUN pip install -r …`` line installs.

The Dockerfile is chosen as a Cortex user names them (:func:`choose_dockerfile`). Parsing
(continuations, comments, quoting) is dockerfile-parse's; what an instruction means here is ours.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter, extract_key_values

from chute.errors import ConfigError

__all__ = ["ImageStart", "choose_dockerfile", "dockerfile_candidates", "read_start"]

_REQUIREMENTS = re.compile(r"(?:^|\s)(?:-r|--requirement)[\s=]+(\S+)")
_FLAGS = re.compile(r"^(?:\s*--\S+)*\s*")
_STAGE_ALIAS = re.compile(r"^(\S+)\s+as\s+(\S+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ImageStart:
    """What starting the image would run, translated to this machine."""

    dockerfile: Path
    #: ENTRYPOINT + CMD as an argv (a shell form is ``["/bin/sh", "-c", …]``).
    argv: list[str]
    #: How many of ``argv``'s last words came from CMD (a pod's ``args`` replace them).
    cmd_length: int
    #: The image's ENV, copied paths mapped to local ones; the pod's env goes on top.
    env: dict[str, str]
    #: The local folder standing in for WORKDIR.
    workdir: Path
    #: The ports EXPOSEd.
    expose: tuple[int, ...] = ()
    #: The requirements file a ``RUN pip install -r`` line installs, as a local path.
    requirements: Path | None = None


@dataclass
class _Stage:
    """The image as built so far: what a later ``FROM <this stage>`` inherits."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    #: (container path, local path) for each COPY/ADD, in order.
    copies: list[tuple[str, Path]] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    expose: list[int] = field(default_factory=list)
    requirements: str | None = None

    def copy(self) -> _Stage:
        return replace(self, env=dict(self.env), copies=list(self.copies), expose=list(self.expose))


def dockerfile_candidates(folder: Path) -> list[Path]:
    """The files in ``folder`` named as Dockerfiles are (``Dockerfile``, ``cpu.Dockerfile``,
    ``Dockerfile.gpu``, ``text-generator-cpu.dockerfile``), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and "dockerfile" in p.name.lower())


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def choose_dockerfile(
    api_file: Path, api: str, container: str, *, explicit: Path | None = None
) -> Path:
    """The Dockerfile that builds ``container``'s image, beside ``api_file``.

    One candidate is taken as it is; among several, the one whose name shares the API file's
    variant (``cortex_cpu.yaml`` → ``cpu.Dockerfile``, ``…-cpu.dockerfile``), the container's or
    the API's name. Raises :class:`ConfigError` listing the candidates when it cannot decide.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"--dockerfile {container}={explicit}: no such file")
        return explicit
    where = f"{api_file}: API {api!r}, container {container!r}"
    found = dockerfile_candidates(api_file.parent)
    if not found:
        raise ConfigError(
            f"{where} has no `command` and there is no Dockerfile beside the API file to take "
            "its start from. Add a `command` (and `args`) to the container, or a Dockerfile "
            "(or name one with --dockerfile CONTAINER=PATH)."
        )
    if len(found) == 1:
        return found[0]
    hints = [
        _words(api_file.stem) - {"cortex", "api", "apis", "yaml", "yml"},
        _words(container),
        _words(api),
    ]
    for words in hints:
        if not words:
            continue
        matching = [p for p in found if words & (_words(p.name) - {"dockerfile"})]
        if len(matching) == 1:
            return matching[0]
    names = ", ".join(p.name for p in found)
    raise ConfigError(
        f"{where} has no `command`, and chute dev cannot tell which Dockerfile builds its image: "
        f"{names}. Choose one with --dockerfile {container}=PATH."
    )


def read_start(dockerfile: Path, *, context: Path | None = None) -> ImageStart:
    """What running ``dockerfile``'s image would start, with container paths mapped into
    ``context`` (the build context: the Dockerfile's folder unless given).

    Raises :class:`ConfigError` when the Dockerfile cannot be read or starts nothing.
    """
    context = (context or dockerfile.parent).resolve()
    try:
        # A file object: given a path, dockerfile-parse takes any name but "Dockerfile" for a
        # folder to look in.
        parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes()), env_replace=True)
        structure = parser.structure
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{dockerfile}: cannot read it: {exc}") from exc

    stages: dict[str, _Stage] = {}
    stage: _Stage | None = None
    args: dict[str, str] = {}  # global ARGs (before the first FROM) and the stage's
    index = 0
    for item in structure:
        instruction, value = item["instruction"].upper(), item["value"]
        line = f"{dockerfile}:{item['startline'] + 1}"
        if instruction == "FROM":
            image, alias = value.strip(), None
            m = _STAGE_ALIAS.match(image)
            if m:
                image, alias = m.group(1), m.group(2)
            parent = stages.get(image.lower())
            stage = parent.copy() if parent is not None else _Stage()
            stages[str(index)] = stage
            if alias:
                stages[alias.lower()] = stage
            index += 1
            continue
        if instruction == "ARG":
            for key, val in extract_key_values(True, args, stage.env if stage else {}, value):
                args[key] = val if val is not None else args.get(key, "")
            continue
        if stage is None:
            continue  # only ARG may come before FROM
        if instruction == "ENV":
            for key, val in extract_key_values(True, args, stage.env, value):
                stage.env[key] = val
        elif instruction == "WORKDIR":
            path = (_split(value, args, stage.env) or [""])[0]
            stage.workdir = posixpath.normpath(posixpath.join(stage.workdir, path))
        elif instruction in ("COPY", "ADD"):
            words = _split(value, args, stage.env)
            flags = [w for w in words if w.startswith("--")]
            words = [w for w in words if not w.startswith("--")]
            exec_form = _exec_form(_FLAGS.sub("", value))
            if exec_form is not None:
                words = exec_form
            if any(f.startswith("--from") for f in flags) or len(words) < 2:
                continue  # copied from another stage or image: nothing local to map
            *sources, dest = words
            dest = posixpath.normpath(posixpath.join(stage.workdir, dest)) + (
                "/" if dest.endswith("/") else ""
            )
            for source in sources:
                local = (context / source).resolve()
                target = dest
                # A folder's contents land in dest; a file lands in dest/ under its name.
                if not local.is_dir() and (dest.endswith("/") or len(sources) > 1):
                    target = posixpath.join(dest, posixpath.basename(source.rstrip("/")))
                stage.copies.append((posixpath.normpath(target), local))
        elif instruction == "ENTRYPOINT":
            stage.entrypoint = _command(value, line)
            stage.cmd = None  # Docker resets CMD when ENTRYPOINT is set
        elif instruction == "CMD":
            stage.cmd = _command(value, line)
        elif instruction == "EXPOSE":
            for word in _split(value, args, stage.env):
                port = word.split("/")[0]
                if port.isdigit():
                    stage.expose.append(int(port))
        elif instruction == "RUN" and stage.requirements is None:
            m = _REQUIREMENTS.search(value)
            if m and "pip" in value:
                stage.requirements = posixpath.join(stage.workdir, m.group(1))

    if stage is None:
        raise ConfigError(f"{dockerfile}: no FROM line: this is not a Dockerfile")
    argv, cmd_length = _start(stage)
    if not argv:
        raise ConfigError(
            f"{dockerfile}: neither CMD nor ENTRYPOINT: the image starts nothing of its own. "
            "Add a `command` to the container in the API file."
        )
    mapper = _PathMapper(stage.copies, context)
    return ImageStart(
        dockerfile=dockerfile,
        argv=[mapper.in_text(a) for a in argv],
        cmd_length=cmd_length,
        env={k: mapper.in_text(v) for k, v in stage.env.items()},
        workdir=mapper.local(stage.workdir),
        expose=tuple(stage.expose),
        requirements=mapper.local(stage.requirements) if stage.requirements else None,
    )


def _split(value: str, args: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    return [w for w in WordSplitter(value, args=dict(args), envs=dict(env)).split() if w]


def _exec_form(text: str) -> list[str] | None:
    """The words of a JSON-array form, or None (Docker then takes the shell form too)."""
    if not text.lstrip().startswith("["):
        return None
    try:
        words = json.loads(text)
    except ValueError:
        return None
    if isinstance(words, list) and all(isinstance(w, str) for w in words):
        return list(words)
    return None


def _command(value: str, line: str) -> list[str]:
    text = value.strip()
    words = _exec_form(text)
    if words is not None:
        return words
    if not text:
        raise ConfigError(f"{line}: empty command")
    return ["/bin/sh", "-c", text]


def _start(stage: _Stage) -> tuple[list[str], int]:
    """ENTRYPOINT + CMD, and how many words CMD gave."""
    entrypoint, cmd = stage.entrypoint or [], stage.cmd or []
    if entrypoint[:2] == ["/bin/sh", "-c"]:
        return entrypoint, 0  # a shell-form ENTRYPOINT ignores CMD, as in Docker
    return [*entrypoint, *cmd], len(cmd)


class _PathMapper:
    """Container paths under a COPY/ADD destination → the local paths they were copied from."""

    def __init__(self, copies: Sequence[tuple[str, Path]], context: Path) -> None:
        # Longest destination first; among equals, the latest copy wins.
        order = sorted(enumerate(copies), key=lambda ic: (-len(ic[1][0]), -ic[0]))
        self._copies = [c for _, c in order]
        self._context = context
        dests = sorted({d for d, _ in copies if d != "/"}, key=len, reverse=True)
        self._pattern = (
            re.compile(
                r"(?<![\w./-])("
                + "|".join(re.escape(d) for d in dests)
                + r")(/[^\s:'\";]*)?(?=$|[\s:'\";])"
            )
            if dests
            else None
        )

    def local(self, path: str) -> Path:
        """The local stand-in for container path ``path`` (the build context if none)."""
        for dest, source in self._copies:
            if path == dest or path.startswith(dest.rstrip("/") + "/") or dest == "/":
                rest = posixpath.relpath(path, dest)
                return source if rest == "." else source / rest
        return self._context

    def in_text(self, text: str) -> str:
        """``text`` (an ENV value, an argument, a shell line) with each copied path made local,
        also inside ``a:b`` lists."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: str(self.local(m.group(0))), text)
