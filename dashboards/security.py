"""The dashboard's guard: Host and Origin checks, who is asking and what they may do, CSRF,
bounded JSON bodies and the security headers of every response (docs/security.md).

One middleware (`guard`) admits a request in this order: the Host header must name this
dashboard (421: DNS rebinding), a state-changing request must come from the page's own
origin (403), the route's action must be one the caller may take (401 without a session or
token, 403 without the permission), and a POST from a cookie session must carry its CSRF
token. Handlers then read the `Identity` under `IDENTITY` and bodies with `read_json`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dcim.auth.roles import ALARM_ACTIONS, ALARM_HISTORY, VIEW
from dcim.auth.service import Authenticator, Identity

PUBLIC = "public"  # route action: anyone (the sign-in page, static files, /healthz)
SIGNED_IN = "signed_in"  # route action: anyone signed in (/api/me, /api/logout)
PAGES = frozenset({"/"})  # HTML routes: without a session, a redirect to the sign-in page
UNGUARDED_HOST = frozenset({"/healthz"})  # probes name the host by address

MAX_BODY_BYTES = 16 * 1024
MAX_JSON_DEPTH = 16
MAX_NUMBER_CHARS = 30
CSRF_HEADER = "X-CSRF-Token"
COOKIE = "dcim_session"
SECURE_COOKIE = "__Host-dcim_session"  # over TLS: the browser insists on Secure, Path=/, no Domain
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000"

# what a dashboard without `auth:` lets anyone on this machine do (the demo)
LOOPBACK_PERMISSIONS = frozenset({VIEW, ALARM_HISTORY, *ALARM_ACTIONS})


class Refused(Exception):
    """A request the dashboard will not serve: answered as {"error": message} with status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})

    def response(self) -> web.Response:
        """The JSON answer (and the connection closed after a body that was not read)."""
        response = web.json_response({"error": self.message}, status=self.status,
                                     headers=self.headers)
        if self.status in (408, 413):
            response.force_close()
        return response


@dataclass(frozen=True)
class Guard:
    """What the guard checks against, built once by create_app."""

    auth: Authenticator | None  # None: no sign-in (loopback only)
    allowed_hosts: frozenset[str]
    loopback: bool  # bound to loopback: without auth, a typed name may act
    route_actions: Mapping[str, str]  # canonical route -> action, PUBLIC or SIGNED_IN
    body_timeout_s: float = 10.0


GUARD = web.AppKey("guard", Guard)
IDENTITY = web.RequestKey("identity", Identity)


def is_loopback(host: str) -> bool:
    """Whether a bind address or name reaches this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """A Host header's name: lower case, without port, brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def tls_context(certificate: str, private_key: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 and later) from PEM files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, private_key)
    return context


# -- who is asking

def over_tls(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS (here, or at a trusted proxy in front)."""
    return _scheme(request, request.app[GUARD]) == "https"


def cookie_name(request: web.Request) -> str:
    """The session cookie's name (the __Host- prefix over TLS)."""
    return SECURE_COOKIE if over_tls(request) else COOKIE


def client_address(request: web.Request, auth: Authenticator | None) -> str:
    """The client's address: the peer, or the hop a trusted proxy forwarded for."""
    peer = request.remote or ""
    if auth is not None and auth.trusts(peer):
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not auth.trusts(hop):
                return hop
    return peer


def identify(request: web.Request, guard: Guard, touch: bool = True) -> Identity | None:
    """Who sent the request: a bearer token, a trusted proxy's user, a session cookie; None
    when nothing proves a name. Without auth: the loopback identity (the name is typed)."""
    auth = guard.auth
    if auth is None:
        permissions = LOOPBACK_PERMISSIONS if guard.loopback else frozenset({VIEW})
        return Identity("", None, permissions, "loopback")
    authorization = request.headers.get("Authorization")
    if authorization is not None:  # a bad token is refused, never retried as a cookie
        scheme, _, secret = authorization.partition(" ")
        return auth.from_token(secret.strip()) if scheme.lower() == "bearer" else None
    header = auth.config.trusted_proxy_header
    if header and header in request.headers and auth.trusts(request.remote):
        return auth.from_proxy(request.headers[header])
    session_id = request.cookies.get(cookie_name(request))
    return auth.from_session(session_id, touch) if session_id else None


def _scheme(request: web.Request, guard: Guard) -> str:
    if guard.auth is not None and guard.auth.trusts(request.remote):
        forwarded = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        if forwarded in ("http", "https"):
            return forwarded
    return request.scheme


def _host(request: web.Request, guard: Guard) -> str:
    """The Host the browser used: X-Forwarded-Host from a trusted proxy, or Host."""
    if guard.auth is not None and guard.auth.trusts(request.remote):
        forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.host


def _route_action(request: web.Request, guard: Guard) -> str:
    resource = request.match_info.route.resource
    action = guard.route_actions.get(resource.canonical if resource else "", SIGNED_IN)
    if action.startswith("{"):  # the action is a path segment: /api/alarms/{action}
        named = request.match_info.get(action.strip("{}"), "")
        return named if named in ALARM_ACTIONS else SIGNED_IN  # an unknown one: 404 later
    return action


def _admit(request: web.Request, guard: Guard) -> Identity | None:
    """The identity the request may go on with (None on public routes), or Refused."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource else ""
    host = _host(request, guard)
    if route not in UNGUARDED_HOST and host_name(host) not in guard.allowed_hosts:
        raise Refused(421, f"this dashboard does not answer to {host_name(host)[:100]!r}; "
                           "list the name in the site file's auth.allowed_hosts")
    unsafe = request.method not in SAFE_METHODS
    if unsafe:
        origin = request.headers.get("Origin")
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if origin is not None and origin != f"{_scheme(request, guard)}://{host}":
            raise Refused(403, f"cross-origin request refused (Origin {origin[:100]!r})")
        if origin is None and fetch_site not in (None, "same-origin", "none"):
            raise Refused(403, f"cross-site request refused (Sec-Fetch-Site {fetch_site[:20]!r})")
    action = _route_action(request, guard)
    identity = identify(request, guard)
    if action == PUBLIC:
        return identity
    if identity is None:
        raise Refused(401, "sign in first (a session, or Authorization: Bearer <token>)",
                      {"WWW-Authenticate": 'Bearer realm="dcim"'})
    if unsafe and identity.csrf is not None:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), identity.csrf.encode()):
            raise Refused(403, f"missing or wrong {CSRF_HEADER} header (reload the page)")
    if action != SIGNED_IN and action not in identity.permissions:
        who = identity.role.value if identity.role else "this dashboard without sign-in"
        raise Refused(403, f"{who} may not {action.replace('_', ' ')}")
    return identity


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit the request (Host, Origin, identity, CSRF, permission) or answer why not."""
    try:
        identity = _admit(request, request.app[GUARD])
        if identity is not None:
            request[IDENTITY] = identity
        return await handler(request)
    except Refused as refused:
        route = request.match_info.route.resource
        if refused.status == 401 and route is not None and route.canonical in PAGES:
            raise web.HTTPFound("/login") from None
        return refused.response()


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the security headers on every response, errors and files too."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "dcim"  # no version to look exploits up by
    if over_tls(request):
        response.headers.setdefault("Strict-Transport-Security", HSTS)


# -- bodies

def _number(text: str, kind: Callable[[str], Any]) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"numbers may have at most {MAX_NUMBER_CHARS} characters")
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text (strings skipped); linear time."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(raw: bytes) -> Any:
    """JSON with nesting and numbers bounded; ValueError says what is wrong."""
    text = raw.decode("utf-8")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text, parse_int=lambda s: _number(s, int),
                      parse_float=lambda s: _number(s, float), parse_constant=_constant)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or Refused (415, 408, 413, 400) saying why not."""
    if request.content_type != "application/json":
        # a cross-site form or text/plain "simple request" cannot set this type without a
        # CORS preflight, which this server never grants
        raise Refused(415, "Content-Type must be application/json")
    try:
        async with asyncio.timeout(request.app[GUARD].body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise Refused(408, "the body did not arrive in time") from None
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, f"the body may have at most {MAX_BODY_BYTES // 1024} KiB") from None
    try:
        doc = parse_json(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Refused(400, f"the body must be a JSON object: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise Refused(400, "the body must be a JSON object")
    return doc
