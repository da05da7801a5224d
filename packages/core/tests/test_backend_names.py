"""validate_api_name: the one check every backend applies before an API name enters a key."""

from __future__ import annotations

import pytest

from chute.errors import ConfigError, InvalidAPIName, ProtocolError
from chute.protocol import validate_api_name


@pytest.mark.parametrize("name", ["hello", "a", "text-generator", "v1.2_beta", "A" * 128, "9x"])
def test_valid_names_pass_through(name: str) -> None:
    assert validate_api_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-lead", ".hidden", "_x", "a/b", "..", "a b", "{tag}", "x\n", "é", "A" * 129, "a:b"],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidAPIName, match="API name"):
        validate_api_name(name)


def test_the_error_is_a_protocol_and_a_config_error() -> None:
    # Backends raised ConfigError for bad names before; callers that catch it still do.
    with pytest.raises(ConfigError):
        validate_api_name("a/b")
    with pytest.raises(ProtocolError):
        validate_api_name("a/b")
