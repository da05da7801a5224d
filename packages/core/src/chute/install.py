"""The install line to print in a hint, right for how chute itself was installed.

Before chute is on PyPI, ``pip install "chute[redis]"`` cannot work, and from a clone
``pip install './packages/core[redis]'`` cannot either (the extra pins ``chute-redis``, which no
index has). So a hint looks at how ``chute`` was installed (``direct_url.json``, PEP 610): from a
directory of a clone, it names the sibling package's directory, which pip installs without an
index; otherwise the published extra. See README.md, "Install".
"""

from __future__ import annotations

import importlib.metadata
import json
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Each extra of ``chute`` and the directories (under ``packages/``) that provide it.
EXTRA_PACKAGES = {
    "dequeuer": ("dequeuer",),
    "redis": ("backends-redis",),
    "sqs": ("backends-sqs",),
    "gcs": ("backends-gcs",),
    "k8s": ("k8s",),
    "all": ("dequeuer", "backends-redis", "backends-sqs", "backends-gcs", "k8s"),
}


def checkout_source(direct_url: str | None) -> tuple[Path, bool] | None:
    """The ``packages/core`` directory chute was installed from, and whether editably, given
    the text of its ``direct_url.json``; None for an install from an index or an archive."""
    if not direct_url:
        return None
    try:
        info = json.loads(direct_url)
    except ValueError:
        return None
    if not isinstance(info, dict) or "dir_info" not in info:
        return None
    parts = urlsplit(str(info.get("url", "")))
    if parts.scheme != "file":
        return None
    editable = bool((info.get("dir_info") or {}).get("editable", False))
    return Path(unquote(parts.path)), editable


def _installed_direct_url() -> str | None:
    try:
        return importlib.metadata.distribution("chute").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None


def install_line(extra: str, *, direct_url: str | bool | None = True) -> str:
    """``pip install ...`` that adds chute's ``extra`` (``"redis"``) where this chute runs.

    ``direct_url`` is the text of chute's ``direct_url.json`` (default: read it from the
    installed distribution; None: an index install)."""
    text = _installed_direct_url() if direct_url is True else direct_url
    source = checkout_source(text if isinstance(text, str) else None)
    if source is not None:
        core, editable = source
        dirs = [core.parent / name for name in EXTRA_PACKAGES.get(extra, ())]
        if dirs and all((d / "pyproject.toml").is_file() for d in dirs):
            flag = "-e " if editable else ""
            return "pip install " + " ".join(flag + shlex.quote(str(d)) for d in dirs)
    return f'pip install "chute[{extra}]"'
