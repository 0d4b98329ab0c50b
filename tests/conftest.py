"""Shared test settings: servers are required under CI."""

from __future__ import annotations

import os
import shutil

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
