"""Config errors that name the file, the line, the field path and what was expected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """('halls', 0, 'rows', 2, 'feed_a') -> 'halls[0].rows[2].feed_a'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a site file."""

    file: str
    line: int | None
    loc: Loc
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {format_loc(self.loc)}: {self.message}"


class ConfigError(Exception):
    """A site file was rejected; holds every issue found, not just the first."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''} in site config"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues))
