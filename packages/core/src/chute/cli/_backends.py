"""Backend URLs for the commands that inspect or manage existing data (``dead-letter``).

Such a command must not quietly create an empty embedded database: run from the wrong
directory, it would report "nothing there" about a database it just made.
"""

from __future__ import annotations

from chute.errors import ConfigError
from chute.registry import DEFAULT_URL, URL_ENV, resolve_url

URL_HELP = (
    "{role} URL (default: ${env}, else the running `chute dev`'s (found through .chute/ here or "
    "in a parent), else " + DEFAULT_URL + ", relative to this directory)"
)


def url_help(role: str) -> str:
    return URL_HELP.format(role=role, env=URL_ENV[role])


def existing_url(role: str, explicit: str | None) -> str:
    """Resolve the ``role`` URL like the gateway does, refusing an embedded database that does
    not exist yet."""
    url = resolve_url(role, explicit, default="")
    if not url:
        from chute.cli._running import running_dev

        dev = running_dev()
        found = None if dev is None else (dev.queue_url if role == "queue" else dev.store_url)
        url = found or DEFAULT_URL
    if url.startswith("sqlite:"):
        from chute.backends._sqlite.db import parse_url

        path, _ = parse_url(url)
        if not path.exists():
            raise ConfigError(
                f"no chute database at {path}: run this where `chute dev` ran, or pass "
                f"--{role} (or set ${URL_ENV[role]}) to the {role} your gateway uses"
            )
    return url
