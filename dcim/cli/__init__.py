"""The dcim command line: validate and generate sites, run the demo, benchmarks' helpers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from dcim.logs import setup_logging

log = logging.getLogger("dcim")

# What stops a long-running verb cleanly: Ctrl-C, and what systemd (and `kill`) send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_until_stopped(main: Coroutine[Any, Any, None]) -> str | None:
    """Run main in a new event loop until it returns or SIGINT or SIGTERM comes.

    Ctrl-C (SIGINT) and SIGTERM (systemd's stop) take one path: main's task is cancelled
    once and its own cleanup runs to the end (`dcim run`: collectors closed, buffer flushed
    and closed, alarm journal saved). A further SIGTERM does not cut that cleanup short; a
    second Ctrl-C gives up waiting (KeyboardInterrupt). Returns the name of the signal that
    stopped main, or None when it returned by itself.
    """
    # the handlers to put back, taken before asyncio.run puts in its own for SIGINT
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    return asyncio.run(_until_stopped(main, before))


async def _until_stopped(main: Coroutine[Any, Any, None],
                         before: dict[signal.Signals, Any]) -> str | None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(main, name="dcim-main")
    stopped_by: list[str] = []

    def stop(name: str) -> None:
        if not stopped_by:
            stopped_by.append(name)
            log.info("%s received; stopping", name, extra={"signal": name})
            task.cancel()
        elif name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the cleanup

    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop, sig.name)
        except (ValueError, RuntimeError):  # not the main thread: signals stay as they are
            continue
        installed.append(sig)
    try:
        await task
    except asyncio.CancelledError:
        if not stopped_by:  # cancelled from elsewhere, not by a signal
            raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            if before[sig] is not None:  # None: set outside Python, nothing to put back
                signal.signal(sig, before[sig])
    return stopped_by[0] if stopped_by else None


def _load_for_start(path: str) -> Any:
    """The site of a file after every check a start makes (ConfigError lists what fails)."""
    from dcim.site import ConfigError, load_site
    from dcim.site.preflight import startup_issues

    site = load_site(path)
    issues = startup_issues(site) + _needed_analyses(site)
    if issues:
        raise ConfigError(issues)
    return site


def _needed_analyses(site: Any) -> list[Any]:
    """An analysis the file asks for (a `site.pue:` section) must have what it needs."""
    from dcim.live.build import pue_meters
    from dcim.site import ConfigIssue

    if "pue" not in site.config.site.model_fields_set:
        return []  # not asked for: withheld with its reason when the meters are not there
    _, why = pue_meters(site)
    if why is None:
        return []
    loc = ("site", "pue")
    line = site.lines.line_of(loc) if site.lines is not None else None
    return [ConfigIssue(str(site.source or "<site>"), line, loc,
                        f"{why} (remove the pue: section to run without PUE)")]


def _config_failure(path: str, exc: Exception) -> str:
    """A configuration problem as file:line: field: message lines, never a traceback."""
    from dcim.site import ConfigError

    if isinstance(exc, ConfigError):
        return str(exc)
    return f"{path}: {exc}"


def _withheld(site: Any) -> dict[str, str]:
    """The analyses `dcim run` will withhold on this site, with what the site lacks for each."""
    from dcim.anomaly_service import why_no_anomalies
    from dcim.live.build import plan

    withheld = dict(plan(site).withheld)
    why = why_no_anomalies(site)
    if why is not None:
        withheld["anomalies"] = why
    return withheld


def _cmd_validate(args: argparse.Namespace) -> int:
    from dcim.site import ConfigError
    from dcim.site.summary import summarize

    status = 0
    for path in args.files:
        try:
            site = _load_for_start(path)
            summary = summarize(site, _withheld(site))
        except (ConfigError, ValueError) as exc:
            print(_config_failure(path, exc), file=sys.stderr)
            status = 1
            continue
        print(f"{path}: OK")
        print(summary)
    return status


def _cmd_generate(args: argparse.Namespace) -> int:
    from dcim.site import site_from_dict
    from dcim.site.generate import SiteSpec, generate_site, to_yaml

    spec = SiteSpec(site_id=args.site_id, name=args.name or f"Synthetic site {args.site_id}",
                    halls=args.halls, racks=args.racks, rack_kw=args.rack_kw,
                    base_port=args.base_port, opcua_port=args.opcua_port)
    data = generate_site(spec)
    site = site_from_dict(data, "<generated>")  # never write a file that would not load
    header = (f"# Generated by: dcim site generate --racks {args.racks} --halls {args.halls} "
              f"--rack-kw {args.rack_kw} --site-id {args.site_id}\n"
              f"# {len(site.racks)} racks, {len(site.devices)} devices, {site.point_count()} points\n")
    text = to_yaml(data, header)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}: {len(site.racks)} racks, {len(site.devices)} devices, "
              f"{site.point_count()} points", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dcim.demo import run_demo
    from dcim.site import ConfigError

    try:
        _load_for_start(args.site)  # the checks of `dcim validate`, before anything starts
        return run_demo(args.site, seconds=args.seconds, simulate=False, host=args.host,
                        port=None if args.no_dashboard else args.port)
    except (ConfigError, ValueError) as exc:  # a configuration problem: no traceback
        print(_config_failure(args.site, exc), file=sys.stderr)
        log.debug("run refused", exc_info=True)
        return 1


def _duration(text: str) -> float:
    """An argparse type: '90s', '15m', '1h' -> seconds."""
    from dcim.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dashboard_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the dashboard listens on (default 127.0.0.1: this machine "
                             "only; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=8080,
                        help="dashboard port (default 8080; 0 picks a free one)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every dcim verb."""
    parser = argparse.ArgumentParser(
        prog="dcim",
        description="Data-centre infrastructure monitoring: collectors, storage, analytics, "
                    "dashboards and reports for a site described in one YAML file.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="structured JSON lines for log shippers, or text for people")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check site files and print a summary or every error",
                       description="Validate site files. Prints a summary (devices, points, racks, "
                                   "redundancy design) for a good file, or each error with file, "
                                   "line, field and what was expected. Exit 1 on any error.")
    p.add_argument("files", nargs="+", metavar="FILE", help="site YAML file(s)")
    p.set_defaults(func=_cmd_validate)

    d = sub.add_parser("demo", help="run dcim end to end on a site (the README's first command)",
                       description="Run dcim on a site: start its simulators on loopback, the "
                                   "collectors, the durable buffer, the store and analytics, serve "
                                   "the live dashboard (http://127.0.0.1:8080/ by default) and "
                                   "print a status line until Ctrl-C or SIGTERM, then stop "
                                   "cleanly (exit 0).")
    d.add_argument("site", nargs="?", default="config/cyberport5.yaml", help="site YAML file")
    d.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    d.add_argument("--no-simulate", action="store_true",
                   help="poll the real devices of the site file instead of simulators")
    d.add_argument("--backfill", type=_duration, default=7 * 86400.0, metavar="SPAN",
                   help="simulated history written into the store before the live run, so PUE, "
                        "trends and the anomaly models have data at once (default 7d: every "
                        "point every 20 min, every minute for the last 6.5 h; 0s for none)")
    _dashboard_args(d)  # the demo's own options and handler: dcim/cli/sim.py

    from dcim.cli.sim import add_parsers as add_sim_parsers

    add_sim_parsers(sub)

    from dcim.cli.alarms import add_parsers as add_alarm_parsers

    add_alarm_parsers(sub)

    from dcim.cli.reports import add_parsers as add_report_parsers

    add_report_parsers(sub)

    from dcim.cli.users import add_parsers as add_user_parsers

    add_user_parsers(sub)

    from dcim.cli.discover import add_parsers as add_discover_parsers

    add_discover_parsers(sub)

    from dcim.cli.pki import add_parsers as add_pki_parsers

    add_pki_parsers(sub)

    from dcim.cli.query import add_parsers as add_query_parsers

    add_query_parsers(sub)

    from dcim.cli.profiles import add_parsers as add_profile_parsers

    add_profile_parsers(sub)

    r = sub.add_parser("run", help="collect from the site's real devices into its store",
                       description="Production mode: the collectors of every gateway in the site "
                                   "file, the durable buffer, the store and the analytics, with a "
                                   "live status line, until Ctrl-C or SIGTERM (systemd's stop), "
                                   "then stop cleanly: collectors closed, buffer flushed and "
                                   "closed, alarm journal saved, exit 0. Nothing is written to a "
                                   "device unless its profile marks the point writable.")
    r.add_argument("site", help="site YAML file")
    r.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    _dashboard_args(r)
    r.set_defaults(func=_cmd_run)

    site = sub.add_parser("site", help="site tools (generate)")
    site_sub = site.add_subparsers(dest="site_command", required=True, metavar="SUBCOMMAND")
    g = site_sub.add_parser("generate", help="generate a Tier-III+ site of any size",
                            description="Generate a synthetic site in the reference layout: 2N UPS "
                                        "with N+1 modules, N+1 generators, chillers and CRAH, rows of "
                                        "10 dual-corded racks, one monitor per rack.")
    g.add_argument("--racks", type=int, default=200, help="number of racks (default 200)")
    g.add_argument("--halls", type=int, default=2, help="number of data halls (default 2)")
    g.add_argument("--rack-kw", type=float, default=8.0, help="design kW per rack (default 8)")
    g.add_argument("--site-id", default="synthetic", help="site id (default synthetic)")
    g.add_argument("--name", default=None, help="site name")
    g.add_argument("--base-port", type=int, default=15020, help="first Modbus gateway port")
    g.add_argument("--opcua-port", type=int, default=14840, help="BMS OPC UA port")
    g.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    g.set_defaults(func=_cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dcim` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    # files dcim creates (journal, store, buffer, outbox, models, keys) are its own: 0600/0700
    os.umask(0o077)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # before the event loop runs, or a second Ctrl-C while stopping
        log.info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
