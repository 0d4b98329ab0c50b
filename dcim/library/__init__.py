"""The device library: profiles of common devices, written from their published register maps.

Each `<name>.yaml` beside this module holds `about:` (vendor, model family, the source document
it follows, notes), `profile:`, exactly a site file's `profiles:` entry, and optionally
`identify:`, how `dcim discover modbus` recognises the device (dcim/library/identify.py). A site
file uses one by name: `profiles: {meter: {library: schneider-pm5560}}` (docs/device-library.md).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from dcim.config.site import Profile
from dcim.library.identify import ORDERS, Identify, Recognised

LIBRARY_DIR = Path(__file__).resolve().parent
# Profile fields a site may override on a library profile; the point map stays as published,
# except `order` (Modbus), the byte order of every register point: the same meter model is
# wired word-swapped by some gateways and set so by some sites.
OVERRIDABLE = ("vendor_model", "max_gap", "mode", "order")
REGISTER_TABLES = ("holding", "input")
_ONE_REGISTER = ("int16", "uint16", "sunssf", "bool")
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
    identify: Identify | None = None

    @property
    def point_count(self) -> int:
        """Points the profile maps."""
        return len(self.profile["points"])

    @property
    def order(self) -> str:
        """The byte order of the profile's multi-register points ("ABCD" when it has none)."""
        orders = {p.get("order", "ABCD") for p in self.profile["points"]
                  if p.get("table") in REGISTER_TABLES and p.get("type", "uint16") not in _ONE_REGISTER}
        return orders.pop() if len(orders) == 1 else "ABCD"


def _read(path: Path) -> LibraryEntry:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not {"about", "profile"} <= set(data) <= {
            "about", "profile", "identify"}:
        raise ValueError(f"{path}: expected the keys 'about' and 'profile', and optionally "
                         "'identify'")
    about = About.model_validate(data["about"])
    _PROFILE.validate_python(data["profile"])  # a library file that would not load is a bug
    try:
        identify = Identify.model_validate(data["identify"]) if "identify" in data else None
    except ValidationError as exc:
        raise ValueError(f"{path}: identify: {exc}") from None
    return LibraryEntry(path.stem, about, data["profile"], identify)


@cache
def library() -> dict[str, LibraryEntry]:
    """Every library profile by name, read and validated once."""
    return {p.stem: _read(p) for p in sorted(LIBRARY_DIR.glob("*.yaml"))}


def identifiers() -> list[tuple[str, Identify]]:
    """(name, identify rules) of every library entry that declares how it is recognised."""
    return [(name, e.identify) for name, e in library().items() if e.identify is not None]


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
    order = entry.get("order")
    if "order" in entry and found.profile["protocol"] != "modbus":
        problems.append(("order", f"order is a Modbus setting; {name} is an "
                                  f"{found.profile['protocol']} profile"))
    elif "order" in entry and order not in ORDERS:
        problems.append(("order", f"expected one of {', '.join(ORDERS)} (the byte order of "
                                  f"every register point of a Modbus profile), not {order!r}"))
    if problems:
        return None, problems
    profile = copy.deepcopy(found.profile)  # the cached entry is never handed out
    profile.update({k: v for k, v in entry.items() if k not in ("library", "order")})
    if order is not None:
        for point in profile["points"]:
            if point.get("table") in REGISTER_TABLES:
                point["order"] = order
    return profile, []


def draft_entry(found: Recognised, orders: list[str] | None, seen: str = ""
                ) -> tuple[dict[str, Any], list[str], str]:
    """A discovery draft's profile entry for a recognised device: `{library: NAME}`, with an
    `order:` override when the order check read a plausible value in another order only;
    the comment lines saying why; a name hint for the profile id."""
    entry = library()[found.name]
    profile: dict[str, Any] = {"library": found.name}
    notes = [f"library profile {found.name} ({entry.about.model_family}): {found.reason}",
             f"device_type {entry.profile['device_type']} and its {entry.point_count} points "
             f"come from the library (`dcim profiles show {found.name}`)"]
    hint = found.name
    if orders is None:
        return profile, notes, hint
    if entry.order in orders:
        notes.append(f"byte order {entry.order}, as the profile assumes: {seen}")
    elif len(orders) == 1:
        profile["order"] = orders[0]
        hint = f"{found.name}-{orders[0].lower()}"
        notes.append(f"order: {orders[0]} overrides the profile's {entry.order} for every "
                     f"register point: {seen}")
    else:
        told = "no byte order gives a plausible value" if not orders else "byte order not told apart"
        notes.append(f"TODO: {told} ({seen}); the profile assumes "
                     f"{entry.order}: compare a value with the device's display and set "
                     f"order: ({', '.join(ORDERS)}) beside library: if it differs")
    return profile, notes, hint
