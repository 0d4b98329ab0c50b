"""The device library: its files, `library:` in a site file, and `dcim profiles list|show`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from dcim.cli import main
from dcim.config.site import ModbusProfile
from dcim.library import OVERRIDABLE, library, names
from dcim.site import ConfigError, parse_site

SITE = """\
site: {{id: lib, name: library site}}
gateways:
- {{id: gw, protocol: modbus_tcp, host: 127.0.0.1, port: 1502}}
profiles:
  meter:
{profile}
devices:
- {{id: M1, profile: meter, gateway: gw, unit_id: 1}}
"""


def _site(profile: str) -> str:
    return SITE.format(profile=textwrap.indent(profile, "    "))


def _issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_site(text, "site.yaml")
    return [str(i) for i in err.value.issues]


@pytest.mark.parametrize("name", names())
def test_every_library_file_says_where_its_map_comes_from(name: str) -> None:
    about = library()[name].about
    assert about.vendor and about.model_family
    assert any(doc in about.source for doc in (
        "domain.md", "sunspec-model-offsets.txt", "github.com/sunspec/models",
        "cdn.raritan.com/download/px3/version-3.6.1/PDU_Modbus_3.6.1_46982.pdf",
        "Liebert IntelliSlot Modbus/BACnet IP"))


@pytest.mark.parametrize("name", names())
def test_a_site_uses_each_library_profile_by_name(name: str) -> None:
    site = parse_site(_site(f"library: {name}"), "site.yaml")
    profile = site.config.profiles["meter"]
    assert profile.model_dump(exclude_defaults=True) == ModbusProfile.model_validate(
        library()[name].profile).model_dump(exclude_defaults=True)
    assert site.devices["M1"].profile is profile


def test_overrides_replace_only_the_settings_they_name() -> None:
    site = parse_site(_site("library: sunspec-meter-203\nmax_gap: 0\n"
                            "vendor_model: Acme 3-phase meter (SunSpec 203)"), "site.yaml")
    profile = site.config.profiles["meter"]
    assert isinstance(profile, ModbusProfile)
    assert (profile.max_gap, profile.vendor_model) == (0, "Acme 3-phase meter (SunSpec 203)")
    assert len(profile.points) == len(library()["sunspec-meter-203"].profile["points"])


def test_an_unknown_name_gives_file_line_and_close_matches() -> None:
    assert _issues(_site("library: schneider-pm5506")) == [
        "site.yaml:6: profiles.meter.library: unknown library profile 'schneider-pm5506'; "
        f"did you mean 'schneider-pm5560'? (known: {', '.join(names())})"]


def test_points_cannot_be_overridden() -> None:
    (issue,) = _issues(_site("library: apc-smart-ups\npoints: []"))
    assert issue.startswith("site.yaml:7: profiles.meter.points: a library profile takes "
                            f"overrides of {', '.join(OVERRIDABLE)} only")


def test_an_override_is_validated_like_the_profile_field() -> None:
    (issue,) = _issues(_site("library: apc-smart-ups\nmax_gap: 500"))
    assert issue.startswith("site.yaml:7: profiles.meter.max_gap:")


def test_list_names_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "PROTOCOL", "DEVICE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == names()
    for name, row in rows.items():
        profile = library()[name].profile
        assert row[1:3] == [profile["protocol"], profile["device_type"]]
        assert row[-1] == str(len(profile["points"]))


@pytest.mark.parametrize("name", names())
def test_show_prints_yaml_that_pastes_into_a_site(name: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", name]) == 0
    shown = capsys.readouterr().out
    (pasted_id, pasted), = yaml.safe_load(shown).items()
    assert pasted == library()[name].profile
    site = parse_site(_site(textwrap.indent(yaml.safe_dump(pasted), "").rstrip()), "site.yaml")
    assert site.config.profiles["meter"] == parse_site(
        _site(f"library: {name}"), "site.yaml").config.profiles["meter"]
    assert pasted_id == name


def test_show_of_an_unknown_name_fails_with_close_matches(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "show", "apc-smartups"]) == 1
    assert "did you mean 'apc-smart-ups'" in capsys.readouterr().err


def test_the_doc_lists_every_profile_with_its_protocol_and_type() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "device-library.md").read_text()
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[2:4]]
            for line in doc.splitlines() if line.startswith("| `")}
    assert rows == {n: [e.profile["protocol"], e.profile["device_type"]]
                    for n, e in library().items()}


# ---------------------------------------------------------------- order override, identify


def test_an_order_override_sets_the_byte_order_of_every_register_point() -> None:
    site = parse_site(_site("library: schneider-pm5560\norder: CDAB"), "site.yaml")
    profile = site.config.profiles["meter"]
    assert isinstance(profile, ModbusProfile)
    assert {p.order for p in profile.points} == {"CDAB"}
    assert library()["schneider-pm5560"].order == "ABCD"  # the cached entry is untouched
    plain = parse_site(_site("library: schneider-pm5560"), "site.yaml").config.profiles["meter"]
    assert isinstance(plain, ModbusProfile) and {p.order for p in plain.points} == {"ABCD"}


@pytest.mark.parametrize("value", ["cdab", "ABDC", "1"])
def test_an_order_override_names_the_orders_it_takes(value: str) -> None:
    (issue,) = _issues(_site(f"library: schneider-pm5560\norder: '{value}'"))
    assert issue.startswith("site.yaml:7: profiles.meter.order: expected one of ABCD, CDAB, "
                            "BADC, DCBA")


@pytest.mark.parametrize(("block", "message"), [
    ({"device_id": {"vendor": "acme", "product": "AM-(2"}}, "not a regular expression"),
    ({"order_check": {"address": 1, "type": "float32", "min": 45, "max": 65}},
     "give device_id or sunspec"),
    ({"sunspec": {"model": 203, "address": 40070}, "order_check": {
        "address": 1, "type": "float32", "min": 65, "max": 45}}, "must be below max"),
    ({"sunspec": {"model": 203, "address": 40070, "modle": 1}}, "Extra inputs"),
], ids=["bad-regex", "no-rule", "empty-range", "unknown-key"])
def test_a_broken_identify_block_is_refused_naming_the_file(
        tmp_path: Path, block: dict[str, object], message: str) -> None:
    from dcim.library import _read

    path = tmp_path / "acme-meter.yaml"
    path.write_text(yaml.safe_dump({"about": {"vendor": "Acme", "model_family": "AM",
                                              "source": "domain.md"},
                                    "profile": library()["sunspec-meter-203"].profile,
                                    "identify": block}))
    with pytest.raises(ValueError, match=message) as err:
        _read(path)
    assert str(err.value).startswith(f"{path}: identify: ")


def test_every_identify_rule_is_declared_where_discovery_can_check_it() -> None:
    """A SunSpec rule names the model the profile maps, and an order check reads a register
    the profile maps with the same type (the check reads what the profile polls)."""
    for name, entry in library().items():
        rule = entry.identify
        if rule is None:
            continue
        points = {p["address"]: p for p in entry.profile["points"]}
        if rule.sunspec is not None:
            assert str(rule.sunspec.model) in entry.about.model_family, name
            assert min(points) > rule.sunspec.address, name
        if rule.order_check is not None:
            assert points[rule.order_check.address]["type"] == rule.order_check.type, name
