"""
The sans-IO request engine of straico-gateway.

It never does IO, sleeps, reads a clock or draws random numbers: time, ids and bytes are passed
in, and what to do comes back as actions (see :mod:`engine.session`). Importing it loads no
web framework, HTTP client or event loop library.
"""

from .answer import Answer, StreamAssembler, parse_completion
from .capability import CallPlan, CapabilityCache, plan_call
from .config import StreamingConfig
from .errors import GatewayError
from .events import (
    Action,
    CallUpstream,
    CancelUpstream,
    ClientGone,
    Delivered,
    Finish,
    Input,
    SendBytes,
    SendHead,
    ShutDown,
    UpstreamData,
    UpstreamEnd,
    UpstreamFailed,
    UpstreamHead,
)
from .machine import RequestMachine
from .request import ChatRequest, Message, parse_chat_request
from .session import Session
from .trace import TRANSITIONS, Cursor, TraceEntry

__all__ = [
    "TRANSITIONS",
    "Action",
    "Answer",
    "CallPlan",
    "CallUpstream",
    "CancelUpstream",
    "CapabilityCache",
    "ChatRequest",
    "ClientGone",
    "Cursor",
    "Delivered",
    "Finish",
    "GatewayError",
    "Input",
    "Message",
    "RequestMachine",
    "SendBytes",
    "SendHead",
    "Session",
    "ShutDown",
    "StreamAssembler",
    "StreamingConfig",
    "TraceEntry",
    "UpstreamData",
    "UpstreamEnd",
    "UpstreamFailed",
    "UpstreamHead",
    "parse_chat_request",
    "parse_completion",
    "plan_call",
]
