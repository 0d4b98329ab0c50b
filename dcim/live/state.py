"""The live state of a site: one typed, immutable snapshot that alarms, the dashboard, the
status line and the stored analytics series all read.

Built in memory from the collectors' newest values and their quality (dcim/live/build.py),
never from storage. Each snapshot has a sequence number that grows by one per rebuild, so a
reader can tell whether it has seen it. Plain data: no methods that do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dcim.analytics.pue import SiteFigures
from dcim.analytics.redundancy import RedundancyReport
from dcim.collectors.base import DeviceHealth
from dcim.storage.base import Sample, SeriesKey

UnitCondition = Literal["up", "down", "unknown"]


@dataclass(frozen=True, slots=True)
class UnitState:
    """One electrical component or mechanical unit, as the live values show it."""

    id: str
    name: str
    kind: str  # the component type (ups_module, pdu, crah, bus, ...)
    layer: Literal["electrical", "mechanical"]
    state: UnitCondition
    why: str  # for down or unknown: the reading or device status that says so ("" when up)
    energised: bool  # electrical: live from a source (analytics/topology.py); mechanical: powered
    monitored: bool  # has a device of its own
    kw: float | None  # present power from its own meters (None: not metered or not good)
    capacity_kw: float | None = None
    running: bool | None = None  # mechanical units with a running point
    depth: int = 0  # electrical: longest distance from a source (for drawing the chain)
    metered: bool = False  # has power points of its own (kw None then means not good)
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RackState:
    """One rack: hottest good inlet, its ASHRAE band, measured power and worst quality."""

    id: str
    hall: str
    row: str
    index: int
    design_kw: float
    kw: float | None
    inlet_c: float | None
    rh_pct: float | None
    band: str  # recommended, allowable_low/high, out_low/high, unknown
    quality: str  # good, stale, bad, missing


@dataclass(frozen=True, slots=True)
class Collection:
    """Health of collection and of the store-and-forward path at the time of the snapshot."""

    devices: int = 0
    up: int = 0
    stale: int = 0
    down: int = 0
    connecting: int = 0  # not yet answered once and no error yet
    polls: int = 0
    polls_per_s: float = 0.0
    errors: int = 0
    missed_cycles: int = 0
    stored: int = 0  # samples the store took
    buffered: int = 0  # samples waiting in the durable buffer
    storage_outage_s: float = 0.0  # 0 while the store takes writes
    storage_error: str = ""
    lost_samples: int = 0  # samples that never reached the buffer (disk full, killed mid-cycle)
    buffer_error: str = ""  # the buffer cannot write (disk full): samples are being lost
    gateways_down: tuple[str, ...] = ()  # gateways none of whose devices answer


@dataclass(frozen=True)
class SiteState:
    """Everything known about the site now. Immutable; a new one replaces it on each change."""

    seq: int
    time_ns: int  # when it was built
    site_id: str
    site_name: str
    timezone: str
    values: Mapping[SeriesKey, Sample]  # newest samples of devices that are up
    health: Mapping[str, DeviceHealth]  # per device (copies: safe to read later)
    units: Mapping[str, UnitState]  # electrical components first, config order
    racks: tuple[RackState, ...]
    collection: Collection
    pue_live: SiteFigures | None  # over the live window, from in-memory energy counters
    pue_today: SiteFigures | None  # from the last analytics run over the store (history)
    it_kw: float | None
    facility_kw: float | None
    outdoor_c: float | None
    redundancy: RedundancyReport | None  # None when the site has no topology to judge
    anomalies: tuple[Any, ...] = ()  # open episodes of the anomaly detectors (last run)
    ashrae: Mapping[str, Any] = field(default_factory=dict)  # class and envelope limits
    withheld: Mapping[str, str] = field(default_factory=dict)  # analysis -> why not computed

    @property
    def down(self) -> frozenset[str]:
        """Ids of the units that are down."""
        return frozenset(u.id for u in self.units.values() if u.state == "down")


@dataclass(frozen=True, slots=True)
class Transition:
    """A change between two snapshots: a unit's state or a redundancy verdict."""

    time_ns: int
    subject: str  # unit id, redundancy group id, or the site id for site verdicts
    what: str  # "state", "meets_design", "concurrently_maintainable", "fault_tolerant"
    before: str | None  # None: first snapshot
    after: str
    why: str = ""
