"""CLI verbs of discovery: `dcim discover modbus|opcua`, which draft a site fragment.

Both only read: Modbus function codes 3, 4 and 43/14; OPC UA Browse and Read. What they
find is printed (stderr) and the draft (gateway, profiles, devices) is written to -o or
stdout, to be checked by a person and pasted into a site file (docs/discovery.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def _host_port(text: str, default_port: int = 502) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:  # no port, or a bare IPv6 address
        return text.strip("[]"), default_port
    return host.strip("[]"), int(port)


def _emit(text: str, output: str) -> None:
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)


def _cmd_modbus(args: argparse.Namespace) -> int:
    from dcim.collectors.discover_modbus import TcpTransport, parse_units, scan
    from dcim.collectors.discover_modbus_draft import build_draft, render_draft

    try:
        host, port = _host_port(args.target)
        units = parse_units(args.units)
    except ValueError as exc:
        print(f"dcim discover modbus: {exc}", file=sys.stderr)
        return 2

    async def run() -> Any:
        transport = TcpTransport(host, port, args.timeout)
        try:
            await transport.connect()
            return await scan(transport, units, host=host, port=port,
                              max_requests=args.max_requests, budget_s=args.budget)
        finally:
            await transport.close()

    try:
        result = asyncio.run(run())
    except (OSError, TimeoutError) as exc:
        print(f"cannot connect to {host}:{port}: {exc or 'timed out'}", file=sys.stderr)
        return 1
    for info in result.units:
        print(info.describe(), file=sys.stderr)
    print(f"{len(result.units)} unit(s) of {len(units)} answered; {result.requests} requests in "
          f"{result.elapsed_s:.1f} s" + (f"; stopped: {result.stopped}" if result.stopped else ""),
          file=sys.stderr)
    draft = build_draft(result, gateway_id=args.gateway_id, monitors=args.monitors,
                        timeout_s=args.timeout)
    _emit(render_draft(draft), args.output)
    return 0 if result.units else 1


def _opcua_gateway(args: argparse.Namespace) -> Any:
    from dcim.config.site import OpcuaGateway, OpcuaSecurity

    fields: dict[str, Any] = {}
    if args.security != "None":
        fields = {"policy": "Basic256Sha256", "mode": args.security,
                  "certificate": args.certificate, "private_key": args.private_key,
                  "trust_dir": args.trust_dir}
    if args.username or args.password_env:
        fields |= {"username": args.username, "password_env": args.password_env}
    security = OpcuaSecurity(**fields)
    return OpcuaGateway(id=args.gateway_id, protocol="opcua", endpoint=args.url,
                        security=security, timeout_s=args.timeout)


def _login_hint(exc: Exception, args: argparse.Namespace) -> str:
    """What to try when the server refused the session's user (anonymous or a password)."""
    name = type(exc).__name__
    if name in ("BadIdentityTokenInvalid", "BadIdentityTokenRejected") and not args.username:
        return "\n(the server refuses anonymous sessions: give --username and --password-env)"
    if name in ("BadUserAccessDenied", "BadIdentityTokenRejected") and args.username:
        return (f"\n(the server refused user {args.username!r}: check the name and the "
                f"password in ${args.password_env})")
    return ""


def _cmd_opcua(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from dcim.collectors.discover_opcua import browse, build_draft, render
    from dcim.collectors.opcua_client import ClientSettings, UntrustedServer, close_client, open_client

    try:
        gateway = _opcua_gateway(args)
        settings = ClientSettings.from_gateway(gateway)
    except (ValidationError, ValueError) as exc:
        print(f"dcim discover opcua: {exc}", file=sys.stderr)
        return 2

    async def lost(_: Exception) -> None:
        return None

    async def run() -> Any:
        client = await open_client(settings, on_lost=lost)
        try:
            return await browse(client, max_nodes=args.max_nodes, endpoint=args.url)
        finally:
            await close_client(client, alive=True)

    try:
        inv = asyncio.run(run())
    except UntrustedServer as exc:
        print(f"{exc}\n(see `dcim pki trust {args.url}`)", file=sys.stderr)
        return 1
    except Exception as exc:  # asyncua raises many kinds (OSError, TimeoutError, UaError)
        print(f"cannot browse {args.url}: {type(exc).__name__}: {exc}{_login_hint(exc, args)}",
              file=sys.stderr)
        return 1
    print("namespaces: " + ", ".join(inv.namespaces), file=sys.stderr)
    for var in inv.variables:
        unit = f" [{var.unit}]" if var.unit else ""
        print(f"{'/'.join(n for _, n in var.path)}  {var.node}  {var.data_type}{unit}",
              file=sys.stderr)
    print(f"{len(inv.variables)} variables, {inv.nodes_visited} nodes visited"
          + (" (stopped at --max-nodes)" if inv.truncated else ""), file=sys.stderr)
    security = gateway.security.model_dump(exclude_defaults=True) or None
    data, notes = build_draft(inv, gateway_id=args.gateway_id, monitors=args.monitors,
                              security=security)
    _emit(render(data, notes, f"Draft from: dcim discover opcua {args.url}"), args.output)
    return 0 if inv.variables else 1


def _draft_args(p: argparse.ArgumentParser, *, gateway_id: str) -> None:
    """What both kinds of draft take: the gateway's id, what the devices measure, the file."""
    p.add_argument("--gateway-id", default=gateway_id, help="id of the gateway in the draft")
    p.add_argument("--monitors", default=None,
                   help="component or rack every device measures (default: omitted, the site)")
    p.add_argument("-o", "--output", default="-", help="draft file (default stdout)")


def add_parsers(sub: Any) -> None:
    """Register `discover modbus` and `discover opcua` on the main parser's subcommands."""
    d = sub.add_parser("discover", help="find devices on a gateway and draft their site entries",
                       description="Read-only discovery of Modbus TCP units and OPC UA address "
                                   "spaces; writes a draft gateway + profiles + devices.")
    dsub = d.add_subparsers(dest="discover_command", required=True, metavar="PROTOCOL")

    m = dsub.add_parser("modbus", help="scan unit ids behind a Modbus TCP gateway",
                        description="Probe unit ids with function 3/4 reads and 43/14 device "
                                    "identification only (never a write); detect SunSpec "
                                    "('SunS' at 40000, 0 or 50000) and walk its models.")
    m.add_argument("target", metavar="HOST[:PORT]", help="gateway address (port 502 by default)")
    m.add_argument("--units", default="1-247", help="unit ids, e.g. 1-10,20 (default 1-247)")
    m.add_argument("--timeout", type=float, default=1.0, help="seconds per request (default 1)")
    m.add_argument("--max-requests", type=int, default=2000,
                   help="stop after this many requests (default 2000)")
    m.add_argument("--budget", type=float, default=120.0,
                   help="stop after this many seconds (default 120)")
    _draft_args(m, gateway_id="gw1")
    m.set_defaults(func=_cmd_modbus)

    o = dsub.add_parser("opcua", help="browse an OPC UA server's address space",
                        description="Browse from Objects (bounded), list variables with data "
                                    "type and engineering unit, and draft profiles addressed "
                                    "by namespace URI.")
    o.add_argument("url", help="endpoint, e.g. opc.tcp://10.0.0.5:4840")
    o.add_argument("--security", choices=("None", "Sign", "SignAndEncrypt"), default="None",
                   help="message security with Basic256Sha256 (needs --certificate, "
                        "--private-key, --trust-dir)")
    o.add_argument("--certificate", default=None, help="client certificate (dcim pki client)")
    o.add_argument("--private-key", default=None, help="client private key (PEM)")
    o.add_argument("--trust-dir", default=None, help="folder of trusted server certificates")
    o.add_argument("--username", default=None,
                   help="user name of a username/password login (needs --password-env)")
    o.add_argument("--password-env", default=None, metavar="VAR",
                   help="environment variable holding the user's password (never on argv)")
    o.add_argument("--timeout", type=float, default=4.0, help="seconds per request (default 4)")
    o.add_argument("--max-nodes", type=int, default=2000,
                   help="stop browsing after this many nodes (default 2000)")
    _draft_args(o, gateway_id="bms")
    o.set_defaults(func=_cmd_opcua)
