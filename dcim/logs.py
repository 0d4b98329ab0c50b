"""Structured logging: key=value text for people, JSON lines for machines.

One record is one line, whatever it carries: operators' comments, alarm messages and
exception texts can hold newlines or terminal escapes, so in the text format a value that is
not a plain word is quoted with its quotes, backslashes and control characters escaped
(`comment="line 1\\nline 2"`), the message has its control characters escaped, and the lines
of a traceback are indented, so nothing a value holds can start a line that looks like a
record. JSON lines escape by construction.
"""

from __future__ import annotations

import json
import logging
import re
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# The protocol stacks. A device that stops answering is dcim's news, told once with the
# device or gateway; the stacks tell it again per request (pymodbus at ERROR, with a hex
# dump of the last frames appended, asyncua with a traceback), so their records reach the
# root logger at DEBUG at most unless the user asks for library logs.
LIBRARIES = ("pymodbus", "asyncua")


class _AsDebug(logging.Handler):
    """Hands a library's records to the root logger's handlers as DEBUG, or drops them."""

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if root.isEnabledFor(logging.DEBUG):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            root.handle(record)


_AS_DEBUG = _AsDebug()

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN = re.compile(r'[^\s"=\\]+')  # a value that needs no quotes: one word, no " = \\


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if not ch.isprintable():  # control, format, separators (U+2028), unassigned
        return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
    return ch


def escape_text(text: str, quote: bool = False) -> str:
    """text with unprintable characters escaped (\\n, \\t, \\u202e, ...); with quote, also
    backslashes and double quotes (the inside of a quoted value)."""
    if text.isprintable() and not (quote and ('"' in text or "\\" in text)):
        return text
    return "".join(ch if not quote and ch in '\\"' else _escape_char(ch) for ch in text)


def log_value(value: object) -> str:
    """A value as the text format writes it: bare if it is one plain word, else quoted."""
    text = str(value)
    if text.isprintable() and _PLAIN.fullmatch(text):
        return text
    return f'"{escape_text(text, quote=True)}"'


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool):
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        if self.as_json:
            doc = {"time": stamp, "level": record.levelname, "logger": record.name,
                   "msg": record.getMessage(), **fields}
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return json.dumps(doc, default=str)
        extra = " ".join(f"{escape_text(k)}={log_value(v)}" for k, v in fields.items())
        text = (f"{stamp} {record.levelname:<7} {escape_text(record.name)}: "
                f"{escape_text(record.getMessage())}")
        text += f" {extra}" if extra else ""
        if record.exc_info:  # readable, but indented: no line of it can pass for a record
            trace = self.formatException(record.exc_info)
            text += "".join(f"\n    {escape_text(line)}" for line in trace.splitlines())
        return text


def setup_logging(level: str = "INFO", fmt: str = "text", library_level: str | None = None
                  ) -> None:
    """Configure the root logger once, for the CLI; library_level (e.g. "DEBUG") lets the
    protocol stacks log as they do themselves, at that level."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))
    for name in LIBRARIES:
        library = logging.getLogger(name)
        library.removeHandler(_AS_DEBUG)
        if library_level is not None:
            library.setLevel(library_level.upper())
            library.propagate = True
        else:
            # WARNING and up only: their INFO is chatter (asyncua logs every node it builds),
            # and pymodbus hex-dumps every frame once DEBUG is enabled for it.
            library.setLevel(logging.WARNING)
            library.propagate = False
            library.addHandler(_AS_DEBUG)
    # pymodbus logs everything through "pymodbus.logging"; pymodbus_apply_logging_config()
    # gives that logger a level and a stream handler of its own, which would bypass the above.
    frames = logging.getLogger("pymodbus.logging")
    frames.setLevel(logging.NOTSET)
    frames.propagate = True
    for own in [h for h in frames.handlers if not isinstance(h, logging.NullHandler)]:
        frames.removeHandler(own)
    # asyncua logs a traceback at ERROR for every lost connection; the collector logs the
    # loss once, with the device and gateway, so that one is silenced.
    logging.getLogger("asyncua.client.ua_session").setLevel(
        logging.NOTSET if library_level is not None else logging.CRITICAL)
