"""
The running gateway: the framework-neutral chat service plus what only the service needs
(settings, metrics, the models cache, readiness).

One :class:`Gateway` per process, created by the app factory and kept in
``app.extensions["gateway"]``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from adapters.keys import KeyPolicy
from adapters.service import ChatService
from adapters.upstream import OpenAIUpstream, StraicoUpstream, Upstream

from .metrics import Metrics
from .settings import Settings

__all__ = ["Gateway"]

MODELS_CACHE_SECONDS = 60.0


def upstream_for(settings: Settings) -> Upstream:
    base_url = str(settings.upstream_url).rstrip("/")
    if settings.upstream_kind == "openai":
        return OpenAIUpstream(base_url=base_url)
    return StraicoUpstream(base_url=base_url)


class Gateway(ChatService):
    """Process-wide state of the service."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            upstream_for(settings),
            config=settings.streaming_config(),
            keys=KeyPolicy(server_key=settings.upstream_key, client_keys=settings.client_keys),
            connect_timeout=settings.connect_timeout,
            max_connections=settings.max_connections,
            max_body_size=settings.max_body_size,
            record_answer=settings.log_content,
        )
        self.settings = settings
        self._models: dict[str, tuple[float, dict[str, Any]]] = {}
        self.last_upstream_ok: float | None = None
        # Operations (§16): this process's metrics, recorded by the routes.
        self.metrics = Metrics()

    def cached_models(self, key: str | None) -> dict[str, Any] | None:
        entry = self._models.get(_key_hash(key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def remember_models(self, key: str | None, models: dict[str, Any]) -> None:
        if len(self._models) > 1000:
            self._models.clear()
        self._models[_key_hash(key)] = (time.monotonic() + MODELS_CACHE_SECONDS, models)


def _key_hash(key: str | None) -> str:
    return hashlib.sha256((key or "").encode()).hexdigest()
