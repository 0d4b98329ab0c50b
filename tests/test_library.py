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
    assert "domain.md" in about.source or "sunspec-model-offsets.txt" in about.source


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
