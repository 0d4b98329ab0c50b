"""The site's plant as index arrays: which rack feeds from which PDU, which UPS feeds it, etc.

Built once from a loaded `Site`; the plant model then works on numpy arrays indexed by these.
Supported shape (the generator's, docs/site-model.md): utility -> transformer -> ATS (also fed
by a generator bus) -> main switchboard -> UPS modules -> UPS system -> PDUs -> racks, with
mechanical boards and 'load' components on the main switchboards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dcim.site import Site
from dcim.config.site import ElectricalComponent, MechanicalComponent

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]


class TopologyError(ValueError):
    """The site's power or cooling graph has a shape the plant model does not support."""


def _ids(items: list[ElectricalComponent] | list[MechanicalComponent]) -> list[str]:
    """Ids of components, in order."""
    return [c.id for c in items]


@dataclass
class Topology:
    """Index arrays of every simulated element; names follow the site's ids."""

    rack_ids: list[str]
    rack_design_kw: Array
    rack_hall: IntArray
    rack_pdu: IntArray  # (R, 2): PDU index of feed A and B, -1 when absent
    rack_end_of_row: NDArray[np.bool_]
    hall_ids: list[str]
    hall_area_m2: Array
    pdu_ids: list[str]
    pdu_cap_kw: Array
    pdu_system: IntArray
    pdu_hall: IntArray
    system_ids: list[str]
    system_side: IntArray
    module_ids: list[str]
    module_cap_kw: Array
    module_system: IntArray
    side_ids: list[str]  # one per ATS
    side_utility: list[str]
    side_transformer: list[str]
    side_tx_cap_kw: Array
    side_msb: list[str]
    side_mcc: list[str]
    gen_ids: list[str]
    gen_cap_kw: Array
    gen_bus: str | None
    load_ids: list[str]
    load_design_kw: Array
    load_sides: list[list[int]]
    chiller_ids: list[str]
    chiller_cap_kw: Array
    chw_pump_ids: list[str]
    chw_pump_rated_kw: Array
    cw_pump_ids: list[str]
    cw_pump_rated_kw: Array
    tower_ids: list[str]
    tower_cap_kw: Array
    tower_rated_kw: Array
    crah_ids: list[str]
    crah_hall: IntArray
    crah_cap_kw: Array
    crah_rated_kw: Array
    crah_weight: Array  # (R, K): share of each rack's supply air from each CRAH (rows sum to 1)
    mech_ids: list[str]  # chillers, CHW pumps, CW pumps, towers, CRAH in that order
    mech_supply: IntArray  # (U, 2): preferred and alternative side of each unit's board

    @property
    def n_racks(self) -> int:
        """Number of racks."""
        return len(self.rack_ids)


def _side_of_ats(site: Site, ats: ElectricalComponent) -> tuple[str, str]:
    """The utility feed and transformer upstream of an ATS."""
    for ref in ats.inputs:
        comp = site.electrical[ref]
        if comp.type == "transformer":
            util = [site.electrical[u] for u in comp.inputs
                    if site.electrical[u].type == "utility_feed"]
            if util:
                return util[0].id, comp.id
        if comp.type == "utility_feed":
            return comp.id, ""
    raise TopologyError(
        f"ATS {ats.id!r} has no utility feed (through a transformer) among its inputs")


def _crah_weights(site: Site, racks: list[str], crahs: list[MechanicalComponent],
                  crah_hall: list[int], hall_ids: list[str], influence_m: float) -> Array:
    """CRAH placed evenly along the side wall of their hall; rack share ~ exp(-distance/L)."""
    weight = np.zeros((len(racks), len(crahs)))
    y = np.array([site.racks[r].y_m for r in racks])
    hall = np.array([hall_ids.index(site.racks[r].hall) for r in racks])
    for h in range(len(hall_ids)):
        in_hall = np.flatnonzero(hall == h)
        units = [j for j, hh in enumerate(crah_hall) if hh == h]
        if not len(in_hall):
            continue
        if not units:
            raise TopologyError(f"hall {hall_ids[h]!r} has racks but no CRAH serves it")
        lo, hi = y[in_hall].min(), y[in_hall].max() + 1.0
        pos = lo + (np.arange(len(units)) + 0.5) / len(units) * (hi - lo)
        w = np.exp(-np.abs(y[in_hall, None] - pos[None, :]) / influence_m)
        weight[np.ix_(in_hall, np.array(units, dtype=np.intp))] = w / w.sum(axis=1, keepdims=True)
    return weight


def build_topology(site: Site, crah_influence_m: float = 4.0) -> Topology:
    """Index arrays for a loaded site; raises TopologyError on an unsupported graph."""
    elec = site.config.electrical
    by_type = {t: [c for c in elec if c.type == t] for t in {c.type for c in elec}}
    hall_ids = list(site.halls)
    racks = list(site.racks)
    pdus = by_type.get("pdu", [])
    pdu_ids = _ids(pdus)
    systems = by_type.get("ups_system", [])
    system_ids = _ids(systems)
    modules = [site.electrical[m] for s in systems for m in s.inputs]
    atses = by_type.get("ats", [])
    if not atses:
        raise TopologyError("the plant model needs an ATS per side (utility / generator)")
    side_ids = _ids(atses)
    sides = [_side_of_ats(site, a) for a in atses]
    msb_of_side = []
    for a in atses:
        boards = [c.id for c in elec if c.type == "switchboard" and a.id in c.inputs]
        if not boards:
            raise TopologyError(f"ATS {a.id!r} feeds no switchboard")
        msb_of_side.append(boards[0])

    def side_of(comp_id: str) -> int:
        """Side (main switchboard) upstream of a component."""
        seen: set[str] = set()
        stack = [comp_id]
        while stack:
            cur = stack.pop()
            if cur in msb_of_side:
                return msb_of_side.index(cur)
            if cur not in seen:
                seen.add(cur)
                stack.extend(site.electrical[cur].inputs)
        raise TopologyError(f"{comp_id!r} is not fed from any main switchboard")

    mech = site.config.mechanical
    boards = sorted({b for u in mech for b in u.powered_from})
    side_mcc = ["" for _ in side_ids]
    for b in boards:
        side_mcc[side_of(b)] = b
    gens = by_type.get("generator", [])
    gen_bus = next((c.id for c in elec if c.type == "switchboard" and gens
                    and gens[0].id in c.inputs), None)
    loads = by_type.get("load", [])
    rack_pdu = np.array([[pdu_ids.index(f) if f else -1 for f in (site.racks[r].feed_a,
                          site.racks[r].feed_b)] for r in racks], dtype=np.int64)
    rack_hall = np.array([hall_ids.index(site.racks[r].hall) for r in racks], dtype=np.int64)
    row_len = {row.id: 0 for hall in site.config.halls for row in hall.rows}
    for r in racks:
        row_len[site.racks[r].row] += 1
    end = np.array([site.racks[r].index in (0, row_len[site.racks[r].row] - 1) for r in racks])
    pdu_hall = np.zeros(len(pdus), dtype=np.int64)
    for p in range(len(pdus)):
        fed = rack_hall[(rack_pdu == p).any(axis=1)]
        pdu_hall[p] = np.bincount(fed).argmax() if len(fed) else 0
    chillers = [u for u in mech if u.type == "chiller"]
    pumps = [u for u in mech if u.type == "pump"]
    chw = [u for u in pumps if "chw" in (u.id + (u.group or "")).lower()]
    cw = [u for u in pumps if u not in chw]
    towers = [u for u in mech if u.type == "cooling_tower"]
    crahs = [u for u in mech if u.type == "crah"]
    crah_hall = [hall_ids.index(u.serves[0]) for u in crahs]
    units = chillers + chw + cw + towers + crahs
    supply = []
    for i, u in enumerate(units):
        opts = [side_mcc.index(b) for b in u.powered_from]
        pref = opts[i % len(opts)]
        alt = next((o for o in opts if o != pref), pref)
        supply.append([pref, alt])
    arr = np.array
    return Topology(
        rack_ids=racks, rack_design_kw=arr([site.racks[r].design_kw for r in racks]),
        rack_hall=rack_hall, rack_pdu=rack_pdu, rack_end_of_row=end, hall_ids=hall_ids,
        hall_area_m2=arr([site.halls[h].area_m2 or 0.0 for h in hall_ids]),
        pdu_ids=pdu_ids, pdu_cap_kw=arr([p.capacity_kw for p in pdus]),
        pdu_system=arr([system_ids.index(p.inputs[0]) for p in pdus], dtype=np.int64),
        pdu_hall=pdu_hall, system_ids=system_ids,
        system_side=arr([side_of(s.id) for s in systems], dtype=np.int64),
        module_ids=_ids(modules), module_cap_kw=arr([m.capacity_kw for m in modules]),
        module_system=arr([i for i, s in enumerate(systems) for _ in s.inputs], dtype=np.int64),
        side_ids=side_ids, side_utility=[s[0] for s in sides],
        side_transformer=[s[1] for s in sides],
        side_tx_cap_kw=arr([site.electrical[s[1]].capacity_kw if s[1] else 1.0 for s in sides]),
        side_msb=msb_of_side, side_mcc=side_mcc, gen_ids=_ids(gens),
        gen_cap_kw=arr([g.capacity_kw for g in gens]), gen_bus=gen_bus,
        load_ids=_ids(loads), load_design_kw=arr([c.load_kw or c.capacity_kw / 2 for c in loads]),
        load_sides=[sorted({side_of(i) for i in c.inputs}) for c in loads],
        chiller_ids=_ids(chillers), chiller_cap_kw=arr([u.capacity_kw for u in chillers]),
        chw_pump_ids=_ids(chw), chw_pump_rated_kw=arr([u.rated_power_kw for u in chw]),
        cw_pump_ids=_ids(cw), cw_pump_rated_kw=arr([u.rated_power_kw for u in cw]),
        tower_ids=_ids(towers), tower_cap_kw=arr([u.capacity_kw for u in towers]),
        tower_rated_kw=arr([u.rated_power_kw for u in towers]),
        crah_ids=_ids(crahs), crah_hall=arr(crah_hall, dtype=np.int64),
        crah_cap_kw=arr([u.capacity_kw for u in crahs]),
        crah_rated_kw=arr([u.rated_power_kw for u in crahs]),
        crah_weight=_crah_weights(site, racks, crahs, crah_hall, hall_ids, crah_influence_m),
        mech_ids=_ids(units), mech_supply=arr(supply, dtype=np.int64).reshape(-1, 2),
    )
