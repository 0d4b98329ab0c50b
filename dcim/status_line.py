"""The status line of `dcim run` and `dcim demo`: what the system is doing, in one line.

`status_of` turns the live state (and the active alarms) into fields, each with a long and a
short wording and a rank (0 most important). `Status.line(width)` fits them to a width:
first the least important fields take their short wording, then the least important are
dropped, and what is still too long is cut; a line never wraps. Before the first poll cycle
has reached every device the line starts with "connecting", not with devices counted stale.

`StatusPrinter` writes it: on a terminal, one line rewritten in place (carriage return) at
the terminal's width; to a file or a pipe, one plain line in full when the system starts,
at once when something that matters changes (the first cycle done, a PUE figure, alarms,
devices up or down, samples lost) and otherwise once every `log_every_s` (60 s), never a
stream of carriage returns.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from dcim.alarms.types import Alarm, AlarmState
from dcim.live.state import Collection, SiteState

SEP = " | "
LOG_EVERY_S = 60.0  # a file or pipe gets one line this often
MIN_WIDTH = 20  # narrower terminals get this many columns anyway (cut, never wrapped)


@dataclass(frozen=True, slots=True)
class Field:
    """One part of the line: its wording, a shorter one, and how much it matters (0 most)."""

    long: str
    short: str
    rank: int


@dataclass(frozen=True, slots=True)
class Status:
    """The fields of one status line, in the order shown."""

    fields: tuple[Field, ...]
    connecting: bool  # the first poll cycle has not reached every device yet
    # what a log should hear of at once when it changes (not the ever-moving counters)
    key: tuple[object, ...] = ()

    def line(self, width: int | None = None) -> str:
        """The line, fitted to width columns (None: the long wording of every field)."""
        parts: list[str | None] = [f.long for f in self.fields]
        if width is None:
            return SEP.join(p for p in parts if p)
        width = max(width, MIN_WIDTH)
        least_first = sorted(range(len(self.fields)), key=lambda i: -self.fields[i].rank)

        def text() -> str:
            return SEP.join(p for p in parts if p)

        for i in least_first:  # shorter wording, least important first
            if len(text()) <= width:
                break
            parts[i] = self.fields[i].short
        for i in least_first[:-1]:  # then drop fields, least important first (never the first)
            if len(text()) <= width:
                break
            parts[i] = None
        return text()[:width]


def _devices(c: Collection) -> tuple[Field, bool]:
    """The devices field, and whether the first cycle is still under way."""
    if c.devices == 0 or c.connecting:
        answered = c.devices - c.connecting
        down = f", {c.down} down" if c.down else ""
        return Field(f"connecting: {answered}/{c.devices} devices answered{down}",
                     f"connecting {answered}/{c.devices}", 0), True
    extra = [f"{n} {what}" for n, what in ((c.stale, "stale"), (c.down, "down")) if n]
    return Field(f"devices {c.up}/{c.devices} up, {c.stale} stale, {c.down} down",
                 f"up {c.up}/{c.devices}" + "".join(f", {e}" for e in extra), 0), False


def _pue(state: SiteState) -> Field:
    fig = state.pue_live.pue if state.pue_live is not None else None
    if fig is None:
        text = "PUE: withheld" if "pue" in state.withheld else "PUE live: -"
        return Field(text, "PUE -", 2)
    if fig.value is None:
        return Field(f"PUE live: withheld, coverage {fig.coverage:.0%}", "PUE -", 2)
    return Field(f"PUE live {fig.value:.3f} ({fig.category})", f"PUE {fig.value:.2f}", 2)


def status_of(state: SiteState, alarms: Sequence[Alarm] | None) -> Status:
    """The status fields of a live state and the active alarms (None: alarms not running)."""
    c = state.collection
    devices, connecting = _devices(c)
    fields: list[Field] = []
    pue = _pue(state)
    cm = None if state.redundancy is None else state.redundancy.concurrently_maintainable
    shown = [a for a in alarms or () if a.announced and a.state is not AlarmState.NORMAL]
    unack = sum(a.state is not AlarmState.ACKED for a in shown)
    if not connecting:  # nothing measured yet: no PUE or anomalies to speak of
        fields.append(pue)
        if cm is not None:
            fields.append(Field("CM yes", "CM yes", 3) if cm else Field("CM NO", "CM NO", 1))
        fields.append(Field(f"anomalies {len(state.anomalies)}", f"anom {len(state.anomalies)}",
                            5 if not state.anomalies else 3))
    if alarms is not None:
        fields.append(Field(f"alarms {len(shown)} ({unack} unacknowledged)",
                            f"alm {len(shown)}" + (f" ({unack} unack)" if unack else ""), 1))
    fields.append(devices)
    if not connecting:
        fields.append(Field(f"polls {c.polls:,} ({c.polls_per_s:,.0f}/s) errors {c.errors:,} "
                            f"missed cycles {c.missed_cycles}",
                            f"{c.polls_per_s:,.0f} polls/s err {c.errors:,}", 6))
    fields.append(Field(f"stored {c.stored:,} buffered {c.buffered:,}",
                        f"buf {c.buffered:,}", 4 if c.buffered else 7))
    if c.lost_samples:
        fields.append(Field(f"LOST {c.lost_samples:,}", f"LOST {c.lost_samples:,}", 0))
    if connecting:  # the line starts with it
        fields.insert(0, fields.pop(fields.index(devices)))
    key = (connecting, pue.short != "PUE -", cm, len(state.anomalies), len(shown), unack,
           c.up, c.stale, c.down, c.lost_samples > 0, bool(c.buffer_error))
    return Status(tuple(fields), connecting, key)


def terminal_columns() -> int:
    """The terminal's width (COLUMNS, the terminal itself, or 80)."""
    return shutil.get_terminal_size((80, 24)).columns


class StatusPrinter:
    """Writes status lines: in place on a terminal, one plain line per interval otherwise."""

    def __init__(self, out: TextIO, *, clock: Callable[[], float] = time.monotonic,
                 log_every_s: float = LOG_EVERY_S,
                 columns: Callable[[], int] = terminal_columns) -> None:
        self.out, self._clock, self._every_s, self._columns = out, clock, log_every_s, columns
        self.tty = out.isatty()
        self._written_at: float | None = None
        self._key: tuple[object, ...] = ()

    def show(self, status: Status) -> None:
        """Show the status now (a terminal), or log it when it is due (a file or pipe)."""
        if self.tty:
            # one column spare: a line that fills the last column makes some terminals wrap
            width = max(MIN_WIDTH, self._columns() - 1)
            self.out.write("\r" + status.line(width).ljust(width))
            self._written_at = self._clock()
        else:
            now = self._clock()
            # due once an interval, and at once when something that matters changed (the
            # first cycle done, PUE available, alarms, devices up or down, samples lost)
            due = (self._written_at is None or now - self._written_at >= self._every_s
                   or status.key != self._key)
            if not due:
                return
            self.out.write(status.line() + "\n")
            self._written_at, self._key = now, status.key
        self.out.flush()

    def close(self) -> None:
        """End the terminal's line, so what follows starts on a line of its own."""
        if self.tty and self._written_at is not None:
            self.out.write("\n")
            self.out.flush()
