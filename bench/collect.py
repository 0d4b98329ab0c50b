"""What the Modbus collector costs against a bare poller, a naive one and raw pymodbus.

Run: .venv/bin/python bench/collect.py [--sizes 100,500,2000,ref] [--seconds N] [--runs N]
     [--intervals 2,1,0.5] [--quick]

Per site size: simulators in worker processes (simulators/procs.py), one influxd 1.6.7 on
loopback, and every case in a child process of its own whose CPU is read from
/proc/<pid>/stat (bench/_collect_cases.py says what each case does). Sizes 100/500/2000 are
generated sites (racks 80/450/1800 plus their power devices); "ref" is config/cyberport5.yaml
(its Modbus devices only: the OPC UA BMS is not served or polled here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, cpu_seconds, machine, table

sys.path.insert(0, str(REPO / "tests"))
from influxd import InfluxdProcess, influxd_binary  # noqa: E402

from dcim.collectors.modbus_codec import plan_reads  # noqa: E402
from dcim.simulators import procs  # noqa: E402
from dcim.site import load_site  # noqa: E402
from dcim.site.generate import SiteSpec, generate_site, to_yaml  # noqa: E402
from dcim.config.site import ModbusGateway, ModbusPoint  # noqa: E402

REFERENCE = REPO / "config" / "cyberport5.yaml"
RACKS = {"100": (80, 1), "500": (450, 2), "2000": (1800, 4)}
CASES = ("collector", "bare", "naive", "limit")


def site_file(size: str, tmp: Path, max_in_flight: int = 0) -> Path:
    """The site YAML of a size (generated, or the reference file); max_in_flight > 0 overrides
    every Modbus gateway's setting."""
    if size == "ref":
        if not max_in_flight:
            return REFERENCE
        import yaml
        data = yaml.safe_load(REFERENCE.read_text())
    else:
        racks, halls = RACKS[size]
        data = generate_site(SiteSpec(racks=racks, halls=halls))
    for gw in data["gateways"]:
        if max_in_flight and gw.get("protocol") == "modbus_tcp":
            gw["max_in_flight"] = max_in_flight
    path = tmp / f"site-{size}-{max_in_flight}.yaml"
    path.write_text(to_yaml(data))
    return path


def describe(path: Path) -> dict[str, int]:
    """Modbus devices, points, planned reads per poll of every device, and connections."""
    site = load_site(path)
    devices = points = reads = 0
    gateways: set[str] = set()
    conns = 0
    for d in site.devices.values():
        if d.protocol != "modbus" or not isinstance(d.gateway, ModbusGateway):
            continue
        pts = [p for p in d.profile.points if isinstance(p, ModbusPoint)]
        devices += 1
        points += len([p for p in pts if p.type not in ("string", "sunssf")])
        reads += len(plan_reads(pts, max_gap=d.profile.max_gap))
        if d.gateway.id not in gateways:
            gateways.add(d.gateway.id)
            conns += d.gateway.max_in_flight
    return {"devices": devices, "points": points, "reads": reads, "gateways": len(gateways),
            "in_flight": conns}


# With --pin: CPUs of the case process ("case") and of the servers ("servers").
PIN: dict[str, set[int]] = {}


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (influxd is a Go program with many) to cpus."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass  # a thread that just ended


def run_child(case: str, site: Path, endpoints: dict[str, Any], url: str, db: str,
              seconds: float, watch: list[int], interval: float = 0.0) -> dict[str, Any]:
    """Run one case in its own process; also the CPU the simulators and influxd used meanwhile."""
    before = [cpu_seconds(pid) for pid in watch]
    t0 = time.monotonic()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--site", str(site),
           "--endpoints", json.dumps(endpoints), "--url", url, "--db", db,
           "--seconds", str(seconds), "--interval", str(interval)]
    cpus = os.sched_getaffinity(0)
    pin = PIN["case"] if PIN else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 6 + 120,
                         preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None)
    assert os.sched_getaffinity(0) == cpus
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    if out.stderr.strip() and os.environ.get("DCIM_BENCH_FSYNC_TIME"):
        print("  ", out.stderr.strip().splitlines()[-1], flush=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    wall = time.monotonic() - t0
    others = [cpu_seconds(pid) - b for pid, b in zip(watch, before)]
    result["sim_core"] = sum(others[:-1]) / wall
    result["influxd_core"] = others[-1] / wall
    return result


def throughput_rows(size: str, results: dict[str, dict[str, Any]]) -> list[list[object]]:
    """One table row per case, ratios against the same run's bare, naive and limit."""
    rows: list[list[object]] = []
    bare, naive, limit = results["bare"], results["naive"], results["limit"]
    for case in CASES:
        r = results[case]
        cpu = r["cpu_per_10k_polls"]
        rows.append([
            size, case, r["polls_per_s"], r["requests_per_s"],
            r["polls_per_s"] * r.get("points_per_poll", 0) if case != "limit" else "-",
            cpu if cpu is not None else "-", r["core"],
            cpu / bare["cpu_per_10k_polls"] if cpu else "-",
            r["polls_per_s"] / naive["polls_per_s"],
            r["requests_per_s"] / limit["requests_per_s"],
            r["sim_core"], r["influxd_core"],
        ])
    return rows


HEADERS = ["size", "case", "polls/s", "requests/s", "points/s", "CPU-s /10k polls",
           "core", "CPU vs bare", "polls vs naive", "requests vs limit", "sim cores",
           "influxd core"]


def main() -> None:
    """Parse options, run every size and case, print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,500,2000,ref")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--intervals", default="2,1,0.5",
                        help="cadence intervals tried (longest first); '' skips the test")
    parser.add_argument("--interval-seconds", type=float, default=10.0)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--max-in-flight", type=int, default=0,
                        help="override every Modbus gateway's max_in_flight (0: as in the site)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=False,
                        help="experiment: run each case on CPUs of its own and the simulators "
                             "and influxd on the first CPU (needs 2+ CPUs; default off)")
    parser.add_argument("--quick", action="store_true", help="sizes 100,2000; 3 s; one run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--site", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from _collect_cases import child_main
        child_main(args.child, args.site, args.endpoints, args.url, args.db, args.seconds,
                   args.interval)
        return
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        PIN.update(servers={cpus[0]}, case=set(cpus[1:]))
    if args.quick:
        args.sizes, args.seconds, args.runs, args.intervals = "100,2000", 3.0, 1, "1"
    binary = influxd_binary()
    if binary is None:
        raise SystemExit("influxd is not installed: apt-get install -y influxdb")
    print(f"machine: {machine()}")
    if PIN:
        print(f"pinned: each case on CPU {sorted(PIN['case'])}, simulators and influxd on CPU "
              f"{sorted(PIN['servers'])}")
    print(f"command: {' '.join(sys.argv)}")
    cases = [c for c in args.cases.split(",") if c]
    intervals = [float(x) for x in args.intervals.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="dcim-bench-collect-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "influxd").mkdir()
        influxd = InfluxdProcess(tmp / "influxd", binary)
        influxd.start()
        try:
            for size in args.sizes.split(","):
                run_size(size, tmp, influxd, cases, intervals, args)
        finally:
            influxd.stop()


def run_size(size: str, tmp: Path, influxd: InfluxdProcess, cases: list[str],
             intervals: list[float], args: argparse.Namespace) -> None:
    """Every case (and the interval test) for one site size, with its own simulators."""
    path = site_file(size, tmp, args.max_in_flight)
    info = describe(path)
    workers = 3 if info["devices"] > 1000 else 2
    served = procs.launch(path, workers, protocols=("modbus_tcp",))
    try:
        endpoints = {k: v for w in served for k, v in w.endpoints.items()}
        assert influxd._proc is not None
        watch = [w.process.pid for w in served] + [influxd._proc.pid]
        if PIN:
            for pid in watch:
                pin_process(pid, PIN["servers"])
        override = f" (max_in_flight {args.max_in_flight})" if args.max_in_flight else ""
        print(f"\n### size {size}{override}: {info['devices']} Modbus devices, {info['points']} points, "
              f"{info['reads']} requests per poll of every device, {info['gateways']} gateways, "
              f"{info['in_flight']} requests in flight at most; {workers} simulator processes")
        rows: list[list[object]] = []
        for run in range(1, args.runs + 1):
            results = {}
            for case in cases:
                db = f"bench_{size}_{case}_{run}_{int(time.time())}"
                r = run_child(case, path, endpoints, influxd.url, db, args.seconds, watch)
                r["points_per_poll"] = info["points"] / info["devices"]
                results[case] = r
                print(f"  run {run} {case}: {json.dumps(r)}", flush=True)
            if set(CASES) <= set(results):
                rows += throughput_rows(f"{size} run {run}", results)
        if rows:
            print(table(HEADERS, rows))
        if intervals:
            interval_rows = []
            for interval in intervals:
                db = f"bench_{size}_interval_{interval:g}_{int(time.time())}"
                r = run_child("interval", path, endpoints, influxd.url, db,
                              args.interval_seconds, watch, interval)
                print(f"  interval {interval:g}: {json.dumps(r)}", flush=True)
                interval_rows.append([size, interval, r["cycles"], r["polls"], r["errors"],
                                      r["missed"], r["overruns"], r["max_cycle_s"], r["core"],
                                      r["sim_core"]])
            print(table(["size", "interval s", "cycles", "polls", "errors", "missed",
                         "overruns", "longest cycle s", "collector core", "sim cores"],
                        interval_rows))
    finally:
        procs.stop(served)


if __name__ == "__main__":
    main()
