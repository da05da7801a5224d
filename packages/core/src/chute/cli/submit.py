"""``chute submit API``: queue a request through a gateway; print its id (or, with
``--wait``, the finished request)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

ORDER = 40


def positive_seconds(text: str) -> float:
    """argparse type for a duration in seconds that must be above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value


def add_gateway_option(parser: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    """``--gateway URL`` (and ``--timeout``), shared by ``chute submit``, ``get`` and
    ``cancel``. The API key, if the gateway wants one, comes from ``$CHUTE_API_KEY`` (never a
    flag: command lines are visible to every user of the machine)."""
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help="the gateway's URL (default: $CHUTE_GATEWAY_URL, else $CORTEX_CLI_CONFIG_DIR/"
        "cli.yaml, else http://127.0.0.1:8888); API key: $CHUTE_API_KEY",
    )
    if not timeout:
        return
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up after this long (exit status 2); default: wait forever",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="submit a request to an API through the gateway and print its id",
        description=(
            "POST a body to an API's endpoint and print the request id, or with --wait the "
            "finished request as JSON. API is the API's name or its endpoint path (/v1/x)."
        ),
    )
    parser.add_argument("api", metavar="API", help="API name, or endpoint path")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--json", metavar="JSON", help="a JSON document (sent as application/json)")
    body.add_argument(
        "--data",
        metavar="DATA",
        help="the body as text, @FILE to send a file's bytes, or - to read standard input",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a request header (repeatable), e.g. 'Content-Type: text/csv'",
    )
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        default=None,
        help="a repeat with the same key and body returns the first request's id and queues "
        "nothing (safe retries)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait until the request finishes; print it as JSON"
    )
    add_gateway_option(parser)
    parser.set_defaults(run=run)


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: expected NAME:VALUE")
    return name.strip(), value.strip()


def read_data(data: str) -> bytes:
    """``-`` → standard input, ``@path`` → the file's bytes, anything else → its UTF-8."""
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        from chute.errors import ConfigError

        try:
            with open(data[1:], "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise ConfigError(f"--data {data}: {exc.strerror or exc}") from exc
    return data.encode()


def print_result(result: Any) -> None:
    """Print a :class:`chute.Result` as the gateway's JSON, one document per line."""
    import msgspec

    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


def run(args: argparse.Namespace) -> int:
    import msgspec

    from chute.client import Client
    from chute.errors import ConfigError, WaitTimeout

    try:
        headers = dict(parse_header(h) for h in args.header)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    json: Any = None
    content: bytes | None = None
    if args.json is not None:
        try:
            json = msgspec.json.decode(args.json)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"--json is not valid JSON: {exc}") from None
    elif args.data is not None:
        content = read_data(args.data)
    with Client(args.gateway) as client:
        request_id = client.submit(
            args.api,
            json=json,
            content=content,
            headers=headers,
            idempotency_key=args.idempotency_key,
        )
        if not args.wait:
            print(request_id)
            return 0
        try:
            result = client.wait(args.api, request_id, timeout=args.timeout)
        except WaitTimeout as exc:
            print(f"chute submit: {exc}", file=sys.stderr)
            print(request_id)
            return 2
    print_result(result)
    return 0 if result.status == "completed" else 1
