"""
An OpenAI SSE conformance checker: every streamed response in the suite goes through it.

Rules checked: only ``data:`` events and ``:`` comments; the role chunk first; one ``id``,
``created`` and ``model``; content and tool-call deltas; one finish chunk; a usage chunk only
when asked (and only after the finish chunk); ``[DONE]`` last, or one error event and no clean
finish; nothing after either.
"""

from __future__ import annotations

import json
from typing import Any

import attrs


class StreamViolation(AssertionError):
    pass


@attrs.define
class StreamReport:
    events: list[dict[str, Any]] = attrs.Factory(list)
    comments: int = 0
    id: str | None = None
    created: int | None = None
    model: str | None = None
    content: str = ""
    tool_calls: dict[int, dict[str, Any]] = attrs.Factory(dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    saw_usage_chunk: bool = False
    done: bool = False
    error: dict[str, Any] | None = None
    heartbeat_chunks: int = 0

    @property
    def ended(self) -> bool:
        return self.done or self.error is not None

    def calls(self) -> list[dict[str, Any]]:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]


def split_events(raw: bytes, *, partial: bool = False) -> tuple[list[str], bytes]:
    """Split raw SSE bytes into event blocks; return the unfinished tail when *partial*."""
    text = raw.decode("utf-8")
    blocks = text.split("\n\n")
    tail = blocks.pop()
    if tail and not partial:
        raise StreamViolation(f"the stream ends inside an event: {tail[:80]!r}")
    return blocks, tail.encode()


def check_stream(
    raw: bytes,
    *,
    include_usage: bool = False,
    partial: bool = False,
    heartbeat_chunk_ok: bool = True,
) -> StreamReport:
    """
    Check *raw* as a whole stream, or as a valid prefix of one when *partial*.

    Raises:
        StreamViolation: with the rule that was broken.
    """
    report = StreamReport()
    blocks, _ = split_events(raw, partial=partial)
    for block in blocks:
        if report.ended:
            raise StreamViolation(f"bytes after the end of the stream: {block[:80]!r}")
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            report.comments += 1
            continue
        if len(lines) != 1 or not lines[0].startswith("data: "):
            raise StreamViolation(f"not a single data line or comment: {block[:80]!r}")
        payload = lines[0][len("data: ") :]
        if payload == "[DONE]":
            if report.finish_reason is None:
                raise StreamViolation("[DONE] without a finish chunk")
            if include_usage and not report.saw_usage_chunk:
                raise StreamViolation("usage was asked for but no usage chunk came")
            report.done = True
            continue
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise StreamViolation("an event that is not a JSON object")
        if "error" in event:
            if set(event) != {"error"} or not isinstance(event["error"], dict):
                raise StreamViolation(f"a malformed error event: {event}")
            for field in ("message", "type", "code"):
                if field not in event["error"]:
                    raise StreamViolation(f"error event without {field}")
            report.error = event["error"]
            continue
        _check_chunk(report, event, include_usage, heartbeat_chunk_ok)
        report.events.append(event)
    if not partial and not report.ended:
        raise StreamViolation("the stream ended without [DONE] or an error event")
    return report


def _check_chunk(
    report: StreamReport, event: dict[str, Any], include_usage: bool, heartbeat_chunk_ok: bool
) -> None:
    if event.get("object") != "chat.completion.chunk":
        raise StreamViolation(f"object is {event.get('object')!r}")
    identity = (event.get("id"), event.get("created"), event.get("model"))
    if report.id is None:
        report.id, report.created, report.model = identity
        if not str(report.id).startswith("chatcmpl-"):
            raise StreamViolation(f"id {report.id!r} is not a chatcmpl- id")
    elif identity != (report.id, report.created, report.model):
        raise StreamViolation(f"identity changed: {identity} != {(report.id, report.created)}")
    choices = event.get("choices")
    if event.get("usage") is not None or choices == []:
        if not include_usage:
            raise StreamViolation("a usage chunk that was not asked for")
        if choices != [] or report.finish_reason is None or report.saw_usage_chunk:
            raise StreamViolation("the usage chunk must be one, after the finish, with no choices")
        report.saw_usage_chunk = True
        report.usage = event.get("usage")
        return
    if not isinstance(choices, list) or not choices:
        raise StreamViolation("a chunk without choices")
    if report.finish_reason is not None:
        raise StreamViolation("a chunk after the finish chunk")
    first = not report.events
    for choice in choices:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            raise StreamViolation("a choice without delta")
        if first:
            if delta.get("role") != "assistant":
                raise StreamViolation(f"the first chunk is not the role chunk: {delta}")
        elif "role" in delta:
            raise StreamViolation("a role after the first chunk")
        content = delta.get("content")
        if isinstance(content, str):
            if content == "" and not first and len(delta) == 1:
                if not heartbeat_chunk_ok:
                    raise StreamViolation("an empty content delta")
                report.heartbeat_chunks += 1
            report.content += content
        for call in delta.get("tool_calls") or ():
            index = call["index"]
            merged = report.tool_calls.get(index)
            if merged is None:
                if not call.get("id") or not call.get("function", {}).get("name"):
                    raise StreamViolation("a tool call's first delta needs id and name")
                merged = report.tool_calls[index] = {
                    "id": call["id"],
                    "type": call.get("type", "function"),
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
            merged["function"]["arguments"] += call.get("function", {}).get("arguments") or ""
        if choice.get("finish_reason") is not None:
            if delta:
                raise StreamViolation("the finish chunk must have an empty delta")
            report.finish_reason = choice["finish_reason"]
