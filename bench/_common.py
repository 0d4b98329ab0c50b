"""Small helpers shared by the benchmarks: repo root on sys.path, /proc CPU, machine, tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; None = this one)."""
    stat = Path(f"/proc/{pid or 'self'}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far."""
    stat = Path(f"/proc/{pid or 'self'}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_model() -> str:
    """The CPU model as /proc/cpuinfo names it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> str:
    """One line describing where a benchmark ran."""
    debian = Path("/etc/debian_version")
    distro = f"Debian {debian.read_text().strip()}" if debian.exists() else platform.system()
    return (f"nproc={len(os.sched_getaffinity(0))}, CPU {cpu_model()}, {distro}, "
            f"Python {platform.python_version()}, kernel {platform.release()}")


def fmt(value: object) -> str:
    """Numbers with thousands separators (ratios and small values with two decimals)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (numbers right-aligned), ready to paste into docs/performance.md."""
    cells = [[fmt(v) for v in row] for row in rows]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] == "-" for r in rows)
               for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of fn in milliseconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The pct-th percentile of already sorted values (nearest rank; the maximum at 100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * pct // 100)))
    return float(sorted_values[int(rank) - 1])
