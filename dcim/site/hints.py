"""Hints for an unknown field: where else in the schema that name lives, or a close spelling."""

from __future__ import annotations

import difflib
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from dcim.config import site as schema
from dcim.site.errors import Loc, format_loc

SEARCH_DEPTH = 3  # nested sections searched below a place (security: under a gateway, ...)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field's annotation can hold (through lists, dicts, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        out += [m for m in _models_in(arg) if m not in out]
    return out


def _tags(model: type[BaseModel]) -> set[str]:
    """The literal values of a model's fields (a union member's discriminator, e.g. 'opcua')."""
    out: set[str] = set()
    for info in model.model_fields.values():
        if get_origin(info.annotation) is Literal:
            out |= {str(a) for a in get_args(info.annotation)}
    return out


def models_at(loc: Loc, root: type[BaseModel] = schema.SiteConfig) -> list[type[BaseModel]]:
    """The models that can sit at a path of the site file (several for a union)."""
    models: list[type[BaseModel]] = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if fields:
            models = [m for f in fields for m in _models_in(f.annotation)]
        else:  # a dict key (a profile id) or a union tag pydantic put in the path
            tagged = [m for m in models if part in _tags(m)]
            models = tagged or models
    return models


def _find_below(name: str, models: list[type[BaseModel]]) -> tuple[str, ...] | None:
    """The shortest chain of section names from models down to one that has the field name."""
    frontier: list[tuple[type[BaseModel], tuple[str, ...]]] = [(m, ()) for m in models]
    for _ in range(SEARCH_DEPTH):
        nxt: list[tuple[type[BaseModel], tuple[str, ...]]] = []
        for model, path in frontier:
            for field, info in model.model_fields.items():
                for sub in _models_in(info.annotation):
                    if name in sub.model_fields:
                        return path + (field,)
                    nxt.append((sub, path + (field,)))
        frontier = nxt
    return None


def unknown_field_hint(loc: Loc) -> str:
    """'; it belongs under X' or '; did you mean Y?' for the unknown field at loc, or ''."""
    name, parent = str(loc[-1]), loc[:-1]
    here = models_at(parent)
    below = _find_below(name, here)
    if below is not None:
        return f"; it belongs under {format_loc(_shown(parent) + below)}"
    for depth in range(len(parent) - 1, -1, -1):  # a level up: e.g. a site field under a hall
        if isinstance(parent[depth], int):  # parent[:depth] is a list; its item is the place
            continue
        ancestor = parent[:depth]
        if any(name in m.model_fields for m in models_at(ancestor)):
            return f"; it belongs under {format_loc(_shown(ancestor))}"
    local = {f for m in here for f in m.model_fields} - {name}
    close = difflib.get_close_matches(name, sorted(local), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _shown(loc: Loc) -> Loc:
    """A path as the user wrote it: without the union tags pydantic inserts."""
    return tuple(p for p in loc if not (isinstance(p, str) and p in _ALL_TAGS))


_ALL_TAGS = {"modbus_tcp", "modbus_rtu", "opcua", "modbus", "embedded", "influxdb1", "influxdb2"}
