"""Who a request is: sign-in with a password, sessions, API tokens, an authenticating proxy.

`Authenticator` answers with an `Identity` (a name, a role and its permissions) or None; the
web edge decides what to answer (401, 403, 429). Every refused sign-in is logged (the name
as typed, the client address and why; never the password), and sign-in is rate limited per
user and per client address before any password is hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from dcim.auth.passwords import MAX_PASSWORD
from dcim.auth.ratelimit import RateLimit
from dcim.auth.roles import OUT_OF_SERVICE, PERMISSIONS, Role, may
from dcim.auth.sessions import Session, Sessions
from dcim.auth.store import TOKEN_PREFIX, User, UserStore
from dcim.config.auth import AuthConfig

log = logging.getLogger(__name__)

HASHES_AT_ONCE = 4  # Argon2 takes 64 MiB and tens of ms a hash: a burst of sign-ins queues


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking, with what role and permissions, and how they proved it."""

    name: str  # journaled as the user of every action
    role: Role | None  # None: no sign-in on this dashboard (loopback demo)
    permissions: frozenset[str]
    via: str  # "session", "token", "proxy" or "loopback"
    session_id: str | None = None
    csrf: str | None = None  # what a POST must carry in X-CSRF-Token (cookie and proxy)
    token: str | None = None  # the API token's name

    @property
    def signed_in(self) -> bool:
        """Whether the name was proven (not typed into the request)."""
        return self.via != "loopback"


class SignInRefused(Exception):
    """A refused sign-in: a wrong name or password (401), or too many failures (429)."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _printable(text: str) -> str:
    """A client-chosen string made safe for a log line (no newlines or escapes), shortened."""
    return ascii(text[:80])


class Authenticator:
    """Sign-in, sessions, tokens and limits over a user store; the clock is passed in."""

    def __init__(self, config: AuthConfig, store: UserStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.store = config, store
        self.sessions = Sessions(config.session_idle_s, config.session_max_s, clock)
        self._failures_by_user = RateLimit(config.login_failures, config.login_window_s, clock)
        self._failures_by_client = RateLimit(config.login_failures, config.login_window_s, clock)
        self._actions = RateLimit(config.actions_per_minute, 60.0, clock)
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self._secret = secrets.token_bytes(32)  # the proxy identities' CSRF tokens
        self._hashing = asyncio.Semaphore(HASHES_AT_ONCE)

    # -- sign-in

    async def sign_in(self, name: str, password: str, client: str) -> tuple[Session, User]:
        """A new session for a user whose password matches; SignInRefused otherwise."""
        user_key = name[:100].casefold()
        wait = max(self._failures_by_user.retry_after(user_key),
                   self._failures_by_client.retry_after(client))
        if wait:
            log.warning("sign-in refused", extra={"user": _printable(name), "client": client,
                                                  "reason": "too many failures",
                                                  "retry_after_s": round(wait, 1)})
            self.store.record_sign_in(name, client, False, "too many failures")
            raise SignInRefused("too many failed sign-ins: try again later", wait)
        # counted before the (slow) hash: concurrent guesses cannot slip past the limit
        self._failures_by_user.hit(user_key)
        self._failures_by_client.hit(client)
        stored = self.store.password_hash(name)
        passwords = self.store.passwords
        async with self._hashing:
            ok = await asyncio.to_thread(passwords.verify, stored, password)
        user = self.store.user(name)
        if not ok or user is None or user.disabled:
            reason = ("unknown user" if user is None else "user disabled" if user.disabled
                      else "wrong password")
            log.warning("sign-in refused", extra={"user": _printable(name), "client": client,
                                                  "reason": reason})
            self.store.record_sign_in(name, client, False, reason)
            raise SignInRefused("wrong user name or password")
        self._failures_by_user.clear(user_key)
        self._failures_by_client.forget_one(client)
        if stored is not None and len(password) <= MAX_PASSWORD and passwords.needs_rehash(stored):
            async with self._hashing:
                fresh = await asyncio.to_thread(passwords.hash, password)
            self.store.set_password_hash(user.name, fresh)
        log.info("signed in", extra={"user": user.name, "role": user.role.value,
                                     "client": client})
        self.store.record_sign_in(user.name, client, True)
        return self.sessions.create(user.name), user

    def sign_out(self, identity: Identity) -> None:
        """End the identity's session (a token or a proxy identity has none)."""
        if identity.session_id is not None:
            self.sessions.drop(identity.session_id)
            log.info("signed out", extra={"user": identity.name})

    # -- who a request is

    def from_session(self, session_id: str, touch: bool = True) -> Identity | None:
        """The identity of a session cookie (None: unknown, expired, user disabled)."""
        session = self.sessions.get(session_id, touch)
        if session is None:
            return None
        user = self.store.user(session.user)
        if user is None or user.disabled:
            self.sessions.drop(session_id)
            return None
        return Identity(user.name, user.role, PERMISSIONS[user.role], "session",
                        session_id=session.id, csrf=session.csrf)

    def from_token(self, secret: str) -> Identity | None:
        """The identity of a bearer token (None: unknown, revoked, user disabled)."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        found = self.store.token(secret)
        if found is None:
            return None
        token, user = found
        # a token never does more than its user may now
        permissions = PERMISSIONS[token.role] & PERMISSIONS[user.role]
        return Identity(user.name, token.role, permissions, "token", token=token.name)

    def from_proxy(self, name: str) -> Identity | None:
        """The identity a trusted proxy's header names (an enabled local user), or None."""
        user = self.store.user(name)
        if user is None or user.disabled:
            log.warning("proxy named an unknown or disabled user",
                        extra={"user": _printable(name)})
            return None
        csrf = hmac.new(self._secret, b"proxy\0" + user.name.encode(), hashlib.sha256)
        return Identity(user.name, user.role, PERMISSIONS[user.role], "proxy",
                        csrf=csrf.hexdigest())

    def trusts(self, address: str | None) -> bool:
        """Whether a peer address is one of the trusted proxies."""
        if not address or not self._proxies:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

    # -- limits

    def action_wait(self, identity: Identity) -> float:
        """Seconds before the identity may act again (0: counted, go ahead)."""
        wait = self._actions.retry_after(identity.name)
        if not wait:
            self._actions.hit(identity.name)
        return wait

    def shelve_max_s(self, role: Role | None) -> float | None:
        """The longest shelve a role may ask for (None: the role may not shelve)."""
        return None if role is None else self.config.shelve_max_s.get(role)

    def out_of_service_max_s(self, role: Role | None) -> float | None:
        """The longest out-of-service a role may ask for (None: it may not)."""
        if role is None or not may(role, OUT_OF_SERVICE):
            return None
        return self.config.out_of_service_max_s
