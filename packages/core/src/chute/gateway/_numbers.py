"""One number grammar for every numeric header and query parameter of the gateway.

The OpenAPI document (``chute.gateway._openapi``) declares them ``type: number``, whose
grammar is JSON's (RFC 8259, section 6): an optional minus, an integer part without leading
zeros, an optional fraction and an optional exponent — ``30``, ``2.5``, ``1e3``, ``5e-324``.
Python's ``float()`` accepts more (``1_0``, ``inf``, ``nan``, ``+1``, ``.5``, surrounding
spaces); nothing outside the grammar is accepted here, and the range is checked on the exact
decimal value, so what the document allows is what the server takes.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

#: JSON's number grammar.
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
#: A header value's optional whitespace around it (RFC 9110, OWS).
_OWS = " \t"


class NumberError(ValueError):
    """Not a number in the grammar, or out of its range; the message says which."""


def parse_seconds(text: str, *, maximum: float, header: bool = False) -> float:
    """A number of seconds above 0 and at most ``maximum``, written in JSON's grammar.

    ``header``: the value of a header, which may carry optional whitespace around it. The
    result is never 0 for a positive value too small for a float (``1e-400``)."""
    value = text.strip(_OWS) if header else text
    if NUMBER.fullmatch(value) is None:
        raise NumberError(f"expected a number (such as 30, 2.5 or 1e3), got {text!r}")
    exact = Decimal(value)
    if not 0 < exact <= Decimal(repr(maximum)):
        raise NumberError(f"expected a number above 0 and at most {maximum:g}, got {text!r}")
    return max(float(exact), math.ulp(0.0))
