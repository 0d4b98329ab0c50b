"""Redundancy of a site: level held by each group, single points of failure, Tier III / IV.

Pure functions over a compiled topology (analytics/topology.py), unit states and loads.
Definitions (N per group kind, energisation, CM vs FT) are in docs/redundancy.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from dcim.analytics.topology import (
    DESIGN_LOADS,
    EPS_KW,
    BoolArray,
    IntArray,
    Loads,
    LoadVector,
    Power,
    Topology,
    UnitStates,
    compile_topology,
    cooling_units,
    power,
    resolve_loads,
    short_checks,
    states_vector,
)

from dcim.site import Site

__all__ = [
    "Contingency", "GroupStatus", "Loads", "RedundancyReport", "Topology", "UnitStates",
    "analyse", "compile_topology", "group_status", "level_text", "meets_design",
]

NOT_ASSESSED = ("compartmentalisation", "continuous cooling", "12 h on-site fuel at N")
_DESIGN = re.compile(r"^(2?)N(?:\+(\d))?$")


def _parse_design(design: str) -> tuple[int, int]:
    """'2N+1' -> (2, 1): multiple of N and extra units."""
    match = _DESIGN.match(design)
    if match is None:
        raise ValueError(f"design {design!r} is not N, N+k, 2N or 2N+k")
    return (2 if match.group(1) else 1), int(match.group(2) or 0)


def level_text(design: str, needed: int, available: int) -> str:
    """The level held: '2N', '2N+k' (2N designs only), 'N+k', 'N' or 'below N'."""
    multiple, _ = _parse_design(design)
    if multiple == 2 and available >= 2 * needed:
        extra = available - 2 * needed
        return "2N" if extra == 0 else f"2N+{extra}"
    if available > needed:
        return f"N+{available - needed}"
    return "N" if available == needed else "below N"


def meets_design(design: str, needed: int, available: int) -> bool:
    """Whether the available units hold the design level at this N."""
    multiple, extra = _parse_design(design)
    return available >= multiple * needed + extra


@dataclass(frozen=True)
class GroupStatus:
    """One redundancy group at the present load and states."""

    id: str
    kind: str
    design: str
    load_kw: float  # what the group must carry (see docs/redundancy.md, per kind)
    unit_kw: float  # largest unit's capacity
    installed: int
    needed: int  # N
    available: int  # up, energised (and, for a UPS system, modules enough)
    capacity_kw: float  # capacity of the available units
    level: str
    meets_design: bool

    @property
    def spare(self) -> int:
        """Units beyond N (negative when short)."""
        return self.available - self.needed

    def summary(self) -> str:
        """One line: id, level against design, N, available, load and capacity."""
        flag = "ok" if self.meets_design else "BELOW DESIGN"
        return (f"{self.id:<16} {self.kind:<13} design {self.design:<4} level {self.level:<7} "
                f"N={self.needed:<3} available {self.available}/{self.installed:<3} "
                f"load {self.load_kw:,.0f} kW, capacity {self.capacity_kw:,.0f} kW  {flag}")


@dataclass(frozen=True)
class Contingency:
    """The effect of losing one component (failure or planned maintenance)."""

    component: str
    dropped_racks: tuple[str, ...]  # powered before, no energised feed after
    short_halls: tuple[str, ...]  # cooled before, short of cooling after
    groups_below_n: tuple[str, ...]  # capacity groups at N or better before, below after

    @property
    def drops_it(self) -> bool:
        """Whether the loss drops a rack or leaves a hall short of cooling."""
        return bool(self.dropped_racks or self.short_halls)


@dataclass(frozen=True)
class RedundancyReport:
    """Group levels, present exposure and the single-component contingency of one state."""

    site_id: str
    groups: tuple[GroupStatus, ...]
    dropped_racks: tuple[str, ...]  # no energised feed now
    short_halls: tuple[str, ...]  # short of cooling now
    short_cooling: tuple[str, ...]  # which cooling checks are short now
    one_feed_racks: tuple[str, ...]  # dual-corded with one feed dead
    single_corded_racks: tuple[str, ...]
    contingencies: tuple[Contingency, ...]  # only components whose loss changes something
    concurrently_maintainable: bool
    fault_tolerant: bool
    tier4_features: tuple[str, ...]
    on_generators: tuple[Contingency, ...] | None  # SPOFs with every utility feed out
    on_generators_ok: bool | None

    @property
    def single_points_of_failure(self) -> tuple[Contingency, ...]:
        """Components whose loss alone drops racks or shorts a hall's cooling."""
        return tuple(c for c in self.contingencies if c.drops_it)

    def group(self, group_id: str) -> GroupStatus:
        """The status of one group by id."""
        return next(g for g in self.groups if g.id == group_id)

    def summary(self) -> str:
        """Human-readable report: a line per group, Tier III statement, Tier IV features."""
        lines = [f"Redundancy of site {self.site_id}"]
        lines += ["  " + g.summary() for g in self.groups]
        yes = {True: "yes", False: "NO"}
        lines.append(f"Tier III concurrently maintainable: {yes[self.concurrently_maintainable]}")
        lines.append(f"Tier IV fault tolerant (power and cooling paths, N after any failure): "
                     f"{yes[self.fault_tolerant]}; not assessed: {', '.join(NOT_ASSESSED)}")
        lines.append("Tier IV features present: " + (", ".join(self.tier4_features) or "none"))
        if self.dropped_racks:
            lines.append(f"Racks without power now: {_racks(self.dropped_racks)}")
        if self.short_halls:
            lines.append(f"Halls short of cooling now: {', '.join(self.short_halls)} "
                         f"({', '.join(self.short_cooling)})")
        lines.append(f"Racks on one feed: {_racks(self.one_feed_racks) or 'none'}")
        if self.single_corded_racks:
            lines.append(f"Single-corded racks: {_racks(self.single_corded_racks)}")
        spofs = self.single_points_of_failure
        lines.append(f"Single points of failure: {'none' if not spofs else len(spofs)}")
        lines += ["  " + _contingency_line(c) for c in spofs]
        weak = [c for c in self.contingencies if not c.drops_it and c.groups_below_n]
        if weak:
            lines.append("Failures leaving a group below N (Tier IV):")
            lines += ["  " + _contingency_line(c) for c in weak]
        if self.on_generators is not None:
            known = {c.component for c in spofs}
            gen = [c for c in self.on_generators if c.drops_it and c.component not in known]
            verdict = ("concurrently maintainable" if self.on_generators_ok
                       else "NOT concurrently maintainable")
            lines.append(f"On generators alone (every utility feed out): {verdict}"
                         + ("; further single points of failure:" if gen else ""))
            lines += ["  " + _contingency_line(c) for c in gen]
        return "\n".join(lines)


def _racks(ids: tuple[str, ...], limit: int = 6) -> str:
    """Rack ids, abbreviated past a limit."""
    if len(ids) <= limit:
        return ", ".join(ids)
    return f"{len(ids)} racks ({', '.join(ids[:limit])}, ...)"


def _contingency_line(c: Contingency) -> str:
    """'X: drops N racks (...), shorts H1, groups below N: g'."""
    parts = []
    if c.dropped_racks:
        parts.append(f"drops {_racks(c.dropped_racks)}")
    if c.short_halls:
        parts.append(f"shorts cooling of {', '.join(c.short_halls)}")
    if c.groups_below_n:
        parts.append(f"leaves below N: {', '.join(c.groups_below_n)}")
    return f"{c.component}: " + "; ".join(parts)


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _State:
    """The outcome of one evaluation, as arrays."""

    power: Power
    running: BoolArray
    short: BoolArray  # cooling checks
    hall_short: BoolArray
    available: IntArray  # per group


def _available(topo: Topology, loads: LoadVector, pw: Power, running: BoolArray) -> IntArray:
    """Available units per group; a UPS system counts when its modules carry its share of N."""
    count = topo.group_elec @ pw.energised + topo.group_mech @ running
    out = np.rint(count).astype(np.int64)
    for g_i, g in enumerate(topo.groups):
        if g.kind == "ups_system" and g.elec.size:
            need_kw = loads.group_load_kw[g_i] / max(int(loads.group_needed[g_i]), 1)
            row = {s: r for r, s in enumerate(topo.systems)}
            ok = sum(1 for s in map(int, g.elec) if s in row and pw.energised[s]
                     and pw.system_cap_kw[row[s]] + EPS_KW >= min(topo.node_cap_kw[s], need_kw))
            out[g_i] = ok + int(running[g.mech].sum())
    return out


def _evaluate(topo: Topology, up_e: list[bool], up_m: BoolArray, loads: LoadVector,
              pw: Power | None = None, base: Power | None = None,
              removed: int | None = None) -> _State:
    """Energise, run cooling, check capacities; reuse pw when only mechanical states changed,
    recompute only downstream of `removed` when base is given."""
    pw = pw if pw is not None else power(topo, up_e, loads, base, removed)
    running = cooling_units(topo, up_m, pw.energised)
    short = short_checks(topo, running, loads)
    hall_short: BoolArray = np.asarray(topo.check_halls[short].any(axis=0), dtype=bool) \
        if short.size else np.zeros(len(topo.hall_ids), dtype=bool)
    return _State(pw, running, short, hall_short, _available(topo, loads, pw, running))


def _ft_scope(topo: Topology) -> BoolArray:
    """Capacity groups Tier IV wants at N after a failure (not utility; UPS modules of a 2N
    system are judged through the system group)."""
    return np.array([g.kind != "utility" and not g.judged_by_system for g in topo.groups],
                    dtype=bool)


def _contingencies(topo: Topology, up_e: list[bool], up_m: BoolArray, loads: LoadVector,
                   base: _State) -> list[Contingency]:
    """Remove each available component in turn; keep the ones whose loss changes something."""
    scope = _ft_scope(topo) & (base.available >= loads.group_needed)
    powered = base.power.feeds_live > 0
    out: list[Contingency] = []

    def record(cid: str, st: _State) -> None:
        dropped = np.flatnonzero(powered & (st.power.feeds_live == 0))
        halls = np.flatnonzero(st.hall_short & ~base.hall_short)
        below = np.flatnonzero(scope & (st.available < loads.group_needed))
        if dropped.size or halls.size or below.size:
            out.append(Contingency(
                cid, tuple(topo.rack_ids[i] for i in dropped),
                tuple(topo.hall_ids[i] for i in halls),
                tuple(topo.groups[i].id for i in below)))

    for c in range(topo.n_nodes):
        if up_e[c]:
            trial = list(up_e)
            trial[c] = False
            record(topo.node_ids[c], _evaluate(topo, trial, up_m, loads, None, base.power, c))
    for u in range(len(topo.mech_ids)):
        if up_m[u]:
            trial_m = up_m.copy()
            trial_m[u] = False
            record(topo.mech_ids[u], _evaluate(topo, up_e, trial_m, loads, base.power))
    return out


def _group_statuses(topo: Topology, loads: LoadVector, st: _State) -> tuple[GroupStatus, ...]:
    """GroupStatus of every group from one evaluation."""
    out = []
    for g_i, g in enumerate(topo.groups):
        needed, avail = int(loads.group_needed[g_i]), int(st.available[g_i])
        if g.kind == "ups_system":
            row = {s: r for r, s in enumerate(topo.systems)}
            cap = sum(float(min(topo.node_cap_kw[s], st.power.system_cap_kw[row[s]]))
                      for s in g.elec if st.power.energised[s] and s in row)
        else:
            cap = float(topo.node_cap_kw[g.elec][st.power.energised[g.elec]].sum()
                        + topo.mech_cap_kw[g.mech][st.running[g.mech]].sum())
        out.append(GroupStatus(
            id=g.id, kind=g.kind, design=g.design, load_kw=float(loads.group_load_kw[g_i]),
            unit_kw=float(g.unit_kw.max()) if g.unit_kw.size else 0.0,
            installed=int(g.elec.size + g.mech.size), needed=needed, available=avail,
            capacity_kw=cap, level=level_text(g.design, needed, avail),
            meets_design=meets_design(g.design, needed, avail)))
    return tuple(out)


def _tier4_features(topo: Topology, groups: tuple[GroupStatus, ...], st: _State,
                    fault_tolerant: bool) -> tuple[str, ...]:
    """Tier IV features the site holds now."""
    features = []
    if any(g.kind == "ups_system" and g.design.startswith("2N") and g.level.startswith("2N")
           for g in groups):
        features.append("2N UPS")
    if topo.rack_ids and bool(np.all(~topo.rack_single & topo.rack_independent
                                     & (st.power.feeds_live == 2))):
        features.append("active-active paths (every rack on two live feeds from separate UPS)")
    if any(g.kind == "utility" and g.level.startswith("2N") for g in groups):
        features.append("2N utility feeds")
    if fault_tolerant:
        features.append("N after any single failure")
    return tuple(features)


def group_status(site_or_topo: Site | Topology, states: UnitStates | None = None,
                 loads: Loads = DESIGN_LOADS) -> tuple[GroupStatus, ...]:
    """Level of every redundancy group only (one energisation pass, no contingency)."""
    topo = site_or_topo if isinstance(site_or_topo, Topology) else compile_topology(site_or_topo)
    lv = resolve_loads(topo, loads)
    up_e, up_m = states_vector(topo, states)
    return _group_statuses(topo, lv, _evaluate(topo, up_e, up_m, lv))


def _on_generators(topo: Topology, up_e: list[bool], up_m: BoolArray, loads: LoadVector
                   ) -> tuple[tuple[Contingency, ...] | None, bool | None]:
    """Contingency with every utility feed out (Tier III: generators are the primary source);
    the generator groups must also stay at N, since energisation does not weigh their capacity."""
    utilities = {i for i, t in enumerate(topo.node_type) if t == "utility_feed"}
    if not utilities or "generator" not in topo.node_type:
        return None, None
    gen_up = [u and i not in utilities for i, u in enumerate(up_e)]
    base = _evaluate(topo, gen_up, up_m, loads)
    cont = tuple(_contingencies(topo, gen_up, up_m, loads, base))
    gen_groups = {g.id for g in topo.groups if g.kind == "generator"}
    is_gen = np.array([g.id in gen_groups for g in topo.groups], dtype=bool)
    ok = (bool(np.all(base.power.feeds_live > 0)) and not base.hall_short.any()
          and bool(np.all(base.available[is_gen] >= loads.group_needed[is_gen]))
          and not any(c.drops_it or gen_groups & set(c.groups_below_n) for c in cont))
    return cont, ok


def analyse(site_or_topo: Site | Topology, states: UnitStates | None = None,
            loads: Loads = DESIGN_LOADS, on_generators: bool = True) -> RedundancyReport:
    """Group levels, exposure now, every single-component contingency, Tier III / IV verdicts.

    Pass a compiled Topology (compile_topology) when re-running on every state change.
    """
    topo = site_or_topo if isinstance(site_or_topo, Topology) else compile_topology(site_or_topo)
    lv = resolve_loads(topo, loads)
    up_e, up_m = states_vector(topo, states)
    base = _evaluate(topo, up_e, up_m, lv)
    groups = _group_statuses(topo, lv, base)
    cont = _contingencies(topo, up_e, up_m, lv, base)
    live = base.power.feeds_live
    base_ok = bool(np.all(live > 0) and not base.hall_short.any())
    cm = base_ok and not any(c.drops_it for c in cont)
    ft_groups_ok = bool(np.all((base.available >= lv.group_needed) | ~_ft_scope(topo)))
    ft = cm and ft_groups_ok and not any(c.groups_below_n for c in cont)
    gen_cont, gen_ok = _on_generators(topo, up_e, up_m, lv) if on_generators else (None, None)
    return RedundancyReport(
        site_id=topo.site_id, groups=groups,
        dropped_racks=tuple(r for r, n in zip(topo.rack_ids, live) if n == 0),
        short_halls=tuple(h for h, s in zip(topo.hall_ids, base.hall_short) if s),
        short_cooling=tuple(k for k, s in zip(topo.check_names, base.short) if s),
        one_feed_racks=tuple(r for r, n, single in zip(topo.rack_ids, live, topo.rack_single)
                             if n == 1 and not single),
        single_corded_racks=tuple(r for r, s in zip(topo.rack_ids, topo.rack_single) if s),
        contingencies=tuple(cont), concurrently_maintainable=cm, fault_tolerant=ft,
        tier4_features=_tier4_features(topo, groups, base, ft),
        on_generators=gen_cont, on_generators_ok=gen_ok,
    )
