"""Where a per-request webhook (``X-Chute-Webhook``) may go: the SSRF guard.

A client's URL is a request the gateway's and the dequeuer's network makes on the client's
behalf, from inside the cluster. So per-request URLs are opt-in per API
(``webhook.request_urls``, an allowlist of hosts and URL prefixes), and a target whose address
is not public (loopback, private, link-local, shared, reserved, multicast…) is refused unless the
API says ``webhook.private_targets: true``. The address is checked twice: the URL's literal
address at submit, and at every delivery the addresses its host resolves to, the very ones the
POST then connects to (so a DNS answer that changes between the check and the connection cannot
slip a private address in). The API's own ``webhook.url`` is the operator's and is not checked.
See docs/webhooks.md.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

import anyio

from chute.errors import TargetRefused as TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    """Whether an address is globally routable: not loopback, private, link-local, shared
    (100.64/10), reserved, unspecified or multicast. IPv4-mapped IPv6 counts as its IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _host(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise TargetRefused(f"{url!r} has an invalid port") from None
    if scheme not in ("http", "https") or not host:
        raise TargetRefused("expected an http:// or https:// URL with a host")
    return scheme, host.lower().rstrip("."), port or (443 if scheme == "https" else 80)


def matches(url: str, allowlist: Sequence[str]) -> bool:
    """Whether ``url`` is allowed by an entry of ``allowlist``: a host (``hooks.example.com``),
    every subdomain of one (``*.example.com``), or a URL prefix
    (``https://client.example.org/hooks/``: same scheme, host and port, and the path
    ``/hooks`` or one under it)."""
    scheme, host, port = _host(url)
    path = urlsplit(url).path or "/"
    for entry in allowlist:
        entry = entry.strip()
        if "://" in entry:
            e_scheme, e_host, e_port = _host(entry)
            e_path = urlsplit(entry).path or "/"
            folder = e_path.rstrip("/")
            under = path == (folder or "/") or path.startswith(folder + "/")
            if (scheme, host, port) == (e_scheme, e_host, e_port) and under:
                return True
        elif entry.startswith("*."):
            if host.endswith(entry[1:].lower().rstrip(".")):
                return True
        elif host == entry.lower().rstrip(".").strip("[]"):  # [::1] names the address ::1
            return True
    return False


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


#: What may follow the host of a request URL: RFC 3986's path-abempty, query and fragment.
_PCHAR = r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~!$&'()*+,;=:@-])"
_REST = rf"(?:/(?:{_PCHAR}|/)*)?(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


@functools.lru_cache(maxsize=256)
def url_pattern(allowlist: tuple[str, ...], *, private_targets: bool = False) -> str:
    """The regular expression (also the OpenAPI document's ``pattern``) of the request URLs an
    allowlist accepts, in their plain form: ``http``/``https``, a lower-case host, an optional
    port, no user info, RFC 3986 characters. An entry that is a non-public address is left out
    unless ``private_targets``. A URL must match it, and :func:`matches` too."""
    port = (
        "(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
        "|6553[0-5]))?"
    )
    options: list[str] = []
    for raw in allowlist:
        entry = raw.strip()
        if "://" in entry:
            scheme, _, remainder = entry.partition("://")
            netloc, _, path = remainder.partition("/")
            folder = re.escape("/" + path.strip("/")) if path.strip("/") else ""
            escaped = f"{re.escape(scheme.lower())}://{re.escape(netloc.lower())}{folder}"
            options.append(escaped + _REST)
            continue
        host = entry.lower().rstrip(".")
        address = _literal(host)
        if address is not None and not private_targets and not is_public(address):
            continue  # refused all the same
        if address is not None:
            host_re = re.escape(f"[{address}]" if address.version == 6 else str(address))
        elif host.startswith("*."):
            host_re = f"{_LABEL}(?:\\.{_LABEL})*" + re.escape(host[1:])
        else:
            host_re = re.escape(host)
        options.append(f"https?://{host_re}{port}{_REST}")
    return "^(?:" + "|".join(options or ["(?!)"]) + ")$"


def check_request_url(url: str, allowlist: Sequence[str], *, private_targets: bool) -> None:
    """At submit: raise TargetRefused unless ``url`` is on the API's allowlist (in the plain
    form of :func:`url_pattern`) and, when it is an address, a public one (or
    ``private_targets``)."""
    if not allowlist:
        raise TargetRefused(
            "per-request webhook URLs are not enabled for this API (webhook.request_urls)"
        )
    address = _literal(_host(url)[1])
    if address is not None and not private_targets and not is_public(address):
        raise TargetRefused(
            f"{address} is not a public address (allow with webhook.private_targets)"
        )
    pattern = url_pattern(tuple(allowlist), private_targets=private_targets)
    if re.fullmatch(pattern, url) is None or not matches(url, allowlist):
        raise TargetRefused("the URL is not on the API's webhook.request_urls allowlist")


async def resolve_target(url: str, *, private_targets: bool) -> list[IPAddress]:
    """At delivery: the addresses ``url``'s host resolves to, to connect to those and no other;
    TargetRefused if any is not public (unless ``private_targets``) or it does not resolve."""
    _, host, port = _host(url)
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TargetRefused(f"{host} does not resolve: {exc}") from None
        addresses = []
        for *_, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
    if not private_targets:
        for address in addresses:
            if not is_public(address):
                raise TargetRefused(
                    f"{host} resolves to {address}, not a public address "
                    "(allow with webhook.private_targets)"
                )
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    return addresses


def pinned(url: str, address: IPAddress) -> tuple[str, str, str]:
    """``url`` with its host replaced by ``address`` (so the connection goes where the check
    looked), and the ``Host`` header and TLS server name that keep it the same request."""
    parts = urlsplit(url)
    host = _host(url)[1]
    userinfo, at, host_header = parts.netloc.rpartition("@")
    ip = f"[{address}]" if address.version == 6 else str(address)
    netloc = userinfo + at + (ip if parts.port is None else f"{ip}:{parts.port}")
    return parts._replace(netloc=netloc).geturl(), host_header, host
