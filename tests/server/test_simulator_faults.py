"""
The simulator's misbehaviours over real loopback HTTP: delay, gap, drop, stall, badjson, badsse,
errevent and finish (contract §12).

Long waits (delay, gap, stall) are paired with a short client read timeout: the timeout is how
the test observes that nothing came, never a measure of how long something took.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from server.simulator import create_simulator_app
from tests.support.servers import ServerThread

KEY = "test-key"
MESSAGES = [{"role": "user", "content": "Tell me about faults."}]
SILENCE = 0.25  # seconds of client read timeout that show a wait that never ends
ERROR_EVENT = '{"error": {"message": "simulated error", "type": "server_error"}}'


@pytest.fixture(name="client", scope="module")
def _client() -> Iterator[httpx.Client]:
    with (
        ServerThread(create_simulator_app(KEY)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        ) as client,
    ):
        yield client


@attrs.frozen
class Outcome:
    """What a client got: the head (None if it never came), the bytes, how the body ended."""

    status: int | None
    headers: dict[str, str]
    data: bytes
    failure: type[httpx.HTTPError] | None

    def events(self) -> list[str]:
        return [event.removeprefix("data: ") for event in self.data.decode().split("\n\n") if event]

    def kinds(self) -> list[str]:
        """Each event as role / content / finish / usage / done / error / broken."""
        return [_kind(event) for event in self.events()]

    def content(self) -> str:
        return "".join(
            json.loads(event)["choices"][0]["delta"]["content"]
            for event in self.events()
            if _kind(event) == "content"
        )


def _kind(event: str) -> str:
    if event == "[DONE]":
        return "done"
    try:
        chunk = json.loads(event)
    except json.JSONDecodeError:
        return "broken"
    if "error" in chunk:
        return "error"
    if not chunk["choices"]:
        return "usage"
    if chunk["choices"][0]["finish_reason"] is not None:
        return "finish"
    return "role" if "role" in chunk["choices"][0]["delta"] else "content"


def call(
    client: httpx.Client, model: str, *, stream: bool = True, read_timeout: float = 5
) -> Outcome:
    """POST a chat call and read it to its end, whatever that end is."""
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "stream": stream}
    received = bytearray()
    status: int | None = None
    headers: dict[str, str] = {}
    try:
        with client.stream(
            "POST",
            "/v2/chat/completions",
            json=body,
            timeout=httpx.Timeout(5, read=read_timeout),
        ) as response:
            status, headers = response.status_code, dict(response.headers)
            for part in response.iter_raw():
                received += part
    except httpx.HTTPError as exc:
        return Outcome(status, headers, bytes(received), type(exc))
    return Outcome(status, headers, bytes(received), None)


ROLE, CONTENT, FINISH, USAGE, DONE = "role", "content", "finish", "usage", "done"
WHOLE_STREAM = [ROLE, CONTENT, CONTENT, CONTENT, CONTENT, FINISH, USAGE, DONE]


# --- delay and gap --------------------------------------------------------------------------


def test_simulator_short_delay_and_gap_deliver_the_whole_stream(client: httpx.Client) -> None:
    outcome = call(client, "sim/stream:delay=30:gap=20")
    whole = call(client, "sim/stream:delay=30:gap=20", stream=False)

    assert (outcome.kinds(), outcome.failure) == (WHOLE_STREAM, None)
    assert outcome.content() == json.loads(whole.data)["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [True, False])
def test_simulator_long_delay_holds_the_head(client: httpx.Client, stream: bool) -> None:
    outcome = call(client, "sim/stream:delay=60000", stream=stream, read_timeout=SILENCE)

    assert (outcome.status, outcome.failure) == (None, httpx.ReadTimeout)


def test_simulator_long_gap_on_a_stream_holds_every_chunk_after_the_role(
    client: httpx.Client,
) -> None:
    outcome = call(client, "sim/stream:gap=60000", read_timeout=SILENCE)

    assert (outcome.status, outcome.kinds(), outcome.failure) == (200, [ROLE], httpx.ReadTimeout)


def test_simulator_long_gap_on_json_sends_the_head_and_holds_the_body(
    client: httpx.Client,
) -> None:
    outcome = call(client, "sim/json:gap=60000", read_timeout=SILENCE)

    assert (outcome.status, outcome.data, outcome.failure) == (200, b"", httpx.ReadTimeout)
    assert int(outcome.headers["content-length"]) > 0


# --- drop -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected_kinds"),
    [
        pytest.param("sim/stream:drop=0", [ROLE], id="before-any-content"),
        pytest.param("sim/stream:drop=2", [ROLE, CONTENT, CONTENT], id="after-two"),
        pytest.param(
            "sim/stream:drop=4",
            [ROLE, CONTENT, CONTENT, CONTENT, CONTENT, FINISH],
            id="k-is-chunks",
        ),
        pytest.param(
            "sim/stream:chunks=2:drop=9", [ROLE, CONTENT, CONTENT, FINISH], id="k-past-chunks"
        ),
    ],
)
def test_simulator_drop_on_a_stream_breaks_the_body_after_k_contents(
    client: httpx.Client, model: str, expected_kinds: list[str]
) -> None:
    outcome = call(client, model)

    assert (outcome.status, outcome.kinds(), outcome.failure) == (
        200,
        expected_kinds,
        httpx.RemoteProtocolError,
    )


@pytest.mark.parametrize("model", ["sim/json:drop=1", "sim/stream:drop=3"])
def test_simulator_drop_on_json_breaks_the_body_after_half(
    client: httpx.Client, model: str
) -> None:
    outcome = call(client, model, stream=False)

    assert (outcome.status, outcome.failure) == (200, httpx.RemoteProtocolError)
    assert len(outcome.data) == int(outcome.headers["content-length"]) // 2


# --- stall ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected_kinds"),
    [
        pytest.param("sim/stream:stall=1", [ROLE, CONTENT], id="after-one"),
        pytest.param("sim/stream:chunks=1:stall=5", [ROLE, CONTENT, FINISH], id="k-past-chunks"),
    ],
)
def test_simulator_stall_on_a_stream_stops_after_k_contents(
    client: httpx.Client, model: str, expected_kinds: list[str]
) -> None:
    outcome = call(client, model, read_timeout=SILENCE)

    assert (outcome.status, outcome.kinds(), outcome.failure) == (
        200,
        expected_kinds,
        httpx.ReadTimeout,
    )


def test_simulator_stall_on_json_stops_after_the_head(client: httpx.Client) -> None:
    outcome = call(client, "sim/json:stall=0", read_timeout=SILENCE)

    assert (outcome.status, outcome.data, outcome.failure) == (200, b"", httpx.ReadTimeout)


# --- malformed bodies and error events ------------------------------------------------------


def test_simulator_badjson_sends_a_complete_but_malformed_body(client: httpx.Client) -> None:
    outcome = call(client, "sim/stream:badjson=1", stream=False)

    assert (outcome.status, outcome.headers["content-type"], outcome.failure) == (
        200,
        "application/json",
        None,
    )
    assert len(outcome.data) == int(outcome.headers["content-length"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(outcome.data)


def test_simulator_badsse_sends_a_broken_event_then_ends_cleanly(client: httpx.Client) -> None:
    outcome = call(client, "sim/stream:badsse=1")

    assert (outcome.kinds(), outcome.failure) == ([ROLE, CONTENT, "broken"], None)
    assert outcome.data.endswith(b'\n\ndata: {"broken\n\n')


@pytest.mark.parametrize(
    ("model", "expected_kinds"),
    [
        pytest.param("sim/stream:errevent=2", [ROLE, CONTENT, CONTENT, "error"], id="after-two"),
        pytest.param(
            "sim/stream:chunks=1:errevent=1", [ROLE, CONTENT, FINISH, "error"], id="after-finish"
        ),
        pytest.param(
            "sim/stream:badsse=3:errevent=1", [ROLE, CONTENT, "error"], id="earliest-wins"
        ),
    ],
)
def test_simulator_errevent_sends_an_error_event_then_ends_cleanly(
    client: httpx.Client, model: str, expected_kinds: list[str]
) -> None:
    outcome = call(client, model)

    assert (outcome.kinds(), outcome.failure, outcome.events()[-1]) == (
        expected_kinds,
        None,
        ERROR_EVENT,
    )


@pytest.mark.parametrize(
    ("model", "stream"),
    [
        pytest.param("sim/stream:errevent=1:badsse=1", False, id="stream-events-on-json"),
        pytest.param("sim/json:errevent=0", True, id="errevent-on-json-kind"),
        pytest.param("sim/stream:badjson=1", True, id="badjson-on-a-stream"),
    ],
)
def test_simulator_fault_that_does_not_apply_leaves_the_answer_whole(
    client: httpx.Client, model: str, stream: bool
) -> None:
    outcome = call(client, model, stream=stream)

    assert (outcome.status, outcome.failure) == (200, None)
    if outcome.headers["content-type"] == "application/json":
        assert json.loads(outcome.data)["object"] == "chat.completion"
    else:
        assert outcome.kinds() == WHOLE_STREAM


def test_simulator_finish_sets_the_finish_reason_of_both_forms(client: httpx.Client) -> None:
    streamed = call(client, "sim/stream:finish=end_turn")
    whole = call(client, "sim/stream:finish=end_turn", stream=False)
    finish_chunk = json.loads(streamed.events()[streamed.kinds().index(FINISH)])

    assert (
        finish_chunk["choices"][0]["finish_reason"],
        json.loads(whole.data)["choices"][0]["finish_reason"],
    ) == ("end_turn", "end_turn")
