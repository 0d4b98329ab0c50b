"""A human summary of a validated site: what `dcim validate` prints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from dcim.site.model import Site


def summarize(site: Site, withheld: Mapping[str, str] | None = None) -> str:
    """Counts of devices, points and racks, the redundancy design, and the analyses withheld
    (with what the site lacks for each) as text."""
    cfg = site.config
    plant = bool(cfg.electrical or cfg.mechanical or cfg.halls)
    design = f", Tier {cfg.site.tier_design} design" if plant else ", monitoring only (no plant)"
    lines = [f"{cfg.site.name} ({site.id}), {cfg.site.timezone}{design}"]
    it_kw = sum(r.design_kw for r in site.racks.values())
    dual = sum(1 for r in site.racks.values() if r.feed_a and r.feed_b)
    if cfg.halls:
        lines.append(f"  halls: {len(site.halls)}, rows: {sum(len(h.rows) for h in cfg.halls)}, "
                     f"racks: {len(site.racks)} ({dual} dual-corded), "
                     f"IT design load {it_kw:,.0f} kW")
    by_type = Counter(d.device_type for d in site.devices.values())
    by_proto = Counter(d.protocol for d in site.devices.values())
    lines.append(f"  devices: {len(site.devices)} ("
                 + ", ".join(f"{n} {p}" for p, n in sorted(by_proto.items())) + "), "
                 f"points: {site.point_count()}, gateways: {len(cfg.gateways)}")
    lines.append("    " + ", ".join(f"{t} {n}" for t, n in sorted(by_type.items())))
    if plant:
        lines.append(f"  electrical components: {len(cfg.electrical)}, "
                     f"mechanical units: {len(cfg.mechanical)}")
    if cfg.redundancy_groups:
        lines.append("  redundancy design:")
    for group in cfg.redundancy_groups:
        members = site.group_members(group.id)
        capacity = sum(m.capacity_kw for m in members)
        lines.append(f"    {group.id:<16} {group.design:<5} {len(members)} x {group.kind}"
                     f" ({capacity:,.0f} kW installed)")
    if plant:
        category = {"ups_output": "PUE1", "pdu_output": "PUE2",
                    "it_input": "PUE3"}[cfg.site.pue.it_boundary]
        lines.append(f"  PUE boundary: IT energy at {cfg.site.pue.it_boundary} ({category})")
    lines.append(f"  storage: {cfg.storage.backend}")
    for analysis, why in sorted((withheld or {}).items()):
        lines.append(f"  {analysis}: withheld: {why}")
    return "\n".join(lines)
