"""The site model: the reference site loads, broken files give precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcim.cli import main
from dcim.site import ConfigError, load_site, parse_site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "cyberport5.yaml"
TEXT = REFERENCE.read_text(encoding="utf-8")


def test_reference_site_loads_with_design_figures() -> None:
    site = load_site(REFERENCE)
    assert site.id == "cyberport5"
    assert len(site.racks) == 200
    assert all(r.feed_a and r.feed_b and r.feed_a != r.feed_b for r in site.racks.values())
    assert {r.hall for r in site.racks.values()} == {"H1", "H2"}
    designs = {g.id: g.design for g in site.config.redundancy_groups}
    assert designs["ups-2n"] == "2N" and designs["utility"] == "2N"
    for group in ("generators", "chillers", "crah-h1", "crah-h2", "ups-a-modules"):
        assert designs[group] == "N+1"
    # every rack has a monitor, and its feeds are A-side and B-side PDUs
    monitored = {d.monitors for d in site.devices_of_type("rack_monitor")}
    assert monitored == set(site.racks)
    for rack in site.racks.values():
        assert site.electrical[rack.feed_a].inputs == ["UPS-A"]
        assert site.electrical[rack.feed_b].inputs == ["UPS-B"]
    # N+1 holds at design load: installed capacity minus the largest unit covers the load
    it_kw = sum(r.design_kw for r in site.racks.values())
    modules = site.group_members("ups-a-modules")
    assert sum(m.capacity_kw for m in modules) - max(m.capacity_kw for m in modules) >= it_kw
    for hall in ("h1", "h2"):
        crah = site.group_members(f"crah-{hall}")
        hall_kw = sum(r.design_kw for r in site.racks_in_hall(hall.upper()))
        assert sum(c.capacity_kw for c in crah) - max(c.capacity_kw for c in crah) >= hall_kw


def test_reference_file_is_generator_output() -> None:
    """The committed reference site and the generator cannot drift apart."""
    import yaml

    committed = yaml.safe_load(TEXT)
    generated = generate_site(SiteSpec(site_id="cyberport5", name="Cyberport 5 Data Centre"))
    assert committed == yaml.safe_load(yaml.safe_dump(generated))


@pytest.mark.parametrize("racks,halls", [(40, 1), (2000, 4)])
def test_generated_sites_validate(racks: int, halls: int) -> None:
    site = site_from_dict(generate_site(SiteSpec(site_id="s", name="s", racks=racks, halls=halls)))
    assert len(site.racks) == racks
    assert len(site.devices_of_type("rack_monitor")) == racks
    for gw in site.config.gateways:
        units = [d.unit_id for d in site.devices.values() if d.gateway.id == gw.id and d.unit_id]
        assert len(units) == len(set(units)) and all(1 <= u <= 247 for u in units)


def _line(text: str, needle: str, occurrence: int = 1) -> int:
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    return text.count("\n", 0, start) + 1


# (id, old text, new text, expected line anchor (in the mutated file), expected message parts)
BROKEN = [
    ("unknown-field-typo", "    rack_count: 10\n", "    rack_cnt: 10\n", "rack_cnt",
     ["halls[0].rows[0].rack_cnt", "unknown field 'rack_cnt'", "did you mean 'rack_count'"]),
    ("feed-to-missing-pdu", "feed_a: PDU-A-H1-1\n", "feed_a: PDU-A-H1-9\n", "PDU-A-H1-9",
     ["halls[0].rows[0].feed_a", "racks H1-A01..H1-A10 names 'PDU-A-H1-9', which is not an electrical component"]),
    ("role-on-wrong-device-type", "role: it_power_kw\n", "role: output_power_kw\n",
     "role: output_power_kw\n      feed: A", ["profiles.rack_monitor.points[0].role",
                               "'output_power_kw' cannot be carried by a rack_monitor"]),
    ("duplicate-component-id", "- id: CH-2\n  type: chiller", "- id: CH-1\n  type: chiller",
     ("- id: CH-1\n  type: chiller", 2), ["mechanical[1].id", "duplicate id 'CH-1'"]),
    ("rack-without-feed", "    feed_a: PDU-A-H1-1\n    feed_b: PDU-B-H1-1\n", "",
     "- id: H1-A\n", ["halls[0].rows[0]", "racks H1-A01..H1-A10: no feed"]),
    ("port-not-a-number", "port: 15020\n", "port: fifteen\n", "port: fifteen",
     ["gateways[0].port", "valid integer", "'fifteen'"]),
    ("port-out-of-range", "port: 15020\n", "port: 70000\n", "port: 70000",
     ["gateways[0].port", "less than or equal to 65535"]),
    ("unknown-device-field", "  monitors: UTIL-B\n", "  monitors: UTIL-B\n  intreval_s: 5\n",
     "intreval_s", ["devices[12].intreval_s", "unknown field 'intreval_s'", "'interval_s'"]),
    ("bad-timezone", "timezone: Asia/Hong_Kong", "timezone: Asia/HongKong", "Asia/HongKong",
     ["site.timezone", "unknown IANA timezone 'Asia/HongKong'"]),
    ("bare-namespace-index", "node: nsu=urn:dcim:cyberport5:bms;s={device}.Flow",
     "node: ns=2;s={device}.Flow", "ns=2;s=", ["profiles.bms_pump.points[2]", "namespace URI"]),
    ("bad-design-string", "design: N+1", "design: N1", "design: N1",
     ["redundancy_groups[1].design", "expected N, N+k, 2N or 2N+k"]),
    ("power-loop", "- id: MSB-A\n  type: switchboard\n  capacity_kw: 2552.0\n  inputs:\n  - ATS-A",
     "- id: MSB-A\n  type: switchboard\n  capacity_kw: 2552.0\n  inputs:\n  - UPS-A",
     "- UPS-A\n", ["loop", "MSB-A"]),
    ("missing-profile", "profile: genset\n", "profile: gen-set\n", "gen-set",
     ["devices[0].profile", "profile 'gen-set' is not declared"]),
    ("protocol-mismatch", "profile: genset\n  gateway: gw-power", "profile: genset\n  gateway: bms",
     "gateway: bms", ["devices[0].gateway", "speaks modbus but gateway 'bms' is opcua"]),
    ("float-on-coil", "table: discrete_input\n      address: 0\n      type: bool",
     "table: discrete_input\n      address: 0\n      type: float32", "- name: on_battery",
     ["profiles.ups_module_400.points[13]", "has type 'bool', not 'float32'"]),
    ("duplicate-yaml-key", "    rack_count: 10\n", "    rack_count: 10\n    rack_count: 9\n",
     "rack_count: 9", ["duplicate key 'rack_count'"]),
    ("yaml-syntax", "site:\n  id: cyberport5", "site:\n\tid: cyberport5", "\tid:",
     ["not valid YAML"]),
    ("opcua-password-in-clear", "  endpoint: opc.tcp://127.0.0.1:14840/dcim/bms\n",
     "  endpoint: opc.tcp://127.0.0.1:14840/dcim/bms\n  security:\n    username: dcim\n"
     "    password_env: DCIM_BMS_PASSWORD\n", "  security:\n",
     ["gateways[2].security", "username under security policy None", "in clear",
      "Basic256Sha256", "allow_insecure_password: true"]),
    ("monitor-wrong-kind", "  profile: ats\n  gateway: gw-power\n  monitors: ATS-A",
     "  profile: ats\n  gateway: gw-power\n  monitors: TX-A", "monitors: TX-A",
     ["cannot monitor a transformer (TX-A)"]),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_config_gives_precise_error(
    case: tuple[str, str, str, str | tuple[str, int], list[str]],
) -> None:
    name, old, new, anchor, parts = case
    assert old in TEXT, f"{name}: the reference file no longer contains {old!r}"
    text = TEXT.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        parse_site(text, "broken.yaml")
    message = str(info.value)
    for part in parts:
        assert part in message, f"{name}: {part!r} not in\n{message}"
    needle, occurrence = anchor if isinstance(anchor, tuple) else (anchor, 1)
    expected_line = _line(text, needle, occurrence)
    lines = [i.line for i in info.value.issues]
    assert any(line is not None and abs(line - expected_line) <= 1 for line in lines), (
        f"{name}: expected line {expected_line}, got {lines}\n{message}")
    assert all(i.file == "broken.yaml" for i in info.value.issues)


def test_unit_id_clash_names_both_devices() -> None:
    text = TEXT.replace("  monitors: UTIL-B\n  unit_id: 13", "  monitors: UTIL-B\n  unit_id: 1", 1)
    assert text != TEXT
    with pytest.raises(ConfigError, match="unit id 1 on gateway gw-power is already used by GEN-1-CTRL"):
        parse_site(text, "x.yaml")


def test_every_error_is_reported_not_just_the_first() -> None:
    text = TEXT.replace("feed_a: PDU-A-H1-1\n", "feed_a: NOPE\n", 1).replace(
        "profile: genset\n", "profile: nope\n", 1)
    with pytest.raises(ConfigError) as info:
        parse_site(text, "x.yaml")
    assert len(info.value.issues) >= 2


def test_single_corded_rack_needs_flag() -> None:
    data = generate_site(SiteSpec(site_id="t", name="t", racks=10, halls=1))
    row = data["halls"][0]["rows"][0]
    del row["rack_count"]
    row.pop("monitor")
    row["racks"] = [{"id": "R1"}, {"id": "R2", "single_corded": True, "feed_b": None}]
    row["feed_b"] = None
    with pytest.raises(ConfigError, match="rack R1: dual-corded but only one feed"):
        site_from_dict(data)
    row["racks"] = [{"id": "R2", "single_corded": True}]
    site = site_from_dict(data)
    assert site.racks["R2"].feeds == ("PDU-A-H1-1",)


def test_cli_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", str(REFERENCE)]) == 0
    out = capsys.readouterr().out
    assert "racks: 200" in out and "ups-2n           2N" in out and "PUE3" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEXT.replace("port: 15020\n", "port: -1\n", 1))
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:{_line(bad.read_text(), 'port: -1')}: gateways[0].port" in err


def test_cli_generate_writes_loadable_site(tmp_path: Path) -> None:
    out = tmp_path / "big.yaml"
    assert main(["site", "generate", "--racks", "500", "--halls", "3", "-o", str(out)]) == 0
    site = load_site(out)
    assert len(site.racks) == 500 and len(site.halls) == 3
