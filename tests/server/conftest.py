"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.gateway_process import GatewayProcess


@pytest.fixture(name="start_gateway")
def _start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> GatewayProcess:
        gateway = GatewayProcess(list(args), tmp_path / f"gateway-{len(started)}.log", env)
        started.append(gateway)
        gateway.wait_listening()
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.close()
