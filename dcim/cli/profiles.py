"""`dcim profiles list|show`: the device library (dcim/library) from the command line."""

from __future__ import annotations

import argparse
import sys

import yaml


def _cmd_list(args: argparse.Namespace) -> int:
    from dcim.library import library

    rows = [("NAME", "PROTOCOL", "DEVICE TYPE", "VENDOR / MODEL", "POINTS")]
    for name, entry in library().items():
        profile = entry.profile
        rows.append((name, profile["protocol"], profile["device_type"],
                     profile.get("vendor_model", ""), str(entry.point_count)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from dcim.library import library, unknown_name_message

    entry = library().get(args.name)
    if entry is None:
        print(f"dcim profiles show: {unknown_name_message(args.name)}", file=sys.stderr)
        return 1
    about = entry.about
    header = [f"# {args.name}: {about.vendor}, {about.model_family}",
              f"# source: {about.source}"]
    if about.notes:
        header.append(f"# notes: {about.notes}")
    header.append(f"# paste under `profiles:` (or use it by name: {{library: {args.name}}})")
    body = yaml.safe_dump({args.name: entry.profile}, sort_keys=False, width=100)
    sys.stdout.write("\n".join(header) + "\n" + body)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dcim profiles` and its subcommands."""
    p = sub.add_parser("profiles", help="the device library: list profiles, show one as YAML",
                       description="Profiles of common devices written from their published "
                                   "register maps (docs/device-library.md). Use one in a site "
                                   "file by name: profiles: {meter: {library: NAME}}.")
    verbs = p.add_subparsers(dest="profiles_command", required=True, metavar="SUBCOMMAND")
    ls = verbs.add_parser("list", help="name, protocol, device type, vendor/model, points")
    ls.set_defaults(func=_cmd_list)
    show = verbs.add_parser("show", help="one profile as YAML, ready to paste under profiles:")
    show.add_argument("name", metavar="NAME", help="library profile name (see `list`)")
    show.set_defaults(func=_cmd_show)
