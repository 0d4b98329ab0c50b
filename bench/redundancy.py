"""Speed of the redundancy analysis on the reference site and the 2,000-rack synthetic site.

Run: .venv/bin/python bench/redundancy.py [--repeat 20]
Prints figures only (nothing is saved). Baseline in the same run: one energisation pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import median_ms  # noqa: E402

from dcim.analytics.redundancy import analyse, compile_topology, group_status  # noqa: E402
from dcim.analytics.topology import power, resolve_loads, states_vector  # noqa: E402
from dcim.site import Site, load_site, site_from_dict  # noqa: E402
from dcim.site.generate import SiteSpec, generate_site  # noqa: E402



def bench_site(name: str, site: Site, repeat: int) -> list[str]:
    """Table rows for one site."""
    t0 = time.perf_counter()
    topo = compile_topology(site)
    compile_ms = (time.perf_counter() - t0) * 1000
    up, _ = states_vector(topo, None)
    lv = resolve_loads(topo)
    fault = {topo.node_ids[next(i for i, t in enumerate(topo.node_type) if t == "ups_module")]:
             False}
    rows = {
        "compile_topology (once per site)": compile_ms,
        "one energisation pass (baseline)": median_ms(lambda: power(topo, up, lv), repeat),
        "group status only": median_ms(lambda: group_status(topo), repeat),
        "full analysis, present supply": median_ms(
            lambda: analyse(topo, on_generators=False), repeat),
        "full analysis + on-generators view": median_ms(lambda: analyse(topo), repeat),
        "same, one UPS module tripped": median_ms(lambda: analyse(topo, fault), repeat),
    }
    base = rows["one energisation pass (baseline)"]
    size = (f"{len(topo.rack_ids)} racks, {topo.n_nodes} electrical components, "
            f"{len(topo.mech_ids)} mechanical units, {len(topo.groups)} groups")
    out = [f"| {name} ({size}) | | |"]
    out += [f"| {what} | {ms:,.2f} | {ms / base:,.0f}x |" for what, ms in rows.items()]
    return out


def main() -> None:
    """Print the timing table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"nproc={len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
          f"{platform.machine()}; median of {args.repeat} runs")
    print("| what | ms | x baseline |\n|---|---:|---:|")
    for row in bench_site("reference", load_site(REPO / "config" / "cyberport5.yaml"),
                          args.repeat):
        print(row)
    big = site_from_dict(generate_site(SiteSpec(site_id="big", name="big", racks=2000, halls=4)))
    for row in bench_site("synthetic", big, args.repeat):
        print(row)


if __name__ == "__main__":
    main()
