"""The design document's state diagram is the one generated from the machine class."""

from __future__ import annotations

import re
from pathlib import Path

from engine.machine import RequestMachine

DESIGN = Path(__file__).resolve().parents[2] / "STREAMING_DETECTION_DESIGN.md"


def test_design_doc_diagram_matches_the_machine() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", DESIGN.read_text(), flags=re.DOTALL)
    assert blocks == [format(RequestMachine, "mermaid").rstrip() + "\n"]
