"""parse_options and its validators: strict about unknown and repeated options, typed values,
messages that name the option, the value and the URL (never its password)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chute.backends.urls import (
    Option,
    boolean,
    choice,
    duration,
    http_url,
    int_between,
    matching,
    non_negative_int,
    parse_options,
    positive_seconds,
    redact,
    size,
    text,
)
from chute.errors import ConfigError

SCHEMA: dict[str, Option[Any]] = {
    "retries": Option("reconnect attempts (default 6)", non_negative_int()),
    "timeout": Option("seconds one call may take (default 10)", positive_seconds()),
    "create": Option("create missing queues (default true)", boolean()),
    "endpoint_url": Option("a non-default endpoint", http_url()),
    "max_payload_size": Option("largest payload in bytes", size()),
}


def test_present_options_are_typed_and_absent_ones_left_out() -> None:
    options = parse_options(
        "x://host/0?retries=3&timeout=2.5&create=false&endpoint_url=http://127.0.0.1:9/a/"
        "&max_payload_size=16Mi",
        SCHEMA,
    )
    assert options == {
        "retries": 3,
        "timeout": 2.5,
        "create": False,
        "endpoint_url": "http://127.0.0.1:9/a",
        "max_payload_size": 16 * 1024 * 1024,
    }
    assert parse_options("x://host/0", SCHEMA) == {}
    assert parse_options("x://host/0?timeout=1", SCHEMA) == {"timeout": 1.0}


def test_an_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options("x://host?retires=3", SCHEMA, label="Redis URL")
    message = str(caught.value)
    assert "Redis URL 'x://host?retires=3': unknown parameter 'retires'" in message
    for name, option in SCHEMA.items():
        assert f"{name}: {option.help}" in message


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="'timeout' is given more than once"):
        parse_options("x://host?timeout=1&timeout=2", SCHEMA)


def test_a_bad_value_names_the_option_and_the_value_but_not_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_options("x://user:s3cret@host?timeout=soon", SCHEMA, label="Redis URL")
    message = str(caught.value)
    assert "parameter 'timeout': bad value 'soon': must be a positive number" in message
    assert "s3cret" not in message
    assert "user:***@host" in message


def test_redact() -> None:
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact("redis://u:p%40w@h/0?x=1") == "redis://u:***@h/0?x=1"
    assert redact("redis://h/0") == "redis://h/0"


@pytest.mark.parametrize(
    ("validator", "raw", "expected"),
    [
        (non_negative_int(), "0", 0),
        (non_negative_int(), "42", 42),
        (int_between(1, 1000), "1000", 1000),
        (positive_seconds(), "0.25", 0.25),
        (duration(), "7d", 7 * 86400.0),
        (duration(), "36h", 36 * 3600.0),
        (duration(), "1h30m", 5400.0),
        (duration(), "90", 90.0),
        (boolean(), "TRUE", True),
        (boolean(), "no", False),
        (http_url(), "https://storage.example:8443/", "https://storage.example:8443"),
        (size(), "1048576", 1048576),
        (size(), "1Ki", 1024),
        (size(), "2M", 2_000_000),
        (size(multiple_of=256 * 1024), "8Mi", 8 * 1024 * 1024),
        (choice("required", "optional", "none"), "none", "none"),
        (matching(r"[a-z0-9-]{2,32}", "a region name"), "eu-west-1", "eu-west-1"),
        (text(), "my-project", "my-project"),
    ],
)
def test_validators_accept(validator: Callable[[str], object], raw: str, expected: object) -> None:
    assert validator(raw) == expected


@pytest.mark.parametrize(
    ("validator", "raw", "complaint"),
    [
        (non_negative_int(), "-1", "whole number"),
        (non_negative_int(), "1.5", "whole number"),
        (non_negative_int(), "", "whole number"),
        (non_negative_int(), "٣", "whole number"),  # a non-ASCII digit
        (int_between(1, 1000), "0", "1 to 1000"),
        (int_between(1, 1000), "1001", "1 to 1000"),
        (positive_seconds(), "0", "positive"),
        (positive_seconds(), "inf", "positive"),
        (positive_seconds(), "nan", "positive"),
        (positive_seconds(), "soon", "positive"),
        (duration(), "0d", "positive"),
        (duration(), "-5", "positive"),
        (duration(), "soon", "duration"),
        (boolean(), "maybe", "true or false"),
        (boolean(), "", "true or false"),
        (http_url(), "localhost:4566", "http"),
        (http_url(), "ftp://h", "http"),
        (http_url(), "", "http"),
        (size(), "lots", "number of bytes"),
        (size(), "1.5", "whole number of bytes"),
        (size(), "500m", "whole number of bytes"),
        (size(minimum=1), "0", "at least 1"),
        (size(multiple_of=256 * 1024), "1000", "multiple of 262144"),
        (size(minimum=256 * 1024, multiple_of=256 * 1024), "0", "at least 262144"),
        (choice("required", "optional", "none"), "REQUIRED", "required, optional or none"),
        (matching(r"[a-z0-9-]{2,32}", "a region name"), "EU West", "a region name"),
        (text(), "", "empty"),
    ],
)
def test_validators_refuse(validator: Callable[[str], object], raw: str, complaint: str) -> None:
    schema = {"opt": Option("an option", validator)}
    with pytest.raises(ConfigError, match=complaint):
        parse_options(f"x://h?opt={raw}", schema)
