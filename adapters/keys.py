"""
Who may call, and with which upstream key (contract §9).

Server key mode: the configured key is sent upstream; optional client keys guard ``/v1/*``,
compared in constant time against every configured key. Per-request mode: the client's own
bearer token is the upstream key. Keys are never logged or echoed.
"""

from __future__ import annotations

import hmac

import attrs

from engine.errors import Unauthorized

__all__ = ["KeyPolicy", "bearer_token"]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if well formed."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


@attrs.frozen
class KeyPolicy:
    server_key: str | None = attrs.field(default=None, repr=False)
    client_keys: tuple[str, ...] = attrs.field(default=(), repr=False)

    @property
    def server_key_mode(self) -> bool:
        return self.server_key is not None

    def upstream_key(self, authorization: str | None) -> str:
        """Check the caller and return the key to send upstream; raise :class:`Unauthorized`."""
        token = bearer_token(authorization)
        if self.server_key is not None:
            if self.client_keys and not self._is_client_key(token):
                raise Unauthorized()
            return self.server_key
        if token is None:
            raise Unauthorized(
                "Missing API key. Send your upstream key as 'Authorization: Bearer <key>'."
            )
        return token

    def _is_client_key(self, token: str | None) -> bool:
        if token is None:
            return False
        given = token.encode()
        matched = False
        for key in self.client_keys:  # every key is compared: no early exit
            matched |= hmac.compare_digest(given, key.encode())
        return matched

    def secrets(self, upstream_key: str | None) -> tuple[str, ...]:
        """Everything that must never appear in an answer or a log."""
        keys = [k for k in (self.server_key, upstream_key, *self.client_keys) if k]
        return tuple(dict.fromkeys(keys))
