"""How `dcim discover modbus` recognises a library device: the `identify:` block of a library file.

A library file may say how its device introduces itself: by Modbus device identification
(function 43/14: vendor, product code, model name) or by a SunSpec model at a fixed address.
`recognise` is pure: it takes what a scan found and the library, and names the first entry
whose rules all hold, with the reason in words for the draft's comment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# 43/14 objects a `product` pattern is searched in (the names discovery gives them)
PRODUCT_OBJECTS = ("product_code", "model_name", "product_name")
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
    return value


class DeviceIdRule(BaseModel):
    """Function 43/14 answers: each pattern given must be found (case-insensitive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str = Field(description="regular expression searched in the VendorName object (0)")
    product: str = Field(description="regular expression searched in ProductCode (1), "
                         "ProductName (4) or ModelName (5): one of them must match")

    _check = field_validator("vendor", "product")(_regex)


class SunspecRule(BaseModel):
    """A SunSpec model the walk found where the library profile's addresses assume it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: int = Field(ge=1, le=65534, description="SunSpec model id (e.g. 203)")
    address: int = Field(ge=0, le=65535, description="0-based register of the model's ID "
                         "register that the profile's addresses assume (40070 after 'SunS' at "
                         "40000 and a common model of 66)")
    length: int | None = Field(None, ge=1, le=65535,
                               description="the model's length L, when the profile needs all of it")
    manufacturer: str | None = Field(None, description="regular expression searched in the "
                                     "common model's manufacturer (Mn); any when omitted")
    common_model: str | None = Field(None, description="regular expression searched in the "
                                     "common model's model (Md); any when omitted")

    _check = field_validator("manufacturer", "common_model")(_regex)


class OrderCheck(BaseModel):
    """A register whose value is plausible in one byte order only: how discovery tells
    the order a device uses (one extra read, only for a recognised device)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=65535, description="0-based holding register")
    type: Literal["float32", "int32", "uint32"] = Field(description="type of the value")
    min: float = Field(description="lowest plausible value (e.g. 45 for a frequency in Hz)")
    max: float = Field(description="highest plausible value (e.g. 65)")

    @model_validator(mode="after")
    def _range(self) -> OrderCheck:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Identify(BaseModel):
    """How discovery recognises the device; device_id or sunspec (either may match)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: DeviceIdRule | None = Field(None, description="match on 43/14 identification")
    sunspec: SunspecRule | None = Field(None, description="match on the SunSpec model walk")
    order_check: OrderCheck | None = Field(
        None, description="after a match, read this register to tell the device's byte order; "
        "the draft then carries an `order:` override when it differs from the profile's")

    @model_validator(mode="after")
    def _some_rule(self) -> Identify:
        if self.device_id is None and self.sunspec is None:
            raise ValueError("give device_id or sunspec (or both)")
        return self


@dataclass(frozen=True, slots=True)
class Recognised:
    """A library entry a unit matched, and why, in words."""

    name: str
    reason: str
    order_check: OrderCheck | None


def _search(pattern: str, text: str | None) -> bool:
    return text is not None and re.search(pattern, text, re.IGNORECASE) is not None


def match_device_id(rule: DeviceIdRule, identity: Mapping[str, str]) -> str | None:
    """Why the 43/14 objects match the rule, or None."""
    if not _search(rule.vendor, identity.get("vendor")):
        return None
    for obj in PRODUCT_OBJECTS:
        if _search(rule.product, identity.get(obj)):
            return (f"43/14 vendor {identity['vendor']!r} and {obj} {identity[obj]!r} match "
                    f"/{rule.vendor}/ and /{rule.product}/")
    return None


def match_sunspec(rule: SunspecRule, common: Mapping[str, str],
                  models: Sequence[tuple[int, int, int]]) -> str | None:
    """Why the walked models (id, address, length) match the rule, or None."""
    for pattern, key in ((rule.manufacturer, "manufacturer"), (rule.common_model, "model")):
        if pattern is not None and not _search(pattern, common.get(key)):
            return None
    for model_id, address, length in models:
        if model_id == rule.model and address == rule.address and rule.length in (None, length):
            return (f"SunSpec model {model_id} (length {length}) at {address}, where the "
                    "library profile's addresses put it")
    return None


def recognise(identity: Mapping[str, str], common: Mapping[str, str],
              models: Sequence[tuple[int, int, int]],
              entries: Iterable[tuple[str, Identify]]) -> Recognised | None:
    """The first library entry (by name) whose identify rules match the scan of one unit."""
    for name, rule in entries:
        reason = None
        if rule.device_id is not None and identity:
            reason = match_device_id(rule.device_id, identity)
        if reason is None and rule.sunspec is not None and models:
            reason = match_sunspec(rule.sunspec, common, models)
        if reason is not None:
            return Recognised(name, reason, rule.order_check)
    return None
