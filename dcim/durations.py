"""Durations as people write them: '90s', '15m', '2h', '30d' (or a number of seconds).

One parser for every place that takes one: fault scenarios, `dcim query`, `/api/series`,
the CLI's --backfill and --duration options.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """'90s', '15m', '2h', '30d' or a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration such as 30s, 15m, 2h or 30d, got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
