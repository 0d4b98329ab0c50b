"""Structured logging: key=value text for people, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


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
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text += f" {extra}" if extra else ""
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, for the CLI."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries are chatty at INFO (asyncua logs every node it builds).
    quiet = max(logging.WARNING, root.level)
    for name in ("asyncua", "pymodbus", "aiohttp.access"):
        logging.getLogger(name).setLevel(quiet)
    # asyncua logs a traceback at ERROR for every lost connection; the collector logs the
    # loss once, with the device and gateway, so that one is silenced.
    logging.getLogger("asyncua.client.ua_session").setLevel(logging.CRITICAL)
