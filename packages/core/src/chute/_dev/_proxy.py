"""Cortex's in-cluster gateway address under ``chute dev``: an HTTP proxy for the containers.

A Cortex container chains to another API by Cortex's own URL,
``http://ingressgateway-apis.istio-system.svc.cluster.local/<api>`` (the seed's example). On a
cluster ``chute render`` gives that name to chute's gateway; on one machine, without root, no
host name can be added, so ``chute dev`` runs this small forward proxy and hands it to each
container as ``HTTP_PROXY`` (``NO_PROXY`` keeps local addresses direct). Requests for Cortex's
address go to the local gateway; every other plain-HTTP request is passed on to where it was
going, unchanged, so nothing else a container calls is affected. (HTTPS is not proxied: Cortex's
address is plain HTTP.)

Run as ``python -m chute._dev._proxy --port N --gateway URL``; served by hypercorn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Cortex's in-cluster gateway host, as containers written for Cortex call it.
CORTEX_HOST = "ingressgateway-apis.istio-system.svc.cluster.local"
#: Also reached by its shorter forms inside a cluster.
CORTEX_HOSTS = frozenset(
    {CORTEX_HOST, "ingressgateway-apis.istio-system.svc", "ingressgateway-apis.istio-system"}
)
#: Hop-by-hop and proxy headers, never passed on (RFC 9110, section 7.6.1).
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def proxy_env(proxy_url: str) -> dict[str, str]:
    """The environment that sends a container's plain-HTTP calls through the proxy."""
    local = "localhost,127.0.0.1,::1"
    return {"HTTP_PROXY": proxy_url, "http_proxy": proxy_url, "NO_PROXY": local, "no_proxy": local}


def target_of(scope: Scope) -> tuple[str, str]:
    """(host[:port], path?query) of a proxied request: the absolute-form target when the
    server hands it over whole, else the Host header and the path."""
    path: str = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if "://" in path:
        parts = urlsplit(path)
        authority, path = parts.netloc, parts.path or "/"
        query = query or parts.query
    else:
        authority = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "localhost"
        )
    return authority, path + (f"?{query}" if query else "")


class CortexAddressProxy:
    """The ASGI proxy: Cortex's address → the gateway; anything else → where it was going."""

    def __init__(self, gateway_url: str) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        # To the gateway, directly; elsewhere, through the developer's own proxy if any (this
        # process has chute dev's environment, not the containers').
        self.gateway = httpx.AsyncClient(timeout=None, trust_env=False)
        self.outside = httpx.AsyncClient(timeout=None, trust_env=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.gateway.aclose()
                    await self.outside.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        authority, path = target_of(scope)
        host = authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority
        if host.lower() in CORTEX_HOSTS:
            client, url = self.gateway, self.gateway_url + path
        else:
            client, url = self.outside, f"http://{authority}{path}"
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        request = client.build_request(scope["method"], url, headers=headers, content=body())
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            problem = {"error": {"type": "bad_gateway", "message": str(exc)}}
            await _answer(send, 502, json.dumps(problem).encode())
            return
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": out})  # fmt: skip
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chute._dev._proxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--gateway", required=True, help="the gateway's URL")
    args = parser.parse_args(argv)

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = None
    app = CortexAddressProxy(args.gateway)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(app, config))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
