"""The README's commands, run as a newcomer runs them: `make demo` for a bounded time, and
every line of the README's `sh` blocks, as written, against that running demo. (`make test`
is the other README command: CI runs it through .ci/run.) They run in a fresh folder laid
out like the project root (its Makefile, pyproject.toml and README, the config folder and the
installed .venv), so every run starts from an empty store and journal, as a fresh clone does.

The demo listens where the README says (dashboard 8080, control API 8790); when either port is
taken on a developer's machine the test is skipped, under CI it fails."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PORTS = (8080, 8790)


def readme_commands(text: str) -> list[str]:
    """Every command line of the README's ```sh blocks, without its trailing comment."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                out.append(command)
    return out


def test_the_readme_commands_are_the_two_make_targets_and_runnable_dcim_lines() -> None:
    commands = readme_commands(README.read_text())
    assert commands[:2] == ["make demo", "make test"]
    rest = commands[2:]
    assert len(rest) >= 10 and all(c.startswith("dcim ") for c in rest)
    # a placeholder (SITE, [--option]) would not run: those belong in the text block
    placeholder = r"[\[\]|]|\b(SITE|HOST|NAME|FILE|URL|LOG|ALARM_ID|N)\b"
    assert not [c for c in rest if re.search(placeholder, c)]
    from dcim.cli import build_parser

    parser = build_parser()
    for command in rest:
        if command != "dcim --help":
            parser.parse_args(shlex.split(command)[1:])  # SystemExit on a wrong option


def _taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Output:
    """A child's merged output, read in a thread, waited on by pattern."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def close(self) -> None:
        """After the child ended: the rest of its output read, the pipe closed."""
        self._thread.join(timeout=10)
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"no {pattern!r} from make demo; it printed:\n{self.text()[-4000:]}")


def fresh_root(tmp: Path) -> Path:
    """A folder that `make demo` and the dcim commands see as a fresh clone's root."""
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tmp / name)  # times kept: the install stamp stays newer
    for name in ("config", ".venv"):
        (tmp / name).symlink_to(ROOT / name)
    return tmp


def _run(command: str, cwd: Path, env: dict[str, str], retry_s: float = 30.0) -> str:
    """Run a README line in the project root; retried a while (a person runs them seconds
    apart: an alarm takes a poll to appear after its fault)."""
    deadline = time.monotonic() + retry_s
    while True:
        done = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=180)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_make_demo_and_every_readme_command_as_written(tmp_path: Path) -> None:
    taken = [p for p in PORTS if _taken(p)]
    if taken:
        message = f"the README's ports are taken here: {taken}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    root = fresh_root(tmp_path)
    demo = subprocess.Popen(["make", "demo"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Output(demo)
    try:
        output.wait_for(r"dashboard: http://127\.0\.0\.1:8080/", 300)
        output.wait_for(r"270/270", 60)  # every device polled
        outputs = {c: _run(c, root, env) for c in readme_commands(README.read_text())[2:]}
    finally:
        with contextlib.suppress(ProcessLookupError):  # make may have failed on its own
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C, as the README says
        try:
            demo.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
        finally:
            output.close()
    by_verb = {" ".join(c.split()[:3]): out for c, out in outputs.items()}
    assert "racks: 200" in by_verb["dcim validate config/cyberport5.yaml"]
    assert "CRAH-H1-1" in by_verb["dcim fault list"]
    assert "unit:CRAH-H1-1:down" in by_verb["dcim alarms list"]
    assert "lee" in by_verb["dcim alarms history"]  # the ack, journaled with its user
    assert by_verb["dcim query RM-H1-A02.inlet_temp_middle_c"].splitlines()[0].startswith("time")
    assert (root / "var" / "availability.pdf.sha256").is_file()
    assert "schneider-pm5560" in by_verb["dcim profiles list"]
    text = output.text()
    assert "stopped:" in text, text[-3000:]
    assert "Traceback" not in text, text[-5000:]
