"""dcim/auth: names, the permission matrix, the users file, sessions and rate limits with a
moved clock, the auth: config section, and the `dcim users` CLI."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import ValidationError

from dcim.auth.names import name_problem, text_problem
from dcim.auth.passwords import Passwords
from dcim.auth.ratelimit import RateLimit
from dcim.auth.roles import (ACK, ALARM_ACTIONS, ALARM_HISTORY, JOURNAL_VERIFY, OUT_OF_SERVICE,
                             PERMISSIONS, REPORTS, RESET, RETURN_TO_SERVICE, SHELVE, TOKENS,
                             UNSHELVE, USERS, VIEW, Role, may)
from dcim.auth.sessions import Sessions
from dcim.auth.store import TOKEN_PREFIX, AuthError, UserStore, token_digest
from dcim.config.auth import AuthConfig

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
# cheap Argon2 parameters: the tests are about the rules, not the cost
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    """Time the tests move by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def ns(self) -> int:
        return int(self.now * 1e9)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStore]:
    s = UserStore(tmp_path / "var" / "auth.sqlite", passwords=Passwords(FAST))
    yield s
    s.close()


# ---------------------------------------------------------------- names and text


@pytest.mark.parametrize(("name", "why"), [
    ("kwong", None),
    ("Chan Tai Man", None),
    ("陳大文", None),
    ("o'brien-2", None),
    ("system", "engine's own name"),
    ("System", "engine's own name"),
    ("", "1 to 64"),
    ("x" * 65, "1 to 64"),
    ("kw\u200bong", "U+200B"),  # zero-width space
    ("kwong\n2026-12-07 INFO forged", "U+000A"),
    ("a\x1b[31mred", "U+001B"),
    ("bell\x07", "U+0007"),
    ("nul\x00", "U+0000"),
    ("\u202eevil", "U+202E"),  # right-to-left override
    (" kwong", "blanks"),
    ("ｓｙｓｔｅｍ", "NFKC"),  # full-width "system"
    (42, "1 to 64"),
], ids=["plain", "spaces", "cjk", "punctuation", "system", "system-capital", "empty",
        "too-long", "zero-width", "newline", "escape", "bell", "nul", "bidi-override",
        "leading-blank", "full-width-system", "not-a-string"])
def test_names_that_can_never_be_an_identity(name: object, why: str | None) -> None:
    problem = name_problem(name)
    assert (problem is None) if why is None else (problem is not None and why in problem)


@pytest.mark.parametrize(("text", "ok"), [
    ("sensor being replaced", True), ("", True), ("line\nbreak", False), ("tab\there", False),
    ("zero\u200dwidth", False), ("\x07", False), ("x" * 501, False), (None, False),
], ids=["plain", "empty", "newline", "tab", "zero-width-joiner", "bell", "too-long", "null"])
def test_comment_text_is_one_line_of_visible_characters(text: object, ok: bool) -> None:
    assert (text_problem(text, "comment", 500) is None) is ok


# ---------------------------------------------------------------- the permission matrix

# every action a person can take on the web, by role: what the matrix must say
MATRIX = {
    Role.VIEWER: {VIEW},
    Role.OPERATOR: {VIEW, ALARM_HISTORY, ACK, SHELVE},
    Role.SUPERVISOR: {VIEW, ALARM_HISTORY, ACK, SHELVE, UNSHELVE, RESET, OUT_OF_SERVICE,
                      RETURN_TO_SERVICE, REPORTS},
    Role.ADMIN: {VIEW, ALARM_HISTORY, ACK, SHELVE, UNSHELVE, RESET, OUT_OF_SERVICE,
                 RETURN_TO_SERVICE, REPORTS, USERS, TOKENS, JOURNAL_VERIFY},
    Role.AUDITOR: {VIEW, ALARM_HISTORY, JOURNAL_VERIFY, REPORTS},
}


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
def test_the_permission_matrix(role: Role) -> None:
    checked = {VIEW, ALARM_HISTORY, *ALARM_ACTIONS, REPORTS, USERS, TOKENS, JOURNAL_VERIFY}
    assert {a for a in checked if may(role, a)} == MATRIX[role]
    assert set(PERMISSIONS) == set(Role)


# ---------------------------------------------------------------- the users file


def test_users_are_stored_hashed_in_a_private_file(store: UserStore) -> None:
    user = store.add_user("kwong", Role.OPERATOR, PASSWORD)
    assert (user.name, user.role, user.disabled) == ("kwong", Role.OPERATOR, False)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700
    stored = store.password_hash("kwong")
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert PASSWORD.encode() not in store.path.read_bytes()
    assert store.passwords.verify(stored, PASSWORD)
    assert not store.passwords.verify(stored, PASSWORD + "!")
    assert not store.passwords.verify(None, PASSWORD)  # an unknown user never matches


@pytest.mark.parametrize(("name", "role", "password", "error"), [
    ("kwong", Role.VIEWER, PASSWORD, "already"),
    ("KWONG", Role.VIEWER, PASSWORD, "already"),  # case does not make a second kwong
    ("system", Role.ADMIN, PASSWORD, "engine's own name"),
    ("lee\u200b", Role.ADMIN, PASSWORD, "invisible"),
    ("lee", Role.ADMIN, "short", "at least 10"),
], ids=["taken", "taken-other-case", "system", "zero-width", "weak-password"])
def test_users_the_store_refuses(store: UserStore, name: str, role: Role, password: str,
                                 error: str) -> None:
    store.add_user("kwong", Role.OPERATOR, PASSWORD)
    with pytest.raises(AuthError, match=error):
        store.add_user(name, role, password)
    assert [u.name for u in store.users()] == ["kwong"]


def test_a_disabled_user_has_no_password_to_match(store: UserStore) -> None:
    store.add_user("kwong", Role.OPERATOR, PASSWORD)
    assert store.set_disabled("kwong").disabled
    assert store.password_hash("kwong") is None
    assert not store.set_disabled("kwong", False).disabled
    with pytest.raises(AuthError, match="no user"):
        store.set_disabled("nobody")


def test_tokens_are_shown_once_stored_as_sha256_and_revocable(tmp_path: Path) -> None:
    clock = Clock()
    store = UserStore(tmp_path / "auth.sqlite", passwords=Passwords(FAST), clock_ns=clock.ns)
    try:
        store.add_user("kwong", Role.SUPERVISOR, PASSWORD)
        secret = store.create_token("kwong", "bms-bridge", Role.OPERATOR)
        assert secret.startswith(TOKEN_PREFIX) and len(secret) >= len(TOKEN_PREFIX) + 43
        raw = (tmp_path / "auth.sqlite").read_bytes() + (tmp_path / "auth.sqlite-wal").read_bytes()
        assert secret.encode() not in raw and token_digest(secret).encode() in raw
        found = store.token(secret)
        assert found is not None and (found[0].name, found[0].role, found[1].name) == (
            "bms-bridge", Role.OPERATOR, "kwong")
        assert store.tokens()[0].last_used_ns == clock.ns()
        assert store.token(secret + "x") is None
        with pytest.raises(AuthError, match="already"):
            store.create_token("kwong", "bms-bridge")
        with pytest.raises(AuthError, match="cannot have the role admin"):
            store.create_token("kwong", "escalate", Role.ADMIN)
        with pytest.raises(AuthError, match="cannot have the role auditor"):
            store.create_token("kwong", "sideways", Role.AUDITOR)  # verify is not a supervisor's
        assert store.revoke_token("bms-bridge").revoked_ns == clock.ns()
        assert store.token(secret) is None
        other = store.create_token("kwong", "reports")
        store.set_disabled("kwong")
        assert store.token(other) is None  # a disabled user's tokens stop too
    finally:
        store.close()


def test_a_hash_made_with_weaker_parameters_is_noticed() -> None:
    weak = Passwords(FAST).hash(PASSWORD)
    assert Passwords(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)).needs_rehash(weak)
    assert not Passwords(FAST).needs_rehash(weak)


# ---------------------------------------------------------------- sessions and limits


def test_a_session_ends_when_idle_or_too_old() -> None:
    clock = Clock()
    sessions = Sessions(idle_s=8 * 3600, max_s=12 * 3600, clock=clock)
    session = sessions.create("kwong")
    assert len(session.id) >= 43 and session.csrf != session.id
    for _ in range(11):  # busy all shift: an hour between requests
        clock.now += 3600
        assert sessions.get(session.id) is session
    clock.now += 3601  # twelve hours after sign-in
    assert sessions.get(session.id) is None
    idle = sessions.create("chan")
    clock.now += 8 * 3600 + 1
    assert sessions.get(idle.id) is None and len(sessions) == 0
    a, b = sessions.create("lee"), sessions.create("lee")
    assert sessions.drop_user("lee") == 2 and sessions.get(a.id) is None is sessions.get(b.id)


def test_a_rate_limit_slides_with_the_clock() -> None:
    clock = Clock()
    limit = RateLimit(5, 300.0, clock)
    for _ in range(5):
        assert limit.retry_after("kwong") == 0.0
        limit.hit("kwong")
        clock.now += 10
    assert limit.retry_after("kwong") == pytest.approx(250.0)
    assert limit.retry_after("chan") == 0.0
    clock.now += 250.5  # the first failure left the window
    assert limit.retry_after("kwong") == 0.0
    limit.hit("kwong")
    assert limit.retry_after("kwong") > 0
    limit.clear("kwong")
    assert limit.retry_after("kwong") == 0.0


# ---------------------------------------------------------------- the auth: section


def test_auth_config_defaults() -> None:
    config = AuthConfig()
    assert config.users_file("cp5") == "var/auth-cp5.sqlite"
    assert (config.session_idle_s, config.session_max_s) == (8 * 3600, 12 * 3600)
    assert config.allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    assert config.shelve_max_s == {Role.OPERATOR: 7200, Role.SUPERVISOR: 43200,
                                   Role.ADMIN: 43200}
    assert (config.out_of_service_max_s, config.actions_per_minute) == (7 * 86400, 30)
    # one role changed: the others keep their defaults
    assert AuthConfig(shelve_max_s={"operator": 600}).shelve_max_s[Role.SUPERVISOR] == 43200
    for name, field in AuthConfig.model_fields.items():
        assert field.description, f"auth.{name} has no description"


@pytest.mark.parametrize(("fields", "error"), [
    ({"tls_certificate": "cert.pem"}, "go together"),
    ({"trusted_proxy_header": "X-Forwarded-User"}, "needs trusted_proxies"),
    ({"trusted_proxy_header": "Cookie", "trusted_proxies": ["10.0.0.1"]}, "cannot name"),
    ({"trusted_proxies": ["proxy.example"]}, "not an address"),
    ({"allowed_hosts": ["https://dcim.example"]}, "not a host name"),
    ({"shelve_max_s": {"viewer": 60}}, "may not shelve"),
    ({"shelve_max_s": {"operator": 0}}, "not in"),
    ({"users": []}, "Extra inputs"),
], ids=["tls-half", "proxy-without-addresses", "proxy-header-cookie", "proxy-by-name",
        "host-with-scheme", "viewer-shelve", "zero-shelve", "unknown-field"])
def test_auth_config_refuses(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        AuthConfig.model_validate(fields)


# ---------------------------------------------------------------- dcim users


def _site_with_auth(tmp_path: Path, auth: str = "auth:\n  users_db: {db}\n") -> Path:
    text = (ROOT / "config" / "cyberport5.yaml").read_text()
    site = tmp_path / "site.yaml"
    site.write_text(text + "\n" + auth.format(db=tmp_path / "users.sqlite"))
    return site


def test_the_users_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dcim.cli import main

    site = str(_site_with_auth(tmp_path))

    def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli("users", "add", "kwong", site, "--role", "operator", "--password-stdin",
                       stdin=PASSWORD + "\n")
    assert code == 0 and "added kwong (operator)" in out
    code, _, err = cli("users", "add", "system", site, "--role", "admin", "--password-stdin",
                       stdin=PASSWORD + "\n")
    assert code == 1 and "engine's own name" in err
    code, out, err = cli("users", "token", "kwong", site, "--name", "ci")
    token = out.strip()
    assert code == 0 and token.startswith(TOKEN_PREFIX) and "shown" in err and "\n" not in token
    code, out, _ = cli("users", "list", site)
    assert code == 0 and "kwong" in out and "operator" in out and "ci" in out
    assert token not in out and "argon2" not in out
    code, out, _ = cli("users", "revoke", "ci", site)
    assert code == 0 and "revoked token ci of kwong" in out
    code, out, _ = cli("users", "disable", "kwong", site)
    assert code == 0 and "disabled kwong" in out
    store = UserStore(tmp_path / "users.sqlite")
    try:
        assert store.user("kwong").disabled  # type: ignore[union-attr]
        assert store.token(token) is None
    finally:
        store.close()
    code, _, err = cli("users", "revoke", "nope", site)
    assert code == 1 and "no token 'nope'" in err
    # a site without auth: users would change nothing: said, not done
    code, _, err = cli("users", "list", str(ROOT / "config" / "cyberport5.yaml"))
    assert code == 1 and "no `auth:` section" in err


async def test_every_sign_in_attempt_is_journaled_and_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dcim.auth.service import Authenticator, SignInRefused
    from dcim.cli import main

    site = _site_with_auth(tmp_path)
    users = UserStore(tmp_path / "users.sqlite", passwords=Passwords(FAST))
    try:
        users.add_user("kwong", Role.OPERATOR, PASSWORD)
        auth = Authenticator(AuthConfig(login_failures=3), users)
        for guess in ("guess1", "guess2\x1b[2J"):
            with pytest.raises(SignInRefused):
                await auth.sign_in("kwong", guess, "192.0.2.7")
        with pytest.raises(SignInRefused):
            await auth.sign_in("nobody\x1b[31m", "x", "192.0.2.7")
        with pytest.raises(SignInRefused):  # the third failure from there: limited
            await auth.sign_in("kwong", PASSWORD, "192.0.2.7")
        await auth.sign_in("kwong", PASSWORD, "127.0.0.1")
        records = users.sign_ins()
    finally:
        users.close()
    assert [(r.user, r.client, r.ok, r.reason) for r in records] == [
        ("kwong", "192.0.2.7", False, "wrong password"),
        ("kwong", "192.0.2.7", False, "wrong password"),
        ("nobody\x1b[31m", "192.0.2.7", False, "unknown user"),
        ("kwong", "192.0.2.7", False, "too many failures"),
        ("kwong", "127.0.0.1", True, "")]
    assert all(PASSWORD not in repr(r) and "guess" not in repr(r) for r in records)
    assert main(["users", "log", str(site)]) == 0
    out = capsys.readouterr().out
    assert "5 attempts in the last 24 h, 4 refused" in out
    assert "\x1b" not in out and "nobody\\x1b[31m" in out  # escaped, not sent to the terminal


def test_a_start_without_an_admin_says_how_to_make_the_first(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from dcim.site import load_site
    from dcim.system import System, SystemOptions

    site = load_site(_site_with_auth(tmp_path))
    system = System(site, SystemOptions(dashboard_port=0))
    with caplog.at_level(logging.WARNING, logger="dcim.system"):
        system._check_dashboard()
    assert any("create the first admin" in r.getMessage() and "--role admin" in r.getMessage()
               for r in caplog.records)
    users = UserStore(tmp_path / "users.sqlite", passwords=Passwords(FAST))
    users.add_user("lee", Role.ADMIN, PASSWORD)
    users.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dcim.system"):
        system._check_dashboard()
    assert not [r for r in caplog.records if "first admin" in r.getMessage()]
