"""The `auth:` section of a site file: who may sign in to the dashboard and the API, and how.

Filled in by the identity work of issue 10 (users, roles, sessions, tokens, the network the
dashboard may be exposed on). Absent: the dashboard only binds to loopback.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AuthConfig(BaseModel):
    """Sign-in and roles for the dashboard and the HTTP API."""

    model_config = ConfigDict(extra="forbid", frozen=True)
