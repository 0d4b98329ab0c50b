"""An operator action's request, checked: pure, so tables of bodies test it without a server.

The journal's user is the signed-in identity; a `user` field in the body is ignored then. A
dashboard without sign-in (loopback only) takes the name typed into the page, checked like
a user name. Comments and reasons are one line of visible text; minutes a positive, finite
number within what the role may ask for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dcim.auth.names import name_problem, text_problem
from dcim.auth.roles import OUT_OF_SERVICE, SHELVE
from dcim.auth.service import Identity
from dcim.dashboards.security import Refused

MAX_TEXT = 500
WHAT = {SHELVE: "shelve", OUT_OF_SERVICE: "take an alarm out of service"}


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One operator action to hand to the alarm view."""

    action: str
    alarm_id: str
    user: str
    text: str  # the comment, or the reason of a shelve or out of service
    duration_s: float | None  # shelve and out of service only


def _duration_s(action: str, body: Mapping[str, Any], identity: Identity,
                max_s: float | None) -> float:
    minutes = body.get("minutes")
    if not isinstance(minutes, int | float) or isinstance(minutes, bool):
        raise Refused(400, f"minutes must be a number (how long to {WHAT[action]})")
    if not math.isfinite(minutes) or minutes <= 0:
        raise Refused(400, "minutes must be a positive, finite number")
    seconds = float(minutes) * 60.0
    if max_s is not None and seconds > max_s:
        who = identity.role.value if identity.role else "you"
        raise Refused(400, f"{who} may {WHAT[action]} for at most {max_s / 60:g} minutes")
    return seconds


def action_request(action: str, body: Mapping[str, Any], identity: Identity, *,
                   shelve_max_s: float | None = None,
                   out_of_service_max_s: float | None = None) -> ActionRequest:
    """The checked request, or Refused(400) saying which field is wrong and why."""
    alarm_id = body.get("alarm_id")
    problem = text_problem(alarm_id, "alarm_id", MAX_TEXT)
    if problem or not alarm_id:
        raise Refused(400, problem or "alarm_id must name an alarm")
    text = body.get("reason", body.get("comment", ""))
    problem = text_problem(text, "comment/reason", MAX_TEXT)
    if problem:
        raise Refused(400, problem)
    user: object
    if identity.signed_in:
        user = identity.name
    else:
        user = body.get("user")
        problem = name_problem(user, "user")
        if problem:
            raise Refused(400, problem)
    duration_s = None
    if action == SHELVE:
        duration_s = _duration_s(action, body, identity, shelve_max_s)
    elif action == OUT_OF_SERVICE:
        duration_s = _duration_s(action, body, identity, out_of_service_max_s)
    assert isinstance(alarm_id, str) and isinstance(user, str) and isinstance(text, str)
    return ActionRequest(action, alarm_id, user, text, duration_s)
