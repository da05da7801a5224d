"""API keys: optional bearer-token auth on the gateway (docs/auth.md).

Keys are global (``--api-keys-file``, ``$CHUTE_API_KEYS``) or per API (``auth:`` in the API
file); an API with keys of its own accepts only those, else the global ones; with no keys at
all the gateway is open, as Cortex's was. Keys are read once, at startup, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from chute.config import API, Auth
from chute.errors import ConfigError

#: The environment variable with global keys, comma-separated.
KEYS_ENV = "CHUTE_API_KEYS"


def parse_keys(text: str, *, separator: str | None = None) -> list[str]:
    """Keys from text: split on ``separator`` (None: lines); blanks and ``#`` comments (in a
    file) are skipped, whitespace around a key is dropped."""
    parts = text.split(separator) if separator is not None else text.splitlines()
    keys = []
    for part in parts:
        key = part.strip()
        if not key or (separator is None and key.startswith("#")):
            continue
        keys.append(key)
    return keys


def read_key_file(path: str | os.PathLike[str]) -> list[str]:
    """The keys of a file: one per line, ``#`` comments and blank lines ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read API keys from {os.fspath(path)}: {exc}") from exc
    return parse_keys(text)


def _check_keys(keys: Sequence[str], where: str) -> None:
    for key in keys:
        # The message names where the key is, never the key itself.
        if not key.isascii():
            # HTTP header values are bytes that servers hand over as Latin-1: a key with other
            # characters could never be presented as it is written (docs/auth.md).
            raise ConfigError(
                f"{where}: an API key contains non-ASCII characters; an Authorization header "
                "carries ASCII, so such a key could never match: use printable ASCII keys"
            )
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise ConfigError(f"{where}: an API key contains whitespace or unprintable characters")


def global_keys(
    keys_file: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Global keys: from ``keys_file`` and from ``$CHUTE_API_KEYS`` (both, if both are set)."""
    environ = os.environ if environ is None else environ
    keys: list[str] = []
    if keys_file is not None:
        from_file = read_key_file(keys_file)
        if not from_file:
            raise ConfigError(f"{os.fspath(keys_file)}: no API keys in the file")
        _check_keys(from_file, os.fspath(keys_file))
        keys += from_file
    from_env = parse_keys(environ.get(KEYS_ENV, ""), separator=",")
    _check_keys(from_env, f"${KEYS_ENV}")
    return keys + from_env


def read_api_keys(api: API, environ: Mapping[str, str] | None = None) -> list[str]:
    """The keys of an API's ``auth:`` section. A section that yields no key is an error: an
    API that asks for keys must not silently run open."""
    auth: Auth | None = api.auth
    if auth is None:
        return []
    environ = os.environ if environ is None else environ
    keys: list[str] = []
    where = f"API {api.name!r}: auth"
    if auth.keys_env is not None:
        value = environ.get(auth.keys_env)
        if value is None:
            raise ConfigError(f"{where}.keys_env: ${auth.keys_env} is not set")
        from_env = parse_keys(value, separator=",")
        _check_keys(from_env, f"{where}.keys_env (${auth.keys_env})")
        keys += from_env
    if auth.keys_file is not None:
        from_file = read_key_file(auth.keys_file)
        _check_keys(from_file, f"{where}.keys_file ({auth.keys_file})")
        keys += from_file
    if not keys:
        raise ConfigError(f"{where}: no API keys found (the API would be open to anyone)")
    return keys


class KeyRing:
    """A set of keys and the constant-time check of a presented one.

    Keys are kept as SHA-256 digests: every comparison is then between two 32-byte strings
    (no length leaks), and ``hmac.compare_digest`` runs against every key, whether an earlier
    one matched or not, so the time taken says nothing about which key or how much matched.
    """

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple({hashlib.sha256(key.encode()).digest() for key in keys})

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def digests(self) -> tuple[bytes, ...]:
        """The keys' SHA-256 digests (the dashboard derives its session secret from them)."""
        return self._digests

    def accepts(self, presented: str | None) -> bool:
        """True if ``presented`` is one of the keys (False for None)."""
        if presented is None:
            return False
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive),
    or None when there is none, it is another scheme, or there are several."""
    found: str | None = None
    count = 0
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        count += 1
        scheme, _, token = value.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found = token.strip()
    return found if count == 1 else None
