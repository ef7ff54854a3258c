"""
The Straico simulator (contract §12): Straico's documented API over real HTTP, misbehaving on
request through the model id (``sim/<kind>(:<key>=<value>)*``), recording what it was asked.
"""

from __future__ import annotations

from .app import SimulatorApp, create_simulator_app
from .grammar import SimModel, parse_model_id
from .run import run_simulator, start_simulator

__all__ = [
    "SimModel",
    "SimulatorApp",
    "create_simulator_app",
    "parse_model_id",
    "run_simulator",
    "start_simulator",
]
