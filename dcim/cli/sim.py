"""CLI verbs of the simulators: `dcim simulate` and `dcim fault`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any

DEFAULT_CONTROL_PORT = 8790


def _parse_time(text: str | None) -> float | None:
    if text is None:
        return None
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


async def _simulate(args: argparse.Namespace) -> int:
    from dcim.site import load_site
    from dcim.simulators.control import start_control
    from dcim.simulators.faults import load_scenario, parse_duration
    from dcim.simulators.runner import Simulator
    from dcim.storage.factory import open_storage

    site = load_site(args.site)
    start_s = _parse_time(args.start)
    if args.backfill:
        from dcim.simulators.backfill import backfill

        span = parse_duration(args.backfill)
        end = start_s + span if start_s is not None else time.time()
        begin = start_s if start_s is not None else end - span
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        try:
            played = load_scenario(args.scenario, site).faults if args.scenario else []
            figures = await backfill(site, storage, start_s=begin, end_s=end,
                                     step_s=parse_duration(args.step), seed=args.seed,
                                     faults=played)
        finally:
            await storage.close()
        print(f"backfilled {figures['samples']:,} samples ({figures['steps']:,} steps of "
              f"{args.step}) into {site.config.storage.backend} in {figures['seconds']:.1f} s"
              + (f", {figures['faults']:.0f} equipment fault changes played" if played else ""))
        return 0
    sim = Simulator(site, seed=args.seed, speed=args.speed, start_s=start_s, host=args.host,
                    free_ports=args.free_ports, truth_path=args.truth)
    await sim.start()
    control = await start_control(sim, args.host, args.control_port)
    try:
        if args.scenario:
            faults = sim.load_scenario(load_scenario(args.scenario, site))
            print(f"scenario {args.scenario}: {len(faults)} faults scheduled")
        print(f"simulating {site.id}: {len(site.devices)} devices at speed {args.speed:g}x")
        for gateway, (host, port) in sorted(sim.endpoints().items()):
            print(f"  {gateway:<16} {host}:{port}")
        print(f"  control API      http://{args.host}:{args.control_port}/status")
        print("Ctrl-C to stop")
        while True:
            await asyncio.sleep(3600)
    finally:
        await control.cleanup()
        await sim.stop()


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the simulators (or backfill a store) for a site."""
    from dcim.site import ConfigError

    try:
        return asyncio.run(_simulate(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _control(args: argparse.Namespace, method: str, path: str,
             body: dict[str, Any] | None = None) -> Any:
    url = args.control.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}")
        raise SystemExit(f"{method} {url}: {exc.code} {detail.get('error', '')} "
                         f"{'; '.join(detail.get('details', []))}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"cannot reach the simulator's control API at {url}: {exc.reason} "
                         "(is `dcim simulate` or `dcim demo` running?)") from None


def cmd_fault(args: argparse.Namespace) -> int:
    """Inject, list or clear faults of a running simulator."""
    if args.fault_command == "inject":
        params = {}
        for item in args.param:
            key, _, value = item.partition("=")
            params[key] = float(value)
        body = {"kind": args.kind, "target": args.target, "point": args.point,
                "duration": args.duration, "at": args.at, "params": params}
        fault = _control(args, "POST", "/faults", body)
        print(f"fault {fault['id']}: {fault['kind']} on {fault['target']}"
              + (f".{fault['point']}" if fault.get("point") else ""))
    elif args.fault_command == "list":
        for fault in _control(args, "GET", "/faults"):
            state = "active" if fault["active"] else "scheduled"
            print(f"{fault['id']:>4} {state:<9} {fault['kind']:<16} {fault['target']}"
                  + (f".{fault['point']}" if fault.get("point") else ""))
    elif args.fault_command == "clear":
        _control(args, "DELETE", f"/faults/{args.fault_id}")
        print(f"fault {args.fault_id} cleared")
    else:
        print(json.dumps(_control(args, "GET", "/truth"), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`dcim demo`: the whole system on simulators, with history, control API and story."""
    from dcim.demo import DemoOptions, run_demo
    from dcim.site import ConfigError

    demo = DemoOptions(control_port=None if args.control_port < 0 else args.control_port,
                       story=not args.no_story, story_speed=args.story_speed)
    try:
        return run_demo(args.site, seconds=args.seconds, simulate=not args.no_simulate,
                        host=args.host, port=None if args.no_dashboard else args.port,
                        backfill_s=args.backfill, demo=demo)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1


def add_demo_options(d: argparse.ArgumentParser) -> None:
    """The demo's own options (control API, story) on the `demo` parser."""

    d.add_argument("--control-port", type=int, default=DEFAULT_CONTROL_PORT,
                   help="the simulator's control API on 127.0.0.1, which `dcim fault` talks "
                        f"to (default {DEFAULT_CONTROL_PORT}; 0 a free port, -1 none)")
    d.add_argument("--no-story", action="store_true",
                   help="do not play the incident timeline (dcim/demo_story.py) on the plant")
    d.add_argument("--story-speed", type=float, default=1.0, metavar="FACTOR",
                   help="play the incident timeline FACTOR times faster (default 1: the "
                        "first incident after a minute, the last ends after 29)")
    d.set_defaults(func=cmd_demo)


def add_parsers(sub: Any) -> None:
    """Register `simulate` and `fault` on the main parser's subcommands (and the demo's
    options on `demo`, when it is registered before)."""
    if "demo" in sub.choices:
        add_demo_options(sub.choices["demo"])
    s = sub.add_parser(
        "simulate", help="serve a site's devices as real Modbus TCP / OPC UA servers",
        description="Run the plant model of a site and serve every device on its configured "
                    "gateway (Modbus TCP, OPC UA) with injectable faults, or backfill a store "
                    "with accelerated history (--backfill).")
    s.add_argument("site", help="site YAML file")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    s.add_argument("--start", default=None, help="simulated start time, ISO 8601 (default now)")
    s.add_argument("--host", default="127.0.0.1", help="address to serve on (default loopback)")
    s.add_argument("--free-ports", action="store_true", help="ignore configured ports, bind free ones")
    s.add_argument("--scenario", default=None,
                   help="fault timeline (YAML) to play; with --backfill its equipment faults "
                        "(trips) are written into the history")
    s.add_argument("--truth", default="var/fault-truth.jsonl", help="ground-truth log of faults")
    s.add_argument("--control-port", type=int, default=DEFAULT_CONTROL_PORT,
                   help=f"HTTP control API port on the host (default {DEFAULT_CONTROL_PORT})")
    s.add_argument("--backfill", default=None, metavar="SPAN",
                   help="write SPAN (e.g. 30d) of history into the site's store and exit")
    s.add_argument("--step", default="60s", help="backfill sample spacing (default 60s)")
    s.set_defaults(func=cmd_simulate)

    f = sub.add_parser("fault", help="inject, list or clear faults of a running simulator",
                       description="Talk to `dcim simulate`'s control API.")
    f.add_argument("--control", default=f"http://127.0.0.1:{DEFAULT_CONTROL_PORT}",
                   help="control API base URL")
    fsub = f.add_subparsers(dest="fault_command", required=True, metavar="ACTION")
    inj = fsub.add_parser("inject", help="start a fault now (or after --at)")
    from dcim.simulators.faults import COMM_FAULTS, EQUIPMENT_FAULTS, SENSOR_FAULTS

    inj.add_argument("kind", choices=[*EQUIPMENT_FAULTS, *SENSOR_FAULTS, *COMM_FAULTS],
                     metavar="KIND",
                     help="equipment: " + ", ".join(EQUIPMENT_FAULTS) + "; sensor (needs --point): "
                          + ", ".join(SENSOR_FAULTS) + "; comms: " + ", ".join(COMM_FAULTS))
    inj.add_argument("target", help="component id, device id or gateway id")
    inj.add_argument("--point", default=None, help="point name (sensor faults)")
    inj.add_argument("--duration", default=None, help="e.g. 10m (default: until cleared)")
    inj.add_argument("--at", default="0", help="delay before it starts, e.g. 30s")
    inj.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="fault parameter, e.g. rate_per_h=3 or code=6 (repeatable)")
    lst = fsub.add_parser("list", help="faults scheduled or active")
    clr = fsub.add_parser("clear", help="end a fault now")
    clr.add_argument("fault_id", type=int)
    truth = fsub.add_parser("truth", help="ground truth of every fault so far (JSON)")
    for action in (inj, lst, clr, truth):  # also after the action: `dcim fault inject ... --control URL`
        action.add_argument("--control", default=argparse.SUPPRESS,
                            help="control API base URL (as before the action)")
    f.set_defaults(func=cmd_fault)
