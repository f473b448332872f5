"""Who may use the app: credentials from --auth / --auth-file / --api-auth, and exposure safety.

An app reachable from other machines (`--listen`, `--share`) never runs open by accident: without
credentials a random password is generated for user `admin` and printed once on the console; only
`--insecure-no-auth` runs open. The UI uses Gradio's login (`AccessControl.gradio_auth`), API routes
use HTTP Basic through `AccessControl.api_dependency()`; both check the same `check()`.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

GENERATED_USER = "admin"


class AuthConfigError(ValueError):
    """Malformed --auth / --auth-file value; the message says which entry."""


def is_exposed(args: argparse.Namespace) -> bool:
    """Reachable from other machines: --listen or --share. Extension install is disabled then."""
    return bool(getattr(args, "listen", False) or getattr(args, "share", False))


def parse_credentials(text: str, source: str = "--auth") -> dict[str, str]:
    """'user:pass,user2:pass2' (commas and/or newlines) → {user: pass}. Passwords may contain ':'."""
    users: dict[str, str] = {}
    for raw in text.replace("\n", ",").split(","):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise AuthConfigError(f"{source}: entry {entry.split(':')[0]!r}... must be user:password")
        users[user.strip()] = password
    return users


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header. The credentials are decoded as UTF-8
    (RFC 7617's charset, what curl, requests and browsers send), else Latin-1; FastAPI's HTTPBasic only
    accepts ASCII, so a non-ASCII password could log in to the UI but never to the API."""
    scheme, _, param = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not param:
        return None
    try:
        raw = base64.b64decode(param.strip(), validate=True)
    except (ValueError, binascii.Error):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


@dataclass
class AccessControl:
    """Credentials for the UI and for the API (the API's are --api-auth, else the UI's)."""

    users: dict[str, str] = field(default_factory=dict)
    api_users: dict[str, str] = field(default_factory=dict)
    generated_password: str | None = None   # set when a password was generated for `admin`
    open_reason: str = ""                   # why the app runs without credentials

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    @property
    def api_enabled(self) -> bool:
        return bool(self.api_users)

    def check(self, username: str | None, password: str | None, *, api: bool = False) -> bool:
        """Constant-time comparison against the configured users."""
        table = self.api_users if api else self.users
        if not table:
            return True
        if username is None or password is None:
            return False
        ok = False
        for user, pw in table.items():
            # compare every entry so timing does not reveal which user exists
            match = hmac.compare_digest(user.encode(), username.encode()) & \
                hmac.compare_digest(pw.encode(), password.encode())
            ok = ok or match
        return ok

    def gradio_auth(self):
        """The `auth=` value for Gradio (None when open)."""
        if not self.enabled:
            return None
        return lambda username, password: self.check(username, password)

    def api_dependency(self):
        """A FastAPI dependency: HTTP Basic against the API credentials, 401 otherwise."""
        from fastapi import HTTPException, Request, status

        def require(request: Request) -> str | None:
            if not self.api_enabled:
                return None
            credentials = basic_credentials(request.headers.get("authorization"))
            if credentials is None or not self.check(*credentials, api=True):
                raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail="Incorrect username or password",
                                    headers={"WWW-Authenticate": "Basic"})
            return credentials[0]

        require.__annotations__["request"] = Request   # the class itself: this module's annotations are strings
        return require

    def console_notice(self) -> str | None:
        if self.generated_password:
            return (f"The app is reachable from other machines and no --auth was given: log in as "
                    f"user '{GENERATED_USER}' with password: {self.generated_password}\n"
                    f"(generated for this run only; pass --auth user:pass for your own, or --insecure-no-auth "
                    f"to run open)")
        if self.open_reason:
            return self.open_reason
        return None


def access_control(args: argparse.Namespace) -> AccessControl:
    """Build the access rules from the command line (raises AuthConfigError on a bad value)."""
    users: dict[str, str] = {}
    if getattr(args, "auth", None):
        users.update(parse_credentials(args.auth, "--auth"))
    if getattr(args, "auth_file", None):
        path = Path(args.auth_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise AuthConfigError(f"--auth-file {path}: {err.strerror or err}") from None
        users.update(parse_credentials(text, f"--auth-file {path}"))
    api_users = parse_credentials(args.api_auth, "--api-auth") if getattr(args, "api_auth", None) else {}
    ac = AccessControl(users=users, api_users=api_users or dict(users))
    if not ac.enabled and is_exposed(args):
        if getattr(args, "insecure_no_auth", False):
            ac.open_reason = ("WARNING: --insecure-no-auth: the app is reachable from other machines with NO "
                              "password; anyone who can reach it can use it")
        else:
            password = secrets.token_urlsafe(12)
            ac.users = {GENERATED_USER: password}
            if not api_users:
                ac.api_users = dict(ac.users)
            ac.generated_password = password
    return ac
