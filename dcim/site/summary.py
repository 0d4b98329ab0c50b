"""A human summary of a validated site: what `dcim validate` prints."""

from __future__ import annotations

from collections import Counter

from dcim.site.model import Site


def summarize(site: Site) -> str:
    """Counts of devices, points and racks, and the redundancy design, as text."""
    cfg = site.config
    lines = [f"{cfg.site.name} ({site.id}), {cfg.site.timezone}, Tier {cfg.site.tier_design} design"]
    it_kw = sum(r.design_kw for r in site.racks.values())
    dual = sum(1 for r in site.racks.values() if r.feed_a and r.feed_b)
    lines.append(f"  halls: {len(site.halls)}, rows: {sum(len(h.rows) for h in cfg.halls)}, "
                 f"racks: {len(site.racks)} ({dual} dual-corded), IT design load {it_kw:,.0f} kW")
    by_type = Counter(d.device_type for d in site.devices.values())
    by_proto = Counter(d.protocol for d in site.devices.values())
    lines.append(f"  devices: {len(site.devices)} ("
                 + ", ".join(f"{n} {p}" for p, n in sorted(by_proto.items())) + "), "
                 f"points: {site.point_count()}, gateways: {len(cfg.gateways)}")
    lines.append("    " + ", ".join(f"{t} {n}" for t, n in sorted(by_type.items())))
    lines.append(f"  electrical components: {len(cfg.electrical)}, mechanical units: {len(cfg.mechanical)}")
    lines.append("  redundancy design:")
    for group in cfg.redundancy_groups:
        members = site.group_members(group.id)
        capacity = sum(m.capacity_kw for m in members)
        lines.append(f"    {group.id:<16} {group.design:<5} {len(members)} x {group.kind}"
                     f" ({capacity:,.0f} kW installed)")
    lines.append(f"  PUE boundary: IT energy at {cfg.site.pue.it_boundary} "
                 f"({ {'ups_output': 'PUE1', 'pdu_output': 'PUE2', 'it_input': 'PUE3'}[cfg.site.pue.it_boundary] })")
    lines.append(f"  storage: {cfg.storage.backend}")
    return "\n".join(lines)
