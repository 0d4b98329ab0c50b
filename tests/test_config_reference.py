"""docs/config-reference.md is generated from the schema, and every field has a description."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dcim.config import reference

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = reference.sections()


def test_config_reference_md_is_generated_from_the_schema() -> None:
    """The committed reference equals the generator's output: regenerate it to update."""
    committed = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert committed == reference.render(), (
        f"docs/config-reference.md is stale: run {reference.REGENERATE}")


def test_every_schema_field_has_a_description() -> None:
    """A field added without description= fails here, so the reference never has blanks."""
    missing = list(reference.fields_without_description())
    assert not missing, "fields without a description (add description=...):\n" + "\n".join(missing)


def test_every_model_of_the_schema_has_a_section() -> None:
    """Each union variant (protocol, backend, kind) is documented on its own."""
    names = {s.model.__name__ for s in SECTIONS}
    assert {"ModbusGateway", "ModbusRtuGateway", "OpcuaGateway", "ModbusPoint", "OpcuaPoint",
            "EmbeddedStorageConfig", "InfluxDB1StorageConfig", "InfluxDB2StorageConfig",
            "WebhookChannelConfig", "EmailChannelConfig", "LogChannelConfig",
            "AuthConfig"} <= names
    assert len(names) == len(SECTIONS), "a model is listed twice"


@pytest.mark.parametrize("section", SECTIONS, ids=[s.model.__name__ for s in SECTIONS])
def test_section_example_is_valid_for_its_model(section: reference.Section) -> None:
    """Each section's YAML example loads through its own model (the docs are loaded by a test)."""
    text = yaml.safe_dump(reference.example(section), sort_keys=False)
    section.model.model_validate(yaml.safe_load(text))


def test_modbus_order_is_named_with_every_value() -> None:
    """The byte order field, once named nowhere, is documented with its four values."""
    doc = reference.render()
    row = next(line for line in doc.splitlines() if line.startswith("| `order` |"))
    for value in ("ABCD", "CDAB", "BADC", "DCBA"):
        assert f"`{value}`" in row
