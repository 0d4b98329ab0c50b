"""Local users and API tokens in one SQLite file (default var/auth-<site>.sqlite, mode 0600).

Passwords are stored as Argon2id hashes, tokens as the SHA-256 of the secret, which is shown
once when made. The running dashboard and the `dcim users` CLI open the same file (WAL mode):
a user disabled or a token revoked from the CLI is refused by the next request.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dcim.auth.names import name_problem
from dcim.auth.passwords import Passwords, password_problem
from dcim.auth.roles import Role, within

TOKEN_PREFIX = "dcim_"  # lets secret scanners and people recognise a leaked token
LAST_USED_EVERY_NS = 60 * 10**9  # a token's last-used time is written at most once a minute

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
    role TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_ns INTEGER NOT NULL,
    last_used_ns INTEGER,
    revoked_ns INTEGER
);
CREATE TABLE IF NOT EXISTS sign_ins (
    seq INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    user TEXT NOT NULL,
    client TEXT NOT NULL,
    ok INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""
KEEP_SIGN_INS = 100_000  # the newest sign-in records kept (a guessing storm cannot fill the disk)


class AuthError(ValueError):
    """A change the store refuses (a bad or taken name, an unknown user, a weak password)."""


@dataclass(frozen=True, slots=True)
class User:
    """A local user (the password hash stays in the store)."""

    name: str
    role: Role
    disabled: bool
    created_ns: int


@dataclass(frozen=True, slots=True)
class Token:
    """An API token's record (never its secret)."""

    name: str
    user: str
    role: Role
    created_ns: int
    last_used_ns: int | None
    revoked_ns: int | None


@dataclass(frozen=True, slots=True)
class SignIn:
    """One sign-in attempt as journaled."""

    time_ns: int
    user: str  # as typed (shortened)
    client: str
    ok: bool
    reason: str  # why it was refused ("" when it succeeded)


def token_digest(secret: str) -> str:
    """What the store keeps of a token: the SHA-256 of its secret, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class UserStore:
    """Users and tokens in SQLite; the clock is passed in (ns)."""

    def __init__(self, path: str | Path, *, passwords: Passwords | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(path)
        self.passwords = passwords or Passwords()
        self._clock_ns = clock_ns
        self._last_written: dict[str, int] = {}
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():  # password hashes: readable by this account only
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    # -- users

    def add_user(self, name: str, role: Role, password: str) -> User:
        """A new user (AuthError when the name is refused or taken, or the password weak)."""
        problem = name_problem(name) or password_problem(password)
        if problem:
            raise AuthError(problem)
        taken = [n for (n,) in self._db.execute("SELECT name FROM users")
                 if n.casefold() == name.casefold()]
        if taken:
            raise AuthError(f"there is a user {taken[0]!r} already")
        now = self._clock_ns()
        self._db.execute("INSERT INTO users (name, role, password, created_ns) VALUES (?,?,?,?)",
                         (name, Role(role).value, self.passwords.hash(password), now))
        return User(name, Role(role), False, now)

    def user(self, name: str) -> User | None:
        """The user of that exact name, or None."""
        row = self._db.execute("SELECT name, role, disabled, created_ns FROM users "
                               "WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], Role(row[1]), bool(row[2]), row[3])

    def users(self) -> list[User]:
        """Every user, by name."""
        rows = self._db.execute("SELECT name, role, disabled, created_ns FROM users "
                                "ORDER BY name").fetchall()
        return [User(r[0], Role(r[1]), bool(r[2]), r[3]) for r in rows]

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable (or enable) a user: their sessions and tokens stop working at once."""
        if self._db.execute("UPDATE users SET disabled = ? WHERE name = ?",
                            (int(disabled), name)).rowcount != 1:
            raise AuthError(f"no user {name!r}")
        user = self.user(name)
        assert user is not None
        return user

    def password_hash(self, name: str) -> str | None:
        """The stored hash of an enabled user's password (None: unknown or disabled)."""
        row = self._db.execute("SELECT password FROM users WHERE name = ? AND disabled = 0",
                               (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_password_hash(self, name: str, encoded: str) -> None:
        """Replace a user's password hash (a fresh one after the parameters were raised)."""
        self._db.execute("UPDATE users SET password = ? WHERE name = ?", (encoded, name))

    # -- tokens

    def create_token(self, user: str, name: str, role: Role | None = None) -> str:
        """A new token for a user, with the user's role or a lesser one: its secret, which is
        not stored and cannot be shown again."""
        owner = self.user(user)
        if owner is None:
            raise AuthError(f"no user {user!r}")
        problem = name_problem(name, "a token name")
        if problem:
            raise AuthError(problem)
        role = owner.role if role is None else Role(role)
        if not within(role, owner.role):
            raise AuthError(f"a token of {user!r} ({owner.role}) cannot have the role {role}")
        if self._db.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise AuthError(f"there is a token {name!r} already (revoked ones keep their name)")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._db.execute("INSERT INTO tokens (name, user, role, sha256, created_ns) "
                         "VALUES (?,?,?,?,?)",
                         (name, owner.name, role.value, token_digest(secret), self._clock_ns()))
        return secret

    def token(self, secret: str) -> tuple[Token, User] | None:
        """The live token of a secret and its enabled user, or None; notes its use."""
        row = self._db.execute(
            "SELECT t.name, t.user, t.role, t.created_ns, t.last_used_ns, t.revoked_ns, "
            "u.role, u.disabled, u.created_ns FROM tokens t JOIN users u ON u.name = t.user "
            "WHERE t.sha256 = ? AND t.revoked_ns IS NULL AND u.disabled = 0",
            (token_digest(secret),)).fetchone()
        if row is None:
            return None
        now = self._clock_ns()
        if now - self._last_written.get(row[0], 0) >= LAST_USED_EVERY_NS:
            self._db.execute("UPDATE tokens SET last_used_ns = ? WHERE name = ?", (now, row[0]))
            self._last_written[row[0]] = now
        return (Token(row[0], row[1], Role(row[2]), row[3], now, row[5]),
                User(row[1], Role(row[6]), bool(row[7]), row[8]))

    def tokens(self) -> list[Token]:
        """Every token, revoked ones too, by name."""
        rows = self._db.execute("SELECT name, user, role, created_ns, last_used_ns, revoked_ns "
                                "FROM tokens ORDER BY name").fetchall()
        return [Token(r[0], r[1], Role(r[2]), r[3], r[4], r[5]) for r in rows]

    # -- the sign-in journal

    def record_sign_in(self, user: str, client: str, ok: bool, reason: str = "") -> None:
        """Journal one sign-in attempt (the name as typed, shortened; never the password)."""
        self._db.execute("INSERT INTO sign_ins (time_ns, user, client, ok, reason) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (self._clock_ns(), user[:100], client[:100], int(ok), reason[:200]))
        self._db.execute("DELETE FROM sign_ins WHERE seq <= "
                         "(SELECT MAX(seq) FROM sign_ins) - ?", (KEEP_SIGN_INS,))

    def sign_ins(self, since_ns: int = 0, limit: int = 1000) -> list[SignIn]:
        """Sign-in attempts since a time, oldest first (at most the newest `limit`)."""
        rows = self._db.execute(
            "SELECT time_ns, user, client, ok, reason FROM (SELECT * FROM sign_ins "
            "WHERE time_ns >= ? ORDER BY seq DESC LIMIT ?) ORDER BY seq", (since_ns, limit))
        return [SignIn(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def revoke_token(self, name: str) -> Token:
        """Revoke a token by its name: refused from the next request on."""
        self._db.execute("UPDATE tokens SET revoked_ns = ? WHERE name = ? AND revoked_ns IS NULL",
                         (self._clock_ns(), name))
        found = [t for t in self.tokens() if t.name == name]
        if not found:
            raise AuthError(f"no token {name!r}")
        return found[0]
