"""CLI verbs of sign-in: `dcim users add|list|disable|enable|token|revoke`.

They open the site's users file (auth.users_db, default var/auth-<site>.sqlite) directly:
whoever may read that file administers the users, so these verbs ask for no role. The file
is SQLite in WAL mode: editing it while the system runs is safe, and a user disabled or a
token revoked here is refused from the dashboard's next request.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from dcim.auth.roles import Role

if TYPE_CHECKING:  # imported when a verb runs: argon2 is not loaded for every dcim command
    from dcim.auth.store import UserStore

ROLES = [r.value for r in Role]


Verb = Callable[[argparse.Namespace, "UserStore"], None]


class _Refused(Exception):
    """Why a verb cannot run (printed, exit 1)."""


def _store(args: argparse.Namespace) -> UserStore:
    from dcim.auth.store import UserStore
    from dcim.site import load_site

    if args.db:
        return UserStore(args.db)
    site = load_site(args.site)
    if site.config.auth is None:
        raise _Refused(f"{args.site} has no `auth:` section: its dashboard asks nobody to sign "
                       "in, so users would change nothing. Add `auth: {}` to the site file "
                       "(docs/security.md), or name a users file with --db")
    return UserStore(site.config.auth.users_file(site.id))


def _when(time_ns: int | None) -> str:
    if time_ns is None:
        return "-"
    return datetime.fromtimestamp(time_ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("the same again: ") != first:
        raise _Refused("the two passwords differ")
    return first


def _add(args: argparse.Namespace, store: UserStore) -> None:
    user = store.add_user(args.name, Role(args.role), _password(args))
    print(f"added {user.name} ({user.role})")


def _list(args: argparse.Namespace, store: UserStore) -> None:
    print(f"{'user':<24} {'role':<11} {'state':<9} created")
    for u in store.users():
        print(f"{u.name:<24} {u.role.value:<11} {'disabled' if u.disabled else 'enabled':<9} "
              f"{_when(u.created_ns)}")
    tokens = store.tokens()
    if tokens:
        print(f"\n{'token':<24} {'user':<24} {'role':<11} {'created':<21} {'last used':<21} "
              "revoked")
        for t in tokens:
            print(f"{t.name:<24} {t.user:<24} {t.role.value:<11} {_when(t.created_ns):<21} "
                  f"{_when(t.last_used_ns):<21} {_when(t.revoked_ns)}")


def _disable(args: argparse.Namespace, store: UserStore) -> None:
    user = store.set_disabled(args.name, True)
    print(f"disabled {user.name}: sessions and tokens refused from the next request")


def _enable(args: argparse.Namespace, store: UserStore) -> None:
    user = store.set_disabled(args.name, False)
    print(f"enabled {user.name}")


def _token(args: argparse.Namespace, store: UserStore) -> None:
    secret = store.create_token(args.name, args.label, Role(args.role) if args.role else None)
    token = next(t for t in store.tokens() if t.name == args.label)
    print(f"token {token.name} of {token.user} ({token.role}); send it as "
          "'Authorization: Bearer <token>' (or DCIM_TOKEN for `dcim alarms`). It is shown "
          "this once and not stored:", file=sys.stderr)
    print(secret)


def _log(args: argparse.Namespace, store: UserStore) -> None:
    from dcim.cli.alarms import printable

    since = time.time_ns() - int(args.hours * 3600e9)
    rows = store.sign_ins(since)
    print(f"{'time':<21} {'user':<24} {'client':<20} result")
    for r in rows:
        result = "signed in" if r.ok else f"refused: {r.reason}"
        print(f"{_when(r.time_ns):<21} {printable(r.user):<24} {printable(r.client):<20} "
              f"{result}")
    refused = sum(not r.ok for r in rows)
    print(f"{len(rows)} attempts in the last {args.hours:g} h, {refused} refused")


def _revoke(args: argparse.Namespace, store: UserStore) -> None:
    token = store.revoke_token(args.token_name)
    print(f"revoked token {token.name} of {token.user}")


def _run(verb: Verb) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from dcim.auth.store import AuthError
        from dcim.site import ConfigError

        try:
            store = _store(args)
        except (ConfigError, _Refused) as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            verb(args, store)
        except (AuthError, _Refused) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        finally:
            store.close()
        return 0
    return run


def add_parsers(sub: Any) -> None:
    """Add `dcim users ...` to the top-level subparsers."""
    u = sub.add_parser("users", help="sign-in: users, roles and API tokens of the dashboard",
                       description="Users and API tokens of the site's dashboard (the site "
                                   "file's auth: section; docs/security.md). Roles: "
                                   + ", ".join(ROLES) + ".")
    verbs = u.add_subparsers(dest="users_command", required=True, metavar="VERB")

    def verb(name: str, help_text: str, func: Verb,
             *positionals: tuple[str, str]) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        for dest, text in positionals:
            p.add_argument(dest, help=text)
        p.add_argument("site", nargs="?", default="config/cyberport5.yaml", help="site YAML file")
        p.add_argument("--db", default=None, help="users file (default: the site's auth.users_db)")
        p.set_defaults(func=_run(func))
        return p

    a = verb("add", "add a user (the password is asked for twice)", _add,
             ("name", "the user's name, as journaled"))
    a.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    verb("list", "users and tokens (never a password or a token's secret)", _list)
    verb("disable", "refuse a user's sign-in, sessions and tokens", _disable,
         ("name", "the user"))
    verb("enable", "let a disabled user sign in again", _enable, ("name", "the user"))
    t = verb("token", "make an API token for a user and print it once", _token,
             ("name", "the user the token acts as"))
    t.add_argument("--name", dest="label", required=True, help="the token's name (unique)")
    t.add_argument("--role", choices=ROLES, default=None,
                   help="a lesser role than the user's (default: the user's)")
    verb("revoke", "revoke an API token by its name", _revoke, ("token_name", "the token's name"))
    g = verb("log", "the sign-in journal: every attempt, who, from where, refused or not", _log)
    g.add_argument("--hours", type=float, default=24.0, help="how far back (default 24)")
