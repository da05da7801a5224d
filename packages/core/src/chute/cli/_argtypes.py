"""argparse types that commands share, core's and plugins' alike (re-exported by
:mod:`chute.cli`): sizes with units and positive durations."""

from __future__ import annotations

import argparse
import re

__all__ = ["parse_size", "positive_seconds"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[kK]B|B)?\s*$")
_UNITS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    _UNITS[f"{_letter}iB"] = _UNITS[f"{_letter}i"] = 1024**_power
    _UNITS[f"{_letter}B"] = _UNITS[_letter] = 1000**_power
_UNITS["kB"] = 1000


def parse_size(text: str) -> int:
    """``100MiB`` → 104857600. IEC units (KiB, MiB, GiB, TiB) are powers of 1024, SI units
    (kB, MB, GB, TB) powers of 1000; a bare number is bytes."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: expected a number of bytes with an optional unit, "
            "e.g. 100MiB, 512KiB, 10MB, 1048576"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit or ""])


def positive_seconds(text: str) -> float:
    """argparse type for a duration in seconds that must be above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value
