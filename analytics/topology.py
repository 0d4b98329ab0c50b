"""The site's power and cooling graph compiled to integer-indexed arrays, and energisation.

Built once per site (`compile_topology`); each evaluation (`evaluate`) then takes unit states
and loads and returns what is energised, which racks are fed, which cooling units run and
which halls are short. Pure: no I/O, no clock. Rules in docs/redundancy.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from dcim.site import Site

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

SOURCE_TYPES = ("utility_feed", "generator")
PLANT_TYPES = ("chiller", "pump", "cooling_tower")
EPS_KW = 1e-6  # capacity equal to load counts as enough

UnitStates = Mapping[str, bool]
"""Component id -> available (False: tripped, open or in maintenance); missing ids are True."""


@dataclass(frozen=True)
class Loads:
    """Present loads; None means the design value (rack design kW and the sizing factors).

    A load that is not a finite number (NaN: a reading that is unknown or half stored; inf:
    a broken sensor) counts as unknown, which is the same as not given: the rack's design
    load, or the hall, plant and facility figures derived from the rack loads.
    """

    rack_kw: Mapping[str, float] | None = None
    hall_heat_kw: Mapping[str, float] | None = None
    plant_heat_kw: float | None = None
    facility_kw: float | None = None
    hall_heat_factor: float = 1.05  # CRAH heat = hall IT x this (fans, lighting): site sizing rule
    plant_heat_factor: float = 1.1  # chiller heat = IT x this (UPS and room losses): sizing rule


@dataclass(frozen=True)
class GroupSpec:
    """A redundancy group resolved to member indices and the load it must carry."""

    id: str
    kind: str
    design: str
    description: str
    elec: IntArray  # member node indices
    mech: IntArray  # member mechanical unit indices
    unit_kw: FloatArray  # capacity of each member, electrical first
    rack_mask: BoolArray  # racks with a feed downstream of a member (UPS, PDU groups)
    hall_mask: BoolArray  # halls served (cooling groups)
    judged_by_system: bool  # module group whose systems sit in a 2N ups_system group


@dataclass
class Topology:
    """Integer-indexed plant graph of one site."""

    site_id: str
    node_ids: list[str]
    node_type: list[str]
    node_cap_kw: FloatArray
    inputs: list[tuple[int, ...]]
    order: list[int]  # topological: inputs before the nodes they feed
    is_source: list[bool]
    systems: list[int]  # ups_system nodes
    system_modules: list[tuple[int, ...]]
    system_pdus: FloatArray  # (S, n + 1): 1 where a PDU is downstream of the system
    rack_ids: list[str]
    rack_hall: IntArray
    rack_feed: IntArray  # (R, 2) node index of feed A and B; n (never energised) when absent
    rack_single: BoolArray
    rack_design_kw: FloatArray
    rack_independent: BoolArray  # A and B feeds share no UPS module or system
    hall_ids: list[str]
    mech_ids: list[str]
    mech_type: list[str]
    mech_cap_kw: FloatArray
    mech_rated_kw: FloatArray
    mech_group: list[str | None]
    mech_supply: IntArray  # (U, k) board node indices, padded with n
    check_names: list[str]  # cooling checks: CRAH per hall, then plant groups
    check_cap: FloatArray  # (K, U) capacity each unit contributes to each check
    check_halls: BoolArray  # (K, H) halls a check covers
    check_plant: BoolArray  # (K,) plant check (heat = plant heat share) or hall check
    groups: list[GroupSpec]
    group_elec: FloatArray  # (G, n + 1) membership of electrical components
    group_mech: FloatArray  # (G, U) membership of mechanical units
    system_module_kw: FloatArray  # (S, n + 1) module capacities feeding each UPS system
    downstream: list[list[int]]  # nodes fed (directly or not) by each node, topological order
    ups_efficiency: float
    other_load_kw: float  # 'load' components (lighting, security, offices)
    node_index: dict[str, int] = field(default_factory=dict)
    mech_index: dict[str, int] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        """Electrical components (index n is a never-energised placeholder)."""
        return len(self.node_ids)

    def components(self) -> list[str]:
        """Every electrical component and mechanical unit, in config order."""
        return self.node_ids + self.mech_ids


def _topological(inputs: list[tuple[int, ...]]) -> list[int]:
    """Nodes ordered so that every node comes after its inputs (the loader rejects loops)."""
    order: list[int] = []
    done = [False] * len(inputs)
    for root in range(len(inputs)):
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if done[node]:
                continue
            if expanded:
                done[node] = True
                order.append(node)
                continue
            stack.append((node, True))
            stack.extend((j, False) for j in inputs[node] if not done[j])
    return order


def _ancestors(inputs: list[tuple[int, ...]], order: list[int]) -> list[frozenset[int]]:
    """Every node's upstream nodes, itself included."""
    anc: list[frozenset[int]] = [frozenset()] * len(inputs)
    for i in order:
        anc[i] = frozenset({i}).union(*(anc[j] for j in inputs[i]))
    return anc


def compile_topology(site: Site) -> Topology:
    """Compile a loaded site into index arrays; call once per site, evaluate many times."""
    elec = site.config.electrical
    idx = {c.id: i for i, c in enumerate(elec)}
    n = len(elec)
    inputs = [tuple(idx[j] for j in c.inputs) for c in elec]
    order = _topological(inputs)
    anc = _ancestors(inputs, order)
    ntype = [c.type for c in elec]
    systems = [i for i, t in enumerate(ntype) if t == "ups_system"]
    system_pdus = np.zeros((len(systems), n + 1))
    for s_row, s in enumerate(systems):
        for p in range(n):
            if ntype[p] == "pdu" and s in anc[p]:
                system_pdus[s_row, p] = 1.0
    racks = list(site.racks.values())
    hall_ids = list(site.halls)
    hidx = {h: i for i, h in enumerate(hall_ids)}
    rack_feed = np.array([[idx[f] if f else n for f in (r.feed_a, r.feed_b)] for r in racks],
                         dtype=np.int64).reshape(-1, 2)
    ups_nodes = {i for i, t in enumerate(ntype) if t in ("ups_system", "ups_module")}

    def ups_of(node: int) -> frozenset[int]:
        return anc[node] & ups_nodes if node < n else frozenset()

    independent = np.array([bool(a < n and b < n and ups_of(a) and ups_of(b)
                                 and not ups_of(a) & ups_of(b)) for a, b in rack_feed], dtype=bool)
    mech = site.config.mechanical
    midx = {u.id: i for i, u in enumerate(mech)}
    width = max((len(u.powered_from) for u in mech), default=1)
    supply = np.full((len(mech), width), n, dtype=np.int64)
    for u_i, u in enumerate(mech):
        supply[u_i, :len(u.powered_from)] = [idx[b] for b in u.powered_from]
    names, caps, halls_cov, plant = _cooling_checks(site, hall_ids, hidx, midx)
    groups = _groups(site, idx, midx, anc, rack_feed, n, hidx)
    group_elec = np.zeros((len(groups), n + 1))
    group_mech = np.zeros((len(groups), len(mech)))
    for g_i, g in enumerate(groups):
        group_elec[g_i, g.elec] = 1.0
        group_mech[g_i, g.mech] = 1.0
    module_kw = np.zeros((len(systems), n + 1))
    for s_row, s in enumerate(systems):
        module_kw[s_row, list(inputs[s])] = [elec[m].capacity_kw for m in inputs[s]]
    position = {node: k for k, node in enumerate(order)}
    downstream: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for a in anc[i] - {i}:
            downstream[a].append(i)
    for d in downstream:
        d.sort(key=position.__getitem__)
    effs = [c.efficiency for c in elec if c.type == "ups_module" and c.efficiency]
    return Topology(
        site_id=site.id, node_ids=[c.id for c in elec], node_type=ntype,
        node_cap_kw=np.array([c.capacity_kw for c in elec]), inputs=inputs, order=order,
        is_source=[t in SOURCE_TYPES for t in ntype], systems=systems,
        system_modules=[inputs[s] for s in systems], system_pdus=system_pdus,
        rack_ids=[r.id for r in racks],
        rack_hall=np.array([hidx[r.hall] for r in racks], dtype=np.int64), rack_feed=rack_feed,
        rack_single=np.array([r.single_corded for r in racks], dtype=bool),
        rack_design_kw=np.array([r.design_kw for r in racks], dtype=np.float64),
        rack_independent=independent, hall_ids=hall_ids, mech_ids=[u.id for u in mech],
        mech_type=[u.type for u in mech], mech_cap_kw=np.array([u.capacity_kw for u in mech]),
        mech_rated_kw=np.array([u.rated_power_kw for u in mech]),
        mech_group=[u.group for u in mech], mech_supply=supply, check_names=names,
        check_cap=caps, check_halls=halls_cov, check_plant=plant, groups=groups,
        group_elec=group_elec, group_mech=group_mech, system_module_kw=module_kw,
        downstream=downstream,
        ups_efficiency=float(np.mean(effs)) if effs else 1.0,
        other_load_kw=sum(c.load_kw if c.load_kw is not None else c.capacity_kw / 2
                          for c in elec if c.type == "load"),
        node_index=idx, mech_index=midx,
    )


def _cooling_checks(site: Site, hall_ids: list[str], hidx: dict[str, int],
                    midx: dict[str, int]) -> tuple[list[str], FloatArray, BoolArray, BoolArray]:
    """Capacity checks: CRAH of each hall, and each plant group (or type, when ungrouped)."""
    mech = site.config.mechanical
    rows: list[tuple[str, dict[int, float], set[int], bool]] = []
    for h in hall_ids:
        crah = {midx[u.id]: u.capacity_kw / len(u.serves) for u in mech
                if u.type == "crah" and h in u.serves}
        if crah:  # a hall no CRAH serves is not assessed (cooling outside the model)
            rows.append((f"CRAH of {h}", crah, {hidx[h]}, False))
    plant: dict[str, list[int]] = {}
    for u in mech:
        if u.type in PLANT_TYPES:
            plant.setdefault(u.group or f"{u.type} (ungrouped)", []).append(midx[u.id])
    for name, units in plant.items():
        served = {hidx[h] for i in units for h in mech[i].serves}
        rows.append((name, {i: mech[i].capacity_kw for i in units}, served, True))
    cap = np.zeros((len(rows), len(mech)))
    cov = np.zeros((len(rows), len(hall_ids)), dtype=bool)
    for k, (_, units_cap, served, _) in enumerate(rows):
        for i, c in units_cap.items():
            cap[k, i] = c
        cov[k, sorted(served)] = True
    return ([r[0] for r in rows], cap, cov, np.array([r[3] for r in rows], dtype=bool))


def _groups(site: Site, idx: dict[str, int], midx: dict[str, int], anc: list[frozenset[int]],
            rack_feed: IntArray, n: int, hidx: dict[str, int]) -> list[GroupSpec]:
    """Redundancy groups with members, unit capacities and what load each must carry."""
    out: list[GroupSpec] = []
    system_in_2n = {idx[c.id] for g in site.config.redundancy_groups
                    if g.kind == "ups_system" and g.design.startswith("2N")
                    for c in site.group_members(g.id) if c.id in idx}
    for g in site.config.redundancy_groups:
        members = site.group_members(g.id)
        elec = [idx[c.id] for c in members if c.id in idx and c in site.config.electrical]
        mech = [midx[c.id] for c in members if c.id in midx and c in site.config.mechanical]
        members_set = set(elec)
        below = [bool(f < n and anc[f] & members_set) for f in rack_feed.ravel()]
        rack_mask: BoolArray = np.asarray(
            np.array(below, dtype=bool).reshape(-1, 2).any(axis=1), dtype=bool)
        hall_mask = np.zeros(len(hidx), dtype=bool)
        for i in mech:
            for h in site.config.mechanical[i].serves:
                hall_mask[hidx[h]] = True
        systems_fed = {idx[c.id] for c in site.config.electrical if c.type == "ups_system"
                       and members_set & {idx[x] for x in c.inputs}}
        out.append(GroupSpec(
            id=g.id, kind=g.kind, design=g.design, description=g.description,
            elec=np.array(elec, dtype=np.int64), mech=np.array(mech, dtype=np.int64),
            unit_kw=np.array([c.capacity_kw for c in members], dtype=np.float64),
            rack_mask=rack_mask, hall_mask=hall_mask,
            judged_by_system=g.kind == "ups_module" and bool(systems_fed)
            and systems_fed <= system_in_2n,
        ))
    return out


@dataclass(frozen=True)
class LoadVector:
    """Loads resolved against a topology: arrays in its index order."""

    rack_kw: FloatArray
    hall_heat_kw: FloatArray
    plant_heat_kw: float
    facility_kw: float
    check_heat_kw: FloatArray  # heat each cooling check must cover
    group_load_kw: FloatArray
    group_needed: IntArray


def needed_units(load_kw: float, unit_kw: FloatArray) -> int:
    """N: the fewest units (largest first) whose capacity covers the load; at least 1.

    A load that is not a finite number (NaN or inf) cannot be shown to fit, so it needs one
    unit more than are installed (the group reads below N); resolve_loads replaces unknown
    loads with design ones before they get here.
    """
    if not math.isfinite(load_kw):
        return 1 if load_kw < 0 else unit_kw.size + 1
    if load_kw <= EPS_KW or unit_kw.size == 0:
        return 1
    cumulative = np.cumsum(np.sort(unit_kw)[::-1])
    hit = int(np.searchsorted(cumulative, load_kw - EPS_KW)) + 1
    if hit > unit_kw.size:  # more than installed: count further units of the largest size
        extra = math.ceil((load_kw - cumulative[-1] - EPS_KW) / float(unit_kw.max()))
        return unit_kw.size + max(extra, 1)
    return hit


DESIGN_LOADS = Loads()


def _known(kw: float | None) -> float | None:
    """A load as given, or None (derive or use the design value) when it is not finite."""
    return kw if kw is not None and math.isfinite(kw) else None


def resolve_loads(topo: Topology, loads: Loads = DESIGN_LOADS) -> LoadVector:
    """Loads as arrays; heat and facility figures derived from rack loads where not given.

    A rack load that is not a finite number (NaN: unknown, e.g. a reading half stored) is
    replaced by the rack's design load; a hall heat, plant heat or facility load that is
    not finite is derived as if it had not been given. So every figure here is finite.
    """
    rack_kw = topo.rack_design_kw.copy()
    if loads.rack_kw is not None:
        pos = {r: i for i, r in enumerate(topo.rack_ids)}
        for rid, kw in loads.rack_kw.items():
            if rid not in pos:
                raise ValueError(f"load given for unknown rack {rid!r}")
            known = _known(kw)
            if known is not None:
                rack_kw[pos[rid]] = known
    hall_it = np.bincount(topo.rack_hall, weights=rack_kw, minlength=len(topo.hall_ids))
    hall_heat: FloatArray = np.asarray(hall_it * loads.hall_heat_factor, dtype=np.float64)
    if loads.hall_heat_kw is not None:
        for hid, kw in loads.hall_heat_kw.items():
            if hid not in topo.hall_ids:
                raise ValueError(f"heat load given for unknown hall {hid!r}")
            known = _known(kw)
            if known is not None:
                hall_heat[topo.hall_ids.index(hid)] = known
    it_kw = float(rack_kw.sum())
    plant_heat = _known(loads.plant_heat_kw)
    if plant_heat is None:
        plant_heat = it_kw * loads.plant_heat_factor
    total_hall = float(hall_heat.sum())

    def heat_of(halls: BoolArray, is_plant: bool) -> float:
        share = float(hall_heat[halls].sum())
        if not is_plant:
            return share
        return plant_heat * share / total_hall if total_hall > 0 else 0.0

    check_heat = np.array([heat_of(topo.check_halls[k], bool(topo.check_plant[k]))
                           for k in range(len(topo.check_names))], dtype=np.float64)
    group_load = np.zeros(len(topo.groups))
    needed = np.zeros(len(topo.groups), dtype=np.int64)
    mech_running_kw = 0.0
    for g_i, g in enumerate(topo.groups):
        if g.kind in ("ups_module", "ups_system"):
            group_load[g_i] = float(rack_kw[g.rack_mask].sum())
        elif g.kind == "crah":
            group_load[g_i] = heat_of(g.hall_mask, False)
        elif g.kind in PLANT_TYPES:
            group_load[g_i] = heat_of(g.hall_mask, True)
        else:
            continue  # utility and generators: facility load, set below
        needed[g_i] = needed_units(group_load[g_i], g.unit_kw)
        if g.mech.size:
            mech_running_kw += needed[g_i] * float(topo.mech_rated_kw[g.mech].mean())
    grouped = {int(i) for g in topo.groups for i in g.mech}
    mech_running_kw += sum(float(topo.mech_rated_kw[i]) for i in range(len(topo.mech_ids))
                           if i not in grouped)
    facility = _known(loads.facility_kw)
    if facility is None:
        facility = it_kw / topo.ups_efficiency + mech_running_kw + topo.other_load_kw
    for g_i, g in enumerate(topo.groups):
        if g.kind in ("utility", "generator"):
            group_load[g_i] = facility
            needed[g_i] = needed_units(facility, g.unit_kw)
    return LoadVector(rack_kw=rack_kw, hall_heat_kw=hall_heat, plant_heat_kw=plant_heat,
                      facility_kw=facility, check_heat_kw=check_heat, group_load_kw=group_load,
                      group_needed=needed)


def states_vector(topo: Topology, states: UnitStates | None) -> tuple[list[bool], BoolArray]:
    """Per-node and per-unit availability; unknown ids are an error."""
    up_e = [True] * topo.n_nodes
    up_m = np.ones(len(topo.mech_ids), dtype=bool)
    for cid, ok in (states or {}).items():
        if cid in topo.node_index:
            up_e[topo.node_index[cid]] = bool(ok)
        elif cid in topo.mech_index:
            up_m[topo.mech_index[cid]] = bool(ok)
        else:
            raise ValueError(f"state given for {cid!r}, which is not a component of "
                             f"site {topo.site_id!r}")
    return up_e, up_m


@dataclass(frozen=True)
class Power:
    """Electrical result of one evaluation."""

    energised: BoolArray  # (n + 1,), the last entry always False
    system_cap_kw: FloatArray  # usable capacity of each ups_system (energised modules, rating)
    feeds_live: IntArray  # (R,) energised feeds of each rack


def _energise(topo: Topology, up: list[bool], base: list[bool] | None = None,
              removed: int | None = None) -> list[bool]:
    """Up and (a source, or any input energised), in topological order; with base and removed,
    only the nodes downstream of the removed one are recomputed."""
    inputs, src = topo.inputs, topo.is_source
    if base is not None and removed is not None:
        en = list(base)
        en[removed] = False
        nodes: list[int] = topo.downstream[removed]
    else:
        en = [False] * (topo.n_nodes + 1)
        nodes = topo.order
    for i in nodes:
        live = False
        if up[i]:
            if src[i]:
                live = True
            else:
                for j in inputs[i]:
                    if en[j]:
                        live = True
                        break
        en[i] = live
    return en


def power(topo: Topology, up: list[bool], loads: LoadVector, base: Power | None = None,
          removed: int | None = None) -> Power:
    """Energisation with the UPS capacity rule: an overloaded UPS system drops (repeat to rest).

    With base (the evaluation before) and removed (one node taken out of it) only the nodes
    downstream of the removed one are recomputed.
    """
    up = list(up)
    start = base.energised.tolist() if base is not None and removed is not None else None
    while True:
        en = _energise(topo, up, start, removed)
        start = None  # after an overload, recompute everything
        en_arr = np.array(en, dtype=bool)
        live = en_arr[topo.rack_feed]
        count = live.sum(axis=1)
        if not topo.systems:
            return Power(energised=en_arr, system_cap_kw=np.zeros(0), feeds_live=count)
        share = np.where(count > 0, loads.rack_kw / np.maximum(count, 1), 0.0)
        pdu_kw = np.bincount(topo.rack_feed[:, 0], weights=share * live[:, 0],
                             minlength=topo.n_nodes + 1)
        pdu_kw += np.bincount(topo.rack_feed[:, 1], weights=share * live[:, 1],
                              minlength=topo.n_nodes + 1)
        system_kw = topo.system_pdus @ pdu_kw
        sys_cap = np.minimum(topo.node_cap_kw[topo.systems], topo.system_module_kw @ en_arr)
        over = en_arr[topo.systems] & (sys_cap + EPS_KW < system_kw)
        if not over.any():
            return Power(energised=en_arr, system_cap_kw=sys_cap, feeds_live=count)
        for s_row in np.flatnonzero(over):
            up[topo.systems[s_row]] = False


def cooling_units(topo: Topology, up_m: BoolArray, energised: BoolArray) -> BoolArray:
    """A unit runs when it is up and any of its boards is energised (per-unit ATS)."""
    if not topo.mech_ids:
        return up_m
    return up_m & energised[topo.mech_supply].any(axis=1)


def short_checks(topo: Topology, running: BoolArray, loads: LoadVector) -> BoolArray:
    """Cooling checks whose running capacity is below the heat they must remove."""
    if not topo.check_names:
        return np.zeros(0, dtype=bool)
    return topo.check_cap @ running + EPS_KW < loads.check_heat_kw
