"""Shared test settings: servers are required under CI."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import pytest


def servers_required() -> bool:
    """Under CI (or DCIM_REQUIRE_SERVERS=1) a missing server is a failure, never a skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("DCIM_REQUIRE_SERVERS") == "1"


def require_program(name: str, install_hint: str) -> str:
    """Path of a program the test needs; fail under CI, skip elsewhere, when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install_hint})"
        if servers_required():
            pytest.fail(message + "; CI needs it", pytrace=False)
        pytest.skip(message)
    return path


pytest_plugins = ["tests.influxd"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI tests call dcim's setup_logging; put the root logger back for the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("asyncua", "pymodbus", "pymodbus.logging", "aiohttp.access",
             "asyncua.client.ua_session")
    named = {name: (lg.level, lg.propagate, lg.handlers[:])
             for name in names for lg in [logging.getLogger(name)]}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (lvl, propagate, own) in named.items():
        logger = logging.getLogger(name)
        logger.setLevel(lvl)
        logger.propagate = propagate
        logger.handlers[:] = own
