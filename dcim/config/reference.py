"""The configuration reference, generated from the schema: `python -m dcim.config.reference`.

Walks SiteConfig and every model it contains (discriminated unions one section per `kind`,
`protocol` or `backend`) and writes, per section, each field's type, default, allowed values
and description, with a small YAML example. docs/config-reference.md is this output;
tests/test_config_reference.py fails when the two differ.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from dcim.config.site import SiteConfig

REGENERATE = "python -m dcim.config.reference > docs/config-reference.md"
DISCRIMINATORS = ("protocol", "backend", "kind")

# Values for required fields in the per-section YAML examples (the rest show their defaults).
EXAMPLES: dict[str, dict[str, Any]] = {
    "SiteConfig": {
        "site": {"id": "small-room", "name": "Small server room", "timezone": "Europe/London"},
        "gateways": [{"id": "meters", "protocol": "modbus_tcp", "host": "192.0.2.10"}],
        "profiles": {"panel_meter": {"protocol": "modbus", "device_type": "meter", "points": [
            {"name": "power_kw", "table": "holding", "address": 0, "type": "float32"}]}},
        "devices": [{"id": "MAIN-1", "profile": "panel_meter", "gateway": "meters",
                     "unit_id": 1}],
    },
    "SiteInfo": {"id": "hk1", "name": "Hong Kong 1"},
    "Location": {"latitude": 22.26, "longitude": 114.13},
    "EmissionFactor": {"year": 2026, "kg_co2e_per_kwh": 0.39},
    "ModbusGateway": {"id": "meters", "host": "192.0.2.10"},
    "ModbusRtuGateway": {"id": "rs485", "serial_port": "/dev/ttyUSB0"},
    "OpcuaGateway": {"id": "bms", "endpoint": "opc.tcp://192.0.2.20:4840/bms"},
    "ModbusProfile": {"device_type": "meter", "points": [
        {"name": "power_kw", "table": "holding", "address": 0, "type": "float32"}]},
    "OpcuaProfile": {"device_type": "chiller", "points": [
        {"name": "power_kw", "node": "nsu=urn:bms;s={device}.ElectricalPower"}]},
    "ModbusPoint": {"name": "power_kw", "table": "holding", "address": 0, "type": "float32",
                    "unit": "kW"},
    "OpcuaPoint": {"name": "chw_supply_temp_c", "node": "nsu=urn:bms;s={device}.ChwSupplyTemp",
                   "unit": "degC"},
    "ElectricalComponent": {"id": "UPS-A1", "type": "ups_module", "capacity_kw": 500,
                            "inputs": ["MSB-A"], "group": "UPS-A"},
    "MechanicalComponent": {"id": "CH-1", "type": "chiller", "capacity_kw": 1200,
                            "rated_power_kw": 250, "serves": ["H1"],
                            "powered_from": ["MCC-A"]},
    "RedundancyGroup": {"id": "UPS-A", "kind": "ups_module", "design": "N+1"},
    "Hall": {"id": "H1", "rows": [{"id": "A", "rack_count": 10, "design_kw": 8}]},
    "Row": {"id": "A", "rack_count": 10, "design_kw": 8},
    "RackSpec": {"id": "A01"},
    "RackMonitorSpec": {"profile": "rack_monitor", "gateway": "racks", "first_unit_id": 1},
    "Device": {"id": "MAIN-1", "profile": "panel_meter", "gateway": "meters", "unit_id": 1},
    "InfluxDB1StorageConfig": {"url": "http://127.0.0.1:8086"},
    "InfluxDB2StorageConfig": {"url": "https://influx.example:8086", "org": "dc",
                               "bucket": "dcim"},
    "WebhookChannelConfig": {"url": "https://pager.example/hook"},
    "EmailChannelConfig": {"host": "smtp.example", "from": "dcim@example.com"},
    "PersonConfig": {"id": "alice", "name": "Alice Wong", "email": "alice@example.com"},
    "RotaOverride": {"start": "2026-12-24T09:00:00", "end": "2026-12-27T09:00:00",
                     "person": "bob"},
    "RotaConfig": {"tiers": [["alice", "bob"], ["carol"]], "start": "2026-01-05"},
    "RouteConfig": {"min_priority": "high", "tier": 0},
}


@dataclass(frozen=True)
class Section:
    """One model in one place of the site file."""

    path: str  # e.g. "gateways[] (protocol: modbus_tcp)"
    wrap: tuple[str, ...]  # YAML nesting of the example: keys, "[]" for a list item
    model: type[BaseModel]


def _strip(t: Any) -> Any:
    while typing.get_origin(t) is typing.Annotated:
        t = typing.get_args(t)[0]
    return t


def _is_union(t: Any) -> bool:
    return typing.get_origin(t) in (typing.Union, types.UnionType)


def _models(t: Any) -> list[type[BaseModel]]:
    """Models a type refers to, in declaration order."""
    t = _strip(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [t]
    return [m for a in typing.get_args(t) for m in _models(a)]


def _discriminator(model: type[BaseModel]) -> str | None:
    for name in DISCRIMINATORS:
        f = model.model_fields.get(name)
        if f is not None and typing.get_origin(_strip(f.annotation)) is Literal:
            values = typing.get_args(_strip(f.annotation))
            if len(values) == 1:
                return f"{name}: {values[0]}"
    return None


def _child_wrap(wrap: tuple[str, ...], key: str, t: Any) -> tuple[tuple[str, ...], str]:
    """Where a field's model sits: under its key, in a list, or as a named dict value."""
    t = _strip(t)
    if _is_union(t):
        inner = [a for a in typing.get_args(t) if a is not type(None)]
        t = _strip(inner[0]) if len(inner) == 1 else t
    origin = typing.get_origin(t)
    if origin in (list, tuple):
        return (*wrap, key, "[]"), "[]"
    if origin is dict:
        return (*wrap, key, "<name>"), ".<name>"
    return (*wrap, key), ""


def sections() -> list[Section]:
    """Every model of the schema once, depth first from SiteConfig, with its path."""
    out: list[Section] = [Section("(top level)", (), SiteConfig)]
    seen: set[type[BaseModel]] = {SiteConfig}

    def walk(model: type[BaseModel], path: str, wrap: tuple[str, ...], context: str) -> None:
        for key, f in model.model_fields.items():
            name = f.alias or key
            found = [m for m in _models(f.annotation) if m not in seen]
            for sub in found:
                seen.add(sub)
                child_wrap, suffix = _child_wrap(wrap, name, f.annotation)
                sub_path = f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
                tag = _discriminator(sub) if len(_models(f.annotation)) > 1 else None
                label = tag or (f"in {context}" if context else "")
                out.append(Section(f"{sub_path} ({label})" if label else sub_path, child_wrap, sub))
                walk(sub, sub_path, child_wrap, tag or context)

    walk(SiteConfig, "", (), "")
    return out


def anchor(model: type[BaseModel]) -> str:
    """The markdown anchor of a model's section."""
    return model.__name__.lower()


def type_text(t: Any) -> str:
    """A field's type in words, with links to the sections of models."""
    t = _strip(t)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Literal:
        return " \\| ".join(sorted({type(a).__name__ for a in args}))
    if _is_union(t):
        return " \\| ".join(type_text(a) for a in args)
    if origin in (list, tuple):
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if t is type(None):
        return "null"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return f"[{t.__name__}](#{anchor(t)})"
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "str"
    names = {dt.datetime: "datetime (ISO 8601)", dt.date: "date (YYYY-MM-DD)",
             dt.time: "time (HH:MM)"}
    return names.get(t, getattr(t, "__name__", str(t)))


def _literals(t: Any) -> list[Any]:
    t = _strip(t)
    if typing.get_origin(t) is Literal:
        return list(typing.get_args(t))
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return [m.value for m in t]
    if typing.get_origin(t) in (list, tuple, dict) or _is_union(t):
        return [v for a in typing.get_args(t) for v in _literals(a)]
    return []


def allowed_text(f: FieldInfo) -> str:
    """Allowed values and bounds of a field."""
    parts = []
    values = _literals(f.annotation)
    if values:
        parts.append(", ".join(f"`{v}`" for v in values))
    bounds = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
              (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"),
              (annotated_types.MinLen, "min_length", "min length"),
              (annotated_types.MaxLen, "max_length", "max length"))
    for meta in f.metadata:
        for cls, attr, word in bounds:
            if isinstance(meta, cls):
                value = getattr(meta, attr)
                parts.append(f"{word} {value:g}" if isinstance(value, float) else f"{word} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"pattern `{pattern}`")
    return "; ".join(parts)


def _plain(value: Any) -> Any:
    """A default as YAML would hold it."""
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump(by_alias=True).items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_of(f: FieldInfo) -> Any:
    """The default value of a field, PydanticUndefined when it is required."""
    if f.default_factory is not None:
        return f.default_factory()  # type: ignore[call-arg]
    return f.default


def default_text(f: FieldInfo) -> str:
    """A field's default in words."""
    value = default_of(f)
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "its section's defaults"
    plain = _plain(value)
    text = yaml.safe_dump(plain, default_flow_style=True, width=10_000).strip()
    return f"`{text.removesuffix(chr(10) + '...').strip()}`"


def example(section: Section) -> dict[str, Any]:
    """The YAML example of a section's model: required fields and scalar defaults."""
    given = EXAMPLES.get(section.model.__name__, {})
    out: dict[str, Any] = {}
    for key, f in section.model.model_fields.items():
        name = f.alias or key
        if name in given:
            out[name] = given[name]
            continue
        value = default_of(f)
        literal = _literals(f.annotation)
        if value is PydanticUndefined and len(literal) == 1:
            out[name] = literal[0]
        elif value is not PydanticUndefined and value is not None and not _models(f.annotation):
            out[name] = _plain(value)
    return out


def _wrapped(section: Section) -> Any:
    body: Any = example(section)
    for part in reversed(section.wrap):
        body = [body] if part == "[]" else {part: body}
    return body


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_section(section: Section) -> str:
    """One model's section: intro, field table and example."""
    model = section.model
    lines = [f'<a id="{anchor(model)}"></a>', "", f"## `{section.path}`", ""]
    doc = (model.__doc__ or "").strip()
    if doc and not doc.startswith(f"{model.__name__}("):
        lines += [" ".join(doc.split()), ""]
    lines += [f"Model `{model.__module__}.{model.__name__}`.", "",
              "| field | type | default | allowed | description |",
              "|---|---|---|---|---|"]
    for key, f in model.model_fields.items():
        name = f.alias or key
        lines.append(f"| `{name}` | {type_text(f.annotation)} | {_cell(default_text(f))} | "
                     f"{_cell(allowed_text(f))} | {_cell(f.description or '')} |")
    body = yaml.safe_dump(_wrapped(section), sort_keys=False, default_flow_style=False,
                          width=88, allow_unicode=True)
    lines += ["", "```yaml", body.rstrip(), "```", ""]
    return "\n".join(lines)


def render() -> str:
    """The whole reference, as docs/config-reference.md holds it."""
    all_sections = sections()
    head = [
        "# Configuration reference",
        "",
        "<!-- generated from the schema (dcim/config/); do not edit: run",
        f"     {REGENERATE} -->",
        "",
        "Every key of a site file, section by section, generated from the pydantic models in",
        "`dcim/config/`. Unknown keys are errors. Sections that depend on `protocol`, `backend`",
        "or `kind` are listed once per value. Each example shows the section's required keys",
        "and its defaults. Check a file with `dcim validate <file>`; see docs/site-model.md",
        "for how the parts fit together and docs/adding-devices.md for a worked device.",
        "",
        "## Sections",
        "",
    ]
    head += [f"- [`{s.path}`](#{anchor(s.model)})" for s in all_sections]
    return "\n".join(head) + "\n\n" + "\n".join(render_section(s) for s in all_sections)


def fields_without_description() -> Iterator[str]:
    """`Model.field` of every schema field that has no description."""
    for s in sections():
        for key, f in s.model.model_fields.items():
            if not (f.description or "").strip():
                yield f"{s.model.__module__}.{s.model.__name__}.{key}"


if __name__ == "__main__":
    print(render(), end="")
