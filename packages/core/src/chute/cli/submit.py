"""``chute submit API``: queue a request through a gateway; print its id (or, with
``--wait``, the finished request)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from chute.cli._argtypes import positive_seconds

if TYPE_CHECKING:
    from chute.cli import CommandRegistrar

ORDER = 40


def add_gateway_option(parser: argparse.ArgumentParser, *, timeout: bool = True) -> None:
    """``--gateway URL`` (and ``--timeout``), shared by ``chute submit``, ``get`` and
    ``cancel``. The API key, if the gateway wants one, comes from ``$CHUTE_API_KEY`` (never a
    flag: command lines are visible to every user of the machine)."""
    parser.add_argument(
        "--gateway",
        metavar="URL",
        default=None,
        help="the gateway's URL (default: $CHUTE_GATEWAY_URL, else the `chute dev` running "
        "with .chute/ in this directory or a parent, else $CORTEX_CLI_CONFIG_DIR/cli.yaml, "
        "else http://127.0.0.1:8888); API key: $CHUTE_API_KEY",
    )
    if not timeout:
        return
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up after this long (exit status 6); default: wait forever",
    )


def register(commands: CommandRegistrar) -> None:
    parser = commands.add(
        "submit",
        run=run,
        help="submit a request to an API through the gateway and print its id",
        description=textwrap.fill(
            "POST a body to an API's endpoint and print the request id, or with --wait the "
            "finished request as the gateway's JSON. API is the API's `name` from the API file "
            "(hello-world is served at /hello-world), or its endpoint path when "
            "`networking.endpoint` gives it another one (/v1/hello). Exit status: 0, 1 when "
            "the request failed, 6 when --wait timed out; docs/cli.md lists them all.",
            width=78,
        ),
        epilog=(
            "examples:\n"
            '  chute submit hello-world --json \'{"text": "hi"}\' --wait\n'
            "  chute submit /v1/hello --data @photo.jpg -H 'Content-Type: image/jpeg'\n"
            "  cat rows.csv | chute submit batch --data - -H 'Content-Type: text/csv'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "api",
        metavar="API",
        help="the API's name (POST /<name>), or its endpoint path if networking.endpoint sets one",
    )
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


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: expected NAME:VALUE")
    return name.strip(), value.strip()


#: Bytes read at a time from a --data file or standard input: the body is streamed, never
#: held whole in memory.
CHUNK = 64 * 1024


def read_data(data: str) -> tuple[bytes | Iterator[bytes], dict[str, str]]:
    """The body for ``--data`` and the headers it implies. ``-`` streams standard input
    (chunked), ``@path`` streams the file (with its Content-Length, so that a gateway refuses
    an oversized body before it is sent), anything else is the text's UTF-8."""
    if data == "-":
        return _chunks(sys.stdin.buffer), {}
    if data.startswith("@"):
        from chute.errors import ConfigError

        try:
            handle = open(data[1:], "rb")  # noqa: SIM115 (closed by _chunks)
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise ConfigError(f"--data {data}: {exc.strerror or exc}") from exc
        return _chunks(handle), {"Content-Length": str(size)}
    return data.encode(), {}


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def print_body(body: bytes) -> None:
    """Print the gateway's JSON answer exactly as it sent it, one document per line."""
    out = sys.stdout.buffer
    out.write(body.rstrip(b"\n") + b"\n")
    out.flush()


def status_printer(stream: Any = None) -> Any:
    """``on_status`` for ``Client.wait``: on a terminal, one line per status change on
    standard error (``in_queue``, ``in_progress 2.1 s``...); None (quiet) otherwise."""
    import time

    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        return None
    started = time.monotonic()

    def show(result: Any) -> None:
        stream.write(f"{result.id}: {result.status.value} ({time.monotonic() - started:.1f} s)\n")
        stream.flush()

    return show


def run(args: argparse.Namespace) -> int:
    import msgspec

    from chute.cli import _exit as exit_codes
    from chute.cli import _running as running
    from chute.client import Client
    from chute.errors import ConfigError, WaitTimeout

    try:
        headers = dict(parse_header(h) for h in args.header)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    json: Any = None
    content: bytes | Iterator[bytes] | None = None
    if args.json is not None:
        try:
            json = msgspec.json.decode(args.json)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"--json is not valid JSON: {exc}") from None
    elif args.data is not None:
        content, implied = read_data(args.data)
        for name, value in implied.items():
            headers.setdefault(name, value)
    with Client(running.gateway_url(args.gateway)) as client:
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
            answer = client._wait_answer(
                args.api, request_id, timeout=args.timeout, on_status=status_printer()
            )
        except WaitTimeout as exc:
            print(f"chute submit: {exc}", file=sys.stderr)
            print(request_id)
            return exit_codes.TIMEOUT
    print_body(answer.body)
    return exit_codes.OK if answer.result.status == "completed" else exit_codes.FAILED
