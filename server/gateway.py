"""
The running gateway: what every request shares (settings, upstream, client, cache, keys).

One :class:`Gateway` per process, created by the app factory and kept in
``app.extensions["gateway"]``. It also tracks the exchanges in flight for shutdown (§15).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from typing import Any

import httpx

from adapters.driver import Exchange
from adapters.upstream import OpenAIUpstream, StraicoUpstream, Upstream, make_client
from engine.capability import CapabilityCache
from engine.config import StreamingConfig

from .keys import KeyPolicy
from .metrics import Metrics
from .settings import Settings

__all__ = ["Gateway", "make_chat_id"]

_ALPHANUMERIC = string.ascii_letters + string.digits
MODELS_CACHE_SECONDS = 60.0


def make_chat_id() -> str:
    """``chatcmpl-`` and 24 random alphanumerics (contract §5)."""
    return "chatcmpl-" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(24))


class Gateway:
    """Process-wide state of the service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: StreamingConfig = settings.streaming_config()
        self.upstream: Upstream = (
            OpenAIUpstream(base_url=str(settings.upstream_url).rstrip("/"))
            if settings.upstream_kind == "openai"
            else StraicoUpstream(base_url=str(settings.upstream_url).rstrip("/"))
        )
        self.keys = KeyPolicy(server_key=settings.upstream_key, client_keys=settings.client_keys)
        self.cache = CapabilityCache(ttl=self.config.detection_cache_duration)
        self._client: httpx.AsyncClient | None = None
        self.exchanges: set[Exchange] = set()
        self.shutting_down = False
        self._models: dict[str, tuple[float, dict[str, Any]]] = {}
        self.last_upstream_ok: float | None = None
        # Operations (§16): this process's metrics, recorded by the routes.
        self.metrics = Metrics()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(
                self.config,
                connect_timeout=self.settings.connect_timeout,
                max_connections=self.settings.max_connections,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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
