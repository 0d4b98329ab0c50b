"""CLI verbs of the alarm system: `dcim alarms list|history|verify|kpi|ack|shelve|...`.

Reading verbs open the site's alarm journal directly (it is SQLite in WAL mode: reading while
the system runs is safe). Operator actions go through the running system's dashboard API, so
the engine that holds the alarms makes the change, journals it and tells notifications.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from dcim.config.alarms import AlarmsConfig

NS = 1_000_000_000
ACTIONS = {"ack": "ack", "shelve": "shelve", "unshelve": "unshelve", "reset": "reset",
           "out-of-service": "out_of_service", "return-to-service": "return_to_service"}


def _journal_site(args: argparse.Namespace) -> tuple[Path, str, AlarmsConfig]:
    """The journal file, the site's time zone and its `alarms:` section."""
    from dcim.site import load_site

    site = load_site(args.site)
    path = args.journal or site.config.alarms.journal_file(site.id)
    if not Path(path).exists():
        raise FileNotFoundError(f"no alarm journal at {path} (has the system run here? "
                                "use --journal to point at one)")
    return Path(path), site.config.site.timezone, site.config.alarms


def _journal_path(args: argparse.Namespace) -> tuple[Path, str]:
    """The journal file and the site's time zone (from --journal or the site file)."""
    path, tz, _ = _journal_site(args)
    return path, tz


# Shown escaped, never raw: control (ESC, BEL, NUL, newlines), format (bidi overrides,
# zero-width), surrogates, unassigned, line and paragraph separators. Journal text (names,
# comments, messages) must not be able to drive the terminal or forge output lines.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def printable(text: str | None) -> str:
    """Text with its control and format characters escaped visibly (\\x1b, \\u200b, ...)."""
    if text is None:
        return ""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) not in ESCAPED_CATEGORIES:
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(repr(ch)[1:-1])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _local(time_ns: int | None, tz: str) -> str:
    if time_ns is None:
        return "-"
    return datetime.fromtimestamp(time_ns / NS, timezone.utc).astimezone(
        ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _list(args: argparse.Namespace) -> int:
    from dcim.alarms.journal import AlarmJournal
    from dcim.alarms.engine import AlarmEngine

    path, tz = _journal_path(args)
    journal = AlarmJournal(path, heads=False)
    try:
        alarms = AlarmEngine(journal=journal).active()
    finally:
        journal.close()
    if not alarms:
        print("no alarms: every condition is normal and acknowledged")
        return 0
    print(f"{'priority':<9} {'state':<24} {'since':<19}  alarm / message")
    for a in alarms:
        flags = [f"shelved by {printable(a.shelved_by)} until {_local(a.shelved_until_ns, tz)}"
                 if a.shelved else "",
                 f"suppressed: {printable(a.suppressed_by)}" if a.suppressed else "",
                 f"out of service ({printable(a.out_of_service_by)})" if a.out_of_service else "",
                 f"acknowledged by {printable(a.acked_by)}" if a.acked_by else ""]
        print(f"{a.priority.value:<9} {a.state.value:<24} {_local(a.active_since_ns, tz):<19}  "
              f"{printable(a.id)}\n{'':<55}{printable(a.message)}"
              + "".join(f"\n{'':<55}[{f}]" for f in flags if f))
    return 0


def _history(args: argparse.Namespace) -> int:
    from dcim.alarms.journal import AlarmJournal

    path, tz = _journal_path(args)
    journal = AlarmJournal(path, heads=False)
    try:
        end = time.time_ns()
        events = journal.events(end - int(args.hours * 3600 * NS), end + 1, alarm_id=args.alarm)
    finally:
        journal.close()
    for e in events:
        who = "" if e.user == "system" else f" by {printable(e.user)}"
        note = f" ({printable(e.comment)})" if e.comment else ""
        quiet = "" if e.announce else " [not announced]"
        print(f"#{e.seq:<6} {_local(e.time_ns, tz)}  {e.action.value:<17} {e.priority.value:<8} "
              f"{printable(e.alarm_id)}{who}{note}{quiet}")
    print(f"{len(events)} events in the last {args.hours:g} h")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dcim.alarms.journal import AlarmJournal

    path, _, config = _journal_site(args)
    sources, notes = _head_logs(args, path, config)
    key, key_note = _verify_key(args, config)
    notes += [key_note] if key_note else []
    journal = AlarmJournal(path, heads=False)
    try:
        check = journal.verify(sources, key=key, expect=args.expect_head or ())
    finally:
        journal.close()
    for note in [*notes, *check.notes]:
        print(f"note: {printable(note)}")
    if not check.ok:
        for problem in check.problems:
            print(f"{path}: {printable(problem)}", file=sys.stderr)
        return 1
    seq, head = check.head
    anchored = (f"; {check.heads_checked} exported heads hold" if check.heads_checked
                else "; NOT anchored (no exported heads)")
    sealed = f"alarm records match seal #{check.seals}" if check.seals else "no seal yet"
    print(f"{path}: chain intact, {check.events} events, {sealed}{anchored}; "
          f"head #{seq} {head}")
    return 0


def _head_logs(args: argparse.Namespace, path: Path,
               config: AlarmsConfig) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The head logs to check (--heads, else the site's if it exists) and notes on them."""
    from dcim.alarms.journal_heads import default_head_log

    if args.heads:
        files = [Path(f) for f in args.heads]
        for file in files:
            if not file.exists():
                raise FileNotFoundError(f"no head log at {file}")
    else:
        default = Path(config.head_log_path) if config.head_log_path else default_head_log(path)
        if not default.exists():
            return [], [f"no head log at {default} (give --heads FILE, the shipped copy)"]
        files = [default]
    return [(str(f), f.read_text(encoding="utf-8", errors="replace").splitlines())
            for f in files], []


def _verify_key(args: argparse.Namespace, config: AlarmsConfig) -> tuple[bytes | None, str]:
    """The key that checks head signatures: --key-file, else the site's (a note if absent)."""
    from dcim.alarms.journal_heads import JournalKeyError, load_key

    if args.key_file is not None:
        return load_key(None, args.key_file), ""
    try:
        return load_key(config.journal_key_env, config.journal_key_file), ""
    except JournalKeyError as exc:
        return None, f"the site's journal key is not available here ({exc})"


def _seq_hash(text: str) -> tuple[int, str]:
    """SEQ:HASH as given to --expect-head."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise argparse.ArgumentTypeError(f"expected SEQ:HASH (a number, a colon and 64 "
                                         f"lowercase hex digits), got {text!r}")
    return int(seq), digest


def _journal_since(journal: Any, head_log: Path, start_ns: int,
                   events: list[Any]) -> int | None:
    """The earliest evidence that the journal was recording: an event before the period, its
    first event in it, or the first head it exported; None when there is none."""
    before = journal.events(0, start_ns, limit=1)
    times = [e.time_ns for e in before[:1] + events[:1]]
    try:
        with head_log.open(encoding="utf-8", errors="replace") as lines:
            first = json.loads(next(lines, "") or "null")
        if isinstance(first, dict) and isinstance(first.get("time_ns"), int):
            times.append(first["time_ns"])
    except (OSError, ValueError):
        pass  # no head log (or not one): the events alone say
    return min(times, default=None)


def _kpi(args: argparse.Namespace) -> int:
    from dcim.alarms.journal import AlarmJournal
    from dcim.alarms.journal_heads import default_head_log
    from dcim.analytics.alarm_kpi import NOT_ENOUGH, alarm_kpis, assessed_start, verdicts

    path, tz, config = _journal_site(args)
    end_ns = time.time_ns() if args.end is None else int(
        datetime.fromisoformat(args.end).replace(tzinfo=ZoneInfo(tz)).timestamp() * NS)
    asked_ns = end_ns - int(args.days * 86400 * NS)
    head_log = Path(config.head_log_path) if config.head_log_path else default_head_log(path)
    journal = AlarmJournal(path, heads=False)
    try:  # a day before the period too: alarms already active or shelved when it starts
        events = journal.events(asked_ns - 86400 * NS, end_ns)
        since_ns = _journal_since(journal, head_log, asked_ns,
                                  [e for e in events if e.time_ns >= asked_ns])
    finally:
        journal.close()
    start_ns = assessed_start(asked_ns, end_ns, since_ns)
    print(f"Alarm performance {_local(asked_ns, tz)} to {_local(end_ns, tz)} ({args.days:g} days "
          f"asked), journal {path}")
    if start_ns is None:
        print(f"  {NOT_ENOUGH}: the journal holds no event and no exported head before "
              f"{_local(end_ns, tz)}, so the period it covers is unknown")
        return 0
    if start_ns > asked_ns:
        print(f"  the journal covers {_local(start_ns, tz)} on: "
              f"{(end_ns - start_ns) / NS / 86400:.2f} days assessed")
    k = alarm_kpis(events, start_ns, end_ns)
    print(f"  annunciated alarms {k.annunciated:,} (all raises {k.raises:,}); "
          f"{k.per_10min:.2f} per 10 min, {k.per_day:.1f} per day, peak {k.peak_10min} in 10 min")
    print(f"  floods {len(k.floods)}, {k.flood_share:.2%} of the time; chattering "
          f"{len(k.chattering)}; stale now {len(k.stale_at_end)}; active now {k.active_at_end}")
    if k.ack_median_s is not None:
        print(f"  acknowledged {k.acked:,}: median {k.ack_median_s:,.0f} s, "
              f"90th percentile {k.ack_p90_s or 0:,.0f} s; never acknowledged {k.unacked:,}")
    for actor in k.bad_actors[:5]:
        print(f"  frequent: {printable(actor.alarm_id)} {actor.raises:,} raises "
              f"({actor.share:.1%})")
    print("Against ISA-18.2 / EEMUA 191:")
    for name, met, text in verdicts(k, asked_s=(end_ns - asked_ns) / NS):
        print(f"  [{NOT_ENOUGH if met is None else 'met' if met else 'NOT MET'}] {name}: {text}")
    return 0


def _act(args: argparse.Namespace) -> int:
    action = ACTIONS[args.alarms_command]
    token = args.token or os.environ.get("DCIM_TOKEN", "")
    if not token and not args.user:  # a signed-in dashboard journals the token's user instead
        print(f"{args.alarms_command} needs --user (or --token / DCIM_TOKEN)", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"alarm_id": args.alarm_id, "comment": args.comment or ""}
    if args.user:
        body["user"] = args.user
    if action in ("shelve", "out_of_service"):
        if not args.comment:
            print(f"{args.alarms_command} needs --reason", file=sys.stderr)
            return 2
        body["reason"] = args.comment
        body["minutes"] = args.minutes
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        args.url.rstrip("/") + f"/api/alarms/{action}", data=json.dumps(body).encode(),
        headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            result = json.load(reply)
    except urllib.error.HTTPError as exc:
        print(f"refused ({exc.code}): {json.load(exc).get('error', exc.reason)}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"no dcim dashboard at {args.url} ({exc.reason}); is the system running?",
              file=sys.stderr)
        return 1
    print(f"{result['alarm_id']}: {result['action']} -> {result['state']} (journal #{result['seq']})")
    return 0


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from dcim.alarms.journal_heads import JournalKeyError
        from dcim.site import ConfigError

        try:
            return int(func(args))
        except (ConfigError, FileNotFoundError, JournalKeyError) as exc:
            print(exc, file=sys.stderr)
            return 1
    return wrapped


def add_parsers(sub: Any) -> None:
    """Add `dcim alarms ...` to the top-level subparsers."""
    a = sub.add_parser("alarms", help="alarms: list, history, verify, KPIs, operator actions",
                       description="The alarm journal and operator actions. Reading verbs open "
                                   "the journal of the site; actions go to the running system's "
                                   "dashboard API (--url).")
    verbs = a.add_subparsers(dest="alarms_command", required=True, metavar="VERB")

    def reader(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("site", nargs="?", default="config/cyberport5.yaml", help="site YAML file")
        p.add_argument("--journal", default=None, help="alarm journal file (default: the site's)")
        p.set_defaults(func=_run(func))
        return p

    reader("list", "alarms that are active, unacknowledged, shelved or out of service", _list)
    h = reader("history", "journal events, oldest first", _history)
    h.add_argument("--hours", type=float, default=24.0, help="how far back (default 24)")
    h.add_argument("--alarm", default=None, help="only this alarm id")
    v = reader("verify", "check the journal's hash chains, its alarm records and the heads "
                         "exported from it (exit 1 if it was altered)", _verify)
    v.add_argument("--heads", action="append", default=None, metavar="FILE",
                   help="a head log (repeat for rotated files, oldest first; default: the "
                        "site's alarms.head_log_path or the one beside the journal)")
    v.add_argument("--expect-head", action="append", type=_seq_hash, default=None,
                   metavar="SEQ:HASH", help="a head noted elsewhere: the journal must hold it")
    v.add_argument("--key-file", default=None,
                   help="the key that signed the heads (default: the site's journal key)")
    k = reader("kpi", "alarm-system performance against ISA-18.2 / EEMUA 191", _kpi)
    k.add_argument("--days", type=float, default=30.0, help="period length (default 30)")
    k.add_argument("--end", default=None, help="period end, site-local ISO time (default now)")
    for verb in ACTIONS:
        p = verbs.add_parser(verb, help=f"{verb} an alarm (through the running dashboard)",
                             description=f"{verb} an alarm in the running system; journaled "
                                         "with your name.")
        p.add_argument("alarm_id", help="the alarm id, as `dcim alarms list` shows it")
        p.add_argument("--user", default=None,
                       help="your name (journaled) on a dashboard without sign-in")
        p.add_argument("--token", default=None,
                       help="API token of a dashboard with sign-in (default: $DCIM_TOKEN; "
                            "`dcim users token` makes one); the journal names its user")
        p.add_argument("--reason", "--comment", dest="comment", default=None,
                       help="why (required for shelve and out-of-service)")
        if verb in ("shelve", "out-of-service"):
            p.add_argument("--minutes", type=float, default=60.0,
                           help="how long (default 60; at most what your role may ask for)")
        p.add_argument("--url", default="http://127.0.0.1:8080/",
                       help="the running system's dashboard (default http://127.0.0.1:8080/)")
        p.set_defaults(func=_act)
