"""Host and Origin checks in front of everything the app serves (the API, the Gradio UI, extension routes).

Two browser attacks need no password on a local app, and both are refused here, before any route runs:

- DNS rebinding: a page on `evil.example` re-points its name at 127.0.0.1 and then talks to the app as a
  same-origin site. Its requests carry `Host: evil.example`, so only the names the app is served on are
  accepted: loopback names, the machine's own names and addresses with `--listen`, the share link's host
  with `--share`, and whatever `--allowed-hosts` adds (a reverse proxy's name). Anything else: 403.
- Cross-site requests (CSRF): any page can POST to `http://127.0.0.1:7860/...` (a form, or `fetch` with
  `mode: "no-cors"`; body-less POSTs such as `/sdapi/v1/interrupt` need nothing more). A browser always
  sends `Origin` with those, so a state-changing request (POST, PUT, PATCH, DELETE) whose Origin is not
  the app's own origin, or an allowed host, is refused. Requests without `Origin` (curl, Python clients)
  are not browser-driven and pass.

Written as a plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so that Gradio's streamed
responses pass through untouched.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def split_host(value: str) -> tuple[str, str]:
    """'Name:port' / '[::1]:port' / 'name' -> ('name', 'port' or ''), lower-cased, without IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = value.partition(":") if value.count(":") == 1 else (value, "", "")
    return host.rstrip("."), port


def machine_names() -> set[str]:
    """This machine's host names and interface addresses (what other machines use to reach --listen)."""
    names: set[str] = set()
    try:
        hostname = socket.gethostname().lower()
        names |= {hostname, socket.getfqdn().lower(), f"{hostname}.local"}
        for info in socket.getaddrinfo(hostname, None):
            names.add(str(info[4][0]).lower())
    except OSError:
        pass
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(addr.address.split("%", 1)[0].lower())
    except Exception:  # noqa: BLE001 - psutil missing or unsupported: the socket names above remain
        log.debug("could not list network interfaces", exc_info=True)
    return {n for n in names if n}


class HostPolicy:
    """Which Host names are accepted (mutable: the share host is added once the tunnel is up)."""

    def __init__(self, *, listen: bool = False, extra: list[str] | tuple[str, ...] = ()):
        self.names: set[str] = set(LOOPBACK_NAMES)
        self.listen = listen
        if listen:
            self.names |= machine_names()
        self.extra: set[str] = {split_host(h)[0] for h in extra if h.strip()}
        self.names |= self.extra

    @classmethod
    def from_args(cls, args) -> "HostPolicy":
        hosts: list[str] = []
        for item in getattr(args, "allowed_hosts", None) or []:
            hosts += [h for h in item.split(",") if h.strip()]
        return cls(listen=bool(getattr(args, "listen", False)), extra=hosts)

    def allow(self, host: str) -> None:
        """Add a name the app is served on (e.g. the share link's host)."""
        name = split_host(host)[0]
        self.names.add(name)
        self.extra.add(name)

    def host_ok(self, host: str) -> bool:
        name = split_host(host)[0]
        if name in self.names:
            return True
        if self.listen:
            # An IP literal cannot be rebound by a foreign page (rebinding needs the attacker's name); with
            # --listen the app is reached on whatever address routes to this machine (NAT, containers).
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    def origin_ok(self, origin: str, host_header: str) -> bool:
        """The request's own origin (same scheme-less host:port as Host), or an explicitly allowed host."""
        if not origin or origin == "null":
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        netloc = parts.netloc.lower()
        if netloc == host_header.strip().lower():
            return True
        name = split_host(netloc)[0]
        return name in self.extra


class HostOriginGuard:
    """ASGI middleware enforcing a HostPolicy on every HTTP request (lifespan passes through)."""

    def __init__(self, app, policy: HostPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.policy.host_ok(host):
            return await _refuse(send, scope, f"Host {split_host(host)[0]!r} is not a name this app is served "
                                              "on; start it with --allowed-hosts NAME to accept it")
        method = scope.get("method", "GET").upper()
        origin = headers.get("origin")
        if (method in STATE_CHANGING or scope["type"] == "websocket") and origin is not None \
                and not self.policy.origin_ok(origin, host):
            return await _refuse(send, scope, "cross-origin request refused: this page is not the app's own "
                                              "(start it with --allowed-hosts NAME to accept another origin)")
        return await self.app(scope, receive, send)


async def _refuse(send, scope, message: str) -> None:
    log.warning("refused %s %s: %s", scope.get("method", ""), scope.get("path", ""), message)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
