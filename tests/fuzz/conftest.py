"""The end-to-end suite's simulator and log capture, registered for the fuzz tests too."""

from __future__ import annotations

from tests.e2e.conftest import _log_capture, _simulator

__all__ = ["_log_capture", "_simulator"]
