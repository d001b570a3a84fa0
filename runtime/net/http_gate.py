"""The HTTP side of `mio-agent serve`: the Host and Origin checks before a WebSocket opens, and the browser page."""

from __future__ import annotations

import contextlib
import http
import ipaddress
import mimetypes
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from mio_agent.config import ServerConfig

__all__ = ["LOOPBACK", "WEB_ROOT", "WS_PATH", "HttpGate", "close_reason"]

WS_PATH = "/ws"
"""Where clients open the WebSocket; every other path is the browser page's files."""
WEB_ROOT = Path(__file__).parent / "web"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _is_ws(request: Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _host_name(authority: str) -> str:
    """The host of a Host header (or of an Origin without its scheme): lower case, no port, no brackets."""
    value = authority.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    if sep and ":" not in name and (port.isdigit() or not port):
        value = name
    return value.rstrip(".")


def close_reason(text: str) -> str:
    """The start of `text` that fits a close frame: at most 123 bytes of UTF-8, whole characters
    (an error message may quote what the client sent, in any script)."""
    return text.encode()[:123].decode("utf-8", "ignore")


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HttpGate:
    """Decides each HTTP request before any WebSocket exists: a refusal, the page's files, or on to the
    WebSocket handshake (sessions are admitted later, at the hello). `port` is set once bound."""

    def __init__(self, cfg: ServerConfig, web_root: Path = WEB_ROOT) -> None:
        self.cfg = cfg
        self.web_root = web_root
        self.port = 0
        self.allowed_hosts = frozenset(_host_name(h) for h in cfg.allowed_hosts)
        self.allowed_origins = frozenset(o.strip().lower().rstrip("/") for o in cfg.allowed_origins)

    def host_ok(self, request: Request) -> bool:
        """Without a token, only names that reach this machine's loopback (or configured ones) may be
        in Host: a DNS-rebound name (evil.example pointing at 127.0.0.1) is refused."""
        if self.cfg.token:
            return True  # the token is the check
        host = request.headers.get("Host")
        if host is None:
            return False
        name = _host_name(host)
        return _is_loopback(name) or name in self.allowed_hosts

    def own_origins(self, connection: ServerConnection) -> set[str]:
        """The Origins of pages this server itself serves: from the bound address, the address the
        client reached, loopback names and `allowed_hosts`; never from the request's Host header."""
        hosts = {"localhost", "127.0.0.1", "::1", self.cfg.host, *self.allowed_hosts}
        local = connection.local_address
        if local:
            hosts.add(str(local[0]))
            with contextlib.suppress(ValueError):
                mapped = ipaddress.ip_address(str(local[0]))
                if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
                    hosts.add(str(mapped.ipv4_mapped))
        origins = set()
        for host in hosts - {"", "0.0.0.0", "::"}:
            shown = f"[{host}]" if ":" in host else host
            for scheme, default_port in (("http", 80), ("https", 443)):
                origins.add(f"{scheme}://{shown}:{self.port}")
                if self.port == default_port:
                    origins.add(f"{scheme}://{shown}")
        return origins

    def origin_ok(self, request: Request, connection: ServerConnection) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: the Host check (no token) or the token is the check
        origin = origin.strip().lower().rstrip("/")
        return origin in self.allowed_origins or origin in self.own_origins(connection)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.host_ok(request):
            return connection.respond(
                http.HTTPStatus.FORBIDDEN,
                "this Host is not allowed: use localhost or a loopback address, or add it to "
                "server.allowed_hosts\n",
            )
        path = request.path.split("?", 1)[0]
        if _is_ws(request):
            if path != WS_PATH:
                return connection.respond(http.HTTPStatus.NOT_FOUND, f"the WebSocket is at {WS_PATH}\n")
            if not self.origin_ok(request, connection):
                return connection.respond(http.HTTPStatus.FORBIDDEN, "this Origin may not connect\n")
            return None  # sessions are admitted at the hello, where a resume is known
        return self.static(path)

    def static(self, path: str) -> Response:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        file = (self.web_root / name).resolve()
        if self.web_root.resolve() not in file.parents or not file.is_file():
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain")]), b"not found\n")
        body = file.read_bytes()
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        headers = Headers(
            [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]
        )
        return Response(200, "OK", headers, body)
