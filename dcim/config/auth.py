"""The `auth:` section of a site file: who may sign in to the dashboard and the API, and how.

With it, every page and API route but the sign-in page, static files and /healthz needs a
session (signed in with a local user's password) or an API token, and the role of the user
decides what they may do (dcim/auth/roles.py). Without it the dashboard serves loopback only.
See docs/security.md.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dcim.auth.roles import SHELVE, Role, may

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_SHELVE_MAX_S = {Role.OPERATOR: 2 * 3600.0, Role.SUPERVISOR: 12 * 3600.0,
                        Role.ADMIN: 12 * 3600.0}
_HOST = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?"
                   r"|[0-9a-f:.]+)$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_NOT_A_PROXY_HEADER = {"authorization", "cookie", "host", "origin", "x-csrf-token"}


class AuthConfig(BaseModel):
    """Sign-in and roles for the dashboard and the HTTP API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users_db: str | None = Field(
        None, description="the users and API tokens file (SQLite, created 0600); "
                          "default var/auth-<site>.sqlite. Edit it with `dcim users`")
    session_idle_s: float = Field(
        8 * 3600.0, gt=0, le=7 * 86400,
        description="a signed-in browser is signed out after this long without a request")
    session_max_s: float = Field(
        12 * 3600.0, gt=0, le=30 * 86400,
        description="and this long after it signed in, however busy (one shift)")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_NAMES),
        description="the names (and addresses) the dashboard answers to in the Host header, "
                    "without port; any other gets 421, which defeats DNS rebinding. The "
                    "address given to --host is allowed as well")
    trusted_proxy_header: str | None = Field(
        None, description="a header naming the signed-in user, set by an authenticating "
                          "reverse proxy (e.g. X-Forwarded-User); believed only from "
                          "trusted_proxies, and the name must be an enabled local user")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of reverse proxies whose "
                    "trusted_proxy_header and X-Forwarded-For, -Proto and -Host are believed")
    tls_certificate: str | None = Field(
        None, description="PEM certificate (chain) file: the dashboard serves HTTPS with it")
    tls_private_key: str | None = Field(
        None, description="PEM private key file of tls_certificate")
    shelve_max_s: dict[Role, float] = Field(
        default_factory=lambda: dict(DEFAULT_SHELVE_MAX_S),
        description="longest shelve per role (operator 2 h, supervisor and admin 12 h); "
                    "the alarms section's max_shelve_s still bounds every shelve")
    out_of_service_max_s: float = Field(
        7 * 86400.0, gt=0, le=366 * 86400,
        description="longest a supervisor (or admin) may take an alarm out of service")
    actions_per_minute: int = Field(
        30, ge=1, le=10_000, description="alarm actions one user may take per minute (429 beyond)")
    login_failures: int = Field(
        5, ge=1, le=1000, description="failed sign-ins per user, and per client address, "
                                      "within login_window_s before sign-in answers 429")
    login_window_s: float = Field(300.0, gt=0, le=86400,
                                  description="the window of login_failures")

    def users_file(self, site_id: str) -> str:
        """The users file: users_db, or var/auth-<site>.sqlite."""
        return self.users_db or f"var/auth-{site_id}.sqlite"

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        out = []
        for host in hosts:
            name = host.strip().lower().strip("[]")
            if not name or not _HOST.match(name):
                raise ValueError(f"{host!r} is not a host name or address (no scheme or port)")
            out.append(name.rstrip("."))
        return out

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an address or network (CIDR)") from None
        return proxies

    @field_validator("trusted_proxy_header")
    @classmethod
    def _header(cls, header: str | None) -> str | None:
        if header is not None and (not _HEADER.match(header)
                                   or header.lower() in _NOT_A_PROXY_HEADER):
            raise ValueError(f"{header!r} cannot name the signed-in user")
        return header

    @field_validator("shelve_max_s")
    @classmethod
    def _shelve(cls, limits: dict[Role, float]) -> dict[Role, float]:
        for role, seconds in limits.items():
            if not may(role, SHELVE):
                raise ValueError(f"a {role} may not shelve at all")
            if not 0 < seconds <= 7 * 86400:
                raise ValueError(f"{role}: {seconds:g} s is not in (0, 7 days]")
        return {**DEFAULT_SHELVE_MAX_S, **limits}

    @model_validator(mode="after")
    def _pairs(self) -> AuthConfig:
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("tls_certificate and tls_private_key go together")
        if self.trusted_proxy_header and not self.trusted_proxies:
            raise ValueError("trusted_proxy_header needs trusted_proxies (the proxies' addresses)")
        return self
