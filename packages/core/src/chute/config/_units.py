"""Kubernetes quantities (``500m``, ``512Mi``) and Go durations (``60s``, ``1h30m``), parsed
exactly."""

from __future__ import annotations

import math
import re
from decimal import Decimal, DecimalException

from chute.config._issues import _show
from chute.errors import ConfigError

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_SUFFIX_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity (``500m``, ``1``, ``0.5``, ``1Gi``, ``512Mi``, ``1G``, ``1e3``)
    into an exact :class:`~decimal.Decimal` in base units (cores, bytes).

    Raises :class:`~chute.errors.ConfigError` when the value is not a quantity.
    """
    if isinstance(value, bool):  # YAML's true/false are ints to Python, never quantities
        raise ConfigError(f"expected a quantity such as 500m, 1 or 512Mi (got {_show(value)})")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite quantity (got {_show(value)})")
        return Decimal(repr(value))
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ConfigError(
            f"expected a quantity such as 500m, 1, 0.5, 1Gi, 512Mi, 1G or 1e3 (got {_show(value)})"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        try:
            return number.scaleb(int(suffix[1:]))
        except DecimalException as exc:  # absurd exponents
            raise ConfigError(f"expected a quantity in range (got {_show(value)})") from exc
    return number * _SUFFIX_SCALE[suffix]


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def _duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration``, exact, in integer nanoseconds."""
    raw = text.strip()
    sign = -1 if raw.startswith("-") else 1
    body = raw[1:] if raw[:1] in ("+", "-") else raw
    if body == "0":
        return 0
    total = Decimal(0)
    position = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += Decimal(match[1]) * _DURATION_NS[match[2]]
        position = match.end()
    if not body or position != len(body):
        raise ConfigError(
            "expected a duration such as 60s, 5m, 1h30m or 500ms, in units ns, us, ms, s, m, h "
            f"(got {_show(text)})"
        )
    return sign * int(total)


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (``60s``, ``5m``, ``1h30m``, ``500ms``) into seconds.

    Raises :class:`~chute.errors.ConfigError` when the text is not a duration.
    """
    return _duration_ns(text) / 1e9
