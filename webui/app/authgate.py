"""Credentials on every route the app serves outside Gradio, and a limit on password guessing.

Routes on the FastAPI app itself (the /sdapi/v1 router, /docs and /openapi.json, whatever an extension
adds through `add_api_route` or directly on the app in `app_started`) need HTTP Basic with the API
credentials when they are set: the check is made here, per request, against the app's route table at
that moment, so a route added late is covered too. With `--api-auth` alone (no UI login) Gradio's
programmatic endpoints (`/gradio_api/call/...`) need the same credentials. The UI's own login stays
Gradio's.

Failed logins (Gradio's /login and HTTP Basic) are counted per client address: after LOGIN_FAILURES
within LOGIN_WINDOW seconds that address gets 429 until the window has passed.
"""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque

from .auth import AccessControl, basic_credentials

LOGIN_FAILURES = 10
LOGIN_WINDOW = 60.0
PROGRAMMATIC_UI = ("/gradio_api/call/",)


class LoginLimiter:
    """Failed attempts per client address in a sliding window."""

    def __init__(self, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW):
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures[client]
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def blocked_for(self, client: str) -> float:
        """Seconds until `client` may try again (0 = now)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.limit:
                if not times:
                    self._failures.pop(client, None)
                return 0.0
            return max(1.0, self.window - (now - times[0]))

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())


class AuthGate:
    """ASGI middleware: HTTP Basic for the app's own routes, 429 after too many failed logins."""

    def __init__(self, app, access: AccessControl, router, limiter: LoginLimiter | None = None):
        self.app = app
        self.access = access
        self.router = router          # the FastAPI app's router: its non-Mount routes are "API" routes
        self.limiter = limiter or LoginLimiter()

    def _needs_basic(self, scope) -> bool:
        if not self.access.api_enabled:
            return False
        from starlette.routing import Match, Mount

        path = scope.get("path", "")
        if not self.access.enabled and path.startswith(PROGRAMMATIC_UI):
            return True
        for route in self.router.routes:
            if isinstance(route, Mount):
                continue
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        is_login = scope.get("method") == "POST" and scope.get("path", "").endswith("/login")
        if self._needs_basic(scope):
            wait = self.limiter.blocked_for(client)
            if wait:
                return await _answer(send, 429, "too many failed logins; try again later", wait)
            headers = dict(scope.get("headers", []))
            credentials = basic_credentials(headers.get(b"authorization", b"").decode("latin-1"))
            if credentials is None or not self.access.check(*credentials, api=True):
                if credentials is not None:
                    self.limiter.failed(client)
                return await _answer(send, 401, "Incorrect username or password")
            return await self.app(scope, receive, send)
        if not is_login:
            return await self.app(scope, receive, send)
        wait = self.limiter.blocked_for(client)
        if wait:
            return await _answer(send, 429, "too many failed logins; try again later", wait)

        async def watch(message):
            if message["type"] == "http.response.start" and message["status"] in (400, 401, 403):
                self.limiter.failed(client)
            await send(message)

        return await self.app(scope, receive, watch)


async def _answer(send, status: int, message: str, retry_after: float | None = None) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Basic"))
    if retry_after:
        headers.append((b"retry-after", str(int(retry_after + 0.999)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
