"""The device library: profiles of common devices, written from their published register maps.

Each `<name>.yaml` beside this module holds `about:` (vendor, model family, the source document
it follows, notes) and `profile:`, exactly a site file's `profiles:` entry. A site file uses one
by name: `profiles: {meter: {library: schneider-pm5560}}` (see docs/device-library.md).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter

from dcim.config.site import Profile

LIBRARY_DIR = Path(__file__).resolve().parent
# Profile fields a site may override on a library profile; the point map stays as published.
OVERRIDABLE = ("vendor_model", "max_gap", "mode")
_PROFILE = TypeAdapter(Profile)


class About(BaseModel):
    """The header of a library file: where its map comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str
    model_family: str
    source: str
    notes: str = ""


@dataclass(frozen=True, slots=True)
class LibraryEntry:
    """One library profile: its name (the file stem), header and profile as data."""

    name: str
    about: About
    profile: dict[str, Any]

    @property
    def point_count(self) -> int:
        """Points the profile maps."""
        return len(self.profile["points"])


def _read(path: Path) -> LibraryEntry:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or set(data) != {"about", "profile"}:
        raise ValueError(f"{path}: expected exactly the keys 'about' and 'profile'")
    about = About.model_validate(data["about"])
    _PROFILE.validate_python(data["profile"])  # a library file that would not load is a bug
    return LibraryEntry(path.stem, about, data["profile"])


@cache
def library() -> dict[str, LibraryEntry]:
    """Every library profile by name, read and validated once."""
    return {p.stem: _read(p) for p in sorted(LIBRARY_DIR.glob("*.yaml"))}


def names() -> list[str]:
    """The library's profile names, sorted."""
    return sorted(library())


def unknown_name_message(name: object) -> str:
    """What to say about a name the library does not have: close matches, then all names."""
    known = names()
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown library profile {name!r}{hint} (known: {', '.join(known)})"


def resolve(entry: dict[str, Any]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """A site's `{library: NAME, ...overrides}` as a profile dict, or None and the problems
    as (field, message) pairs."""
    name = entry.get("library")
    found = library().get(name) if isinstance(name, str) else None
    if found is None:
        return None, [("library", unknown_name_message(name))]
    problems = [(key, f"a library profile takes overrides of {', '.join(OVERRIDABLE)} only, "
                      f"not {key!r} (copy it with `dcim profiles show {name}` to change more)")
                for key in entry if key != "library" and key not in OVERRIDABLE]
    if problems:
        return None, problems
    profile = copy.deepcopy(found.profile)  # the cached entry is never handed out
    profile.update({k: v for k, v in entry.items() if k != "library"})
    return profile, []
