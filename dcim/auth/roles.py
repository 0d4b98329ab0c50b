"""Roles and what each may do: the permission matrix, as data, in one place.

An action is a verb of the web API or the CLI. The dashboard checks the action of every route
against the matrix; the page hides what the signed-in role may not do.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Role(StrEnum):
    """A user's or a token's role."""

    VIEWER = "viewer"  # reads the live state
    OPERATOR = "operator"  # acknowledges, shelves (short), comments
    SUPERVISOR = "supervisor"  # also takes out of service, long shelves, resets, unshelves
    ADMIN = "admin"  # also users and tokens
    AUDITOR = "auditor"  # reads, the journal and reports; no alarm actions


# actions
VIEW = "view"  # the page, /api/state, /api/events, /api/trend, /api/series, /metrics
ALARM_HISTORY = "alarm_history"  # an alarm's journal events
ACK = "ack"
SHELVE = "shelve"
COMMENT = "comment"
UNSHELVE = "unshelve"
RESET = "reset"
OUT_OF_SERVICE = "out_of_service"
RETURN_TO_SERVICE = "return_to_service"
JOURNAL_VERIFY = "journal_verify"
REPORTS = "reports"
USERS = "users"
TOKENS = "tokens"

ALARM_ACTIONS = (ACK, SHELVE, UNSHELVE, RESET, OUT_OF_SERVICE, RETURN_TO_SERVICE)

_VIEWER = frozenset({VIEW})
_OPERATOR = _VIEWER | {ALARM_HISTORY, ACK, SHELVE, COMMENT}
_SUPERVISOR = _OPERATOR | {UNSHELVE, RESET, OUT_OF_SERVICE, RETURN_TO_SERVICE, REPORTS}

PERMISSIONS: Mapping[Role, frozenset[str]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _OPERATOR,
    Role.SUPERVISOR: _SUPERVISOR,
    Role.ADMIN: _SUPERVISOR | {USERS, TOKENS, JOURNAL_VERIFY},
    Role.AUDITOR: _VIEWER | {ALARM_HISTORY, JOURNAL_VERIFY, REPORTS},
}
"""role -> the actions it may take."""

ACTIONS = frozenset().union(*PERMISSIONS.values())


def may(role: Role, action: str) -> bool:
    """Whether a role may take an action."""
    return action in PERMISSIONS[role]


def within(role: Role, of: Role) -> bool:
    """Whether every action of `role` is one `of` may take (a token never outranks its user)."""
    return PERMISSIONS[role] <= PERMISSIONS[of]
