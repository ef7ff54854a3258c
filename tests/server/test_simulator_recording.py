"""What the simulator records of each ``/v2/*`` request, and ``closed_early`` (contract §12)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server.simulator import create_simulator_app
from tests.support.servers import ServerThread

KEY = "test-key"
CHAT = "/v2/chat/completions"
MESSAGES = [{"role": "user", "content": "Record me."}]
SETTLE = 5  # seconds /_sim/requests may hold its answer until no request is being answered


@pytest.fixture(name="simulator", scope="module")
def _simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(KEY)) as server:
        yield server


@pytest.fixture(name="client", scope="module")
def _client(simulator: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=simulator.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ) as client:
        yield client


@pytest.fixture(autouse=True)
def _clear_records(client: httpx.Client) -> None:
    assert client.delete("/_sim/requests").status_code == 204


def records(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/_sim/requests", params={"wait": SETTLE})
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


def leave_after_events(client: httpx.Client, model: str, events: int) -> None:
    """Stream a chat call, read *events* SSE events, then close the connection."""
    with client.stream("POST", CHAT, json=chat_body(model, stream=True)) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == events:
                break


# --- fields ---------------------------------------------------------------------------------


def test_simulator_records_a_chat_call_with_every_field(client: httpx.Client) -> None:
    body = chat_body("sim/json", stream=False, temperature=0.5)
    client.post(CHAT, json=body)

    assert records(client) == [
        {
            "method": "POST",
            "path": CHAT,
            "model": "sim/json",
            "stream": False,
            "key_sent": True,
            "body": body,
            "status": 200,
            "closed_early": False,
        }
    ]


@pytest.mark.parametrize(
    ("extra", "expected_stream"),
    [
        pytest.param({}, None, id="absent"),
        pytest.param({"stream": True}, True, id="true"),
        pytest.param({"stream": False}, False, id="false"),
        pytest.param({"stream": "yes"}, "yes", id="as-sent"),
    ],
)
def test_simulator_records_the_stream_flag_as_sent(
    client: httpx.Client, extra: dict[str, Any], expected_stream: object
) -> None:
    client.post(CHAT, json=chat_body("sim/stream", **extra))

    assert [record["stream"] for record in records(client)] == [expected_stream]


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": ""}, {"Authorization": "Bearer not-the-key"}],
    ids=["missing", "wrong"],
)
def test_simulator_records_a_call_without_the_key(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    client.post(CHAT, json=chat_body("sim/json"), headers=headers)

    assert [(r["key_sent"], r["status"], r["model"]) for r in records(client)] == [
        (False, 401, "sim/json")
    ]


def test_simulator_records_model_lookups(client: httpx.Client) -> None:
    client.get("/v2/models")
    client.get("/v2/models/sim/stream:words=3")
    client.get("/v2/models/nobody/knows")

    assert [
        (r["method"], r["path"], r["model"], r["body"], r["status"]) for r in records(client)
    ] == [
        ("GET", "/v2/models", None, None, 200),
        ("GET", "/v2/models/sim/stream:words=3", "sim/stream:words=3", None, 200),
        ("GET", "/v2/models/nobody/knows", "nobody/knows", None, 404),
    ]


def test_simulator_records_a_body_that_is_not_json_as_null(client: httpx.Client) -> None:
    client.post(CHAT, content=b"{oops", headers={"Content-Type": "application/json"})

    assert [(r["body"], r["model"], r["status"]) for r in records(client)] == [(None, None, 400)]


def test_simulator_records_oldest_first_and_only_v2(client: httpx.Client) -> None:
    client.post(CHAT, json=chat_body("sim/json"))
    client.get("/elsewhere")
    client.get("/_sim/requests")
    client.post(CHAT, json=chat_body("sim/reject", stream=True))
    client.post(CHAT, json=chat_body("sim/unknown"))

    assert [(r["model"], r["status"]) for r in records(client)] == [
        ("sim/json", 200),
        ("sim/reject", 400),
        ("sim/unknown", 422),
    ]


def test_simulator_delete_clears_the_records(client: httpx.Client) -> None:
    client.post(CHAT, json=chat_body("sim/json"))

    cleared = client.delete("/_sim/requests")

    assert (cleared.status_code, records(client)) == (204, [])


def test_simulator_wait_must_be_a_number(client: httpx.Client) -> None:
    response = client.get("/_sim/requests", params={"wait": "soon"})

    assert (response.status_code, response.json()) == (
        400,
        {"error": "wait must be a number of seconds", "success": False},
    )


def test_simulator_keeps_only_the_newest_records() -> None:
    with (
        ServerThread(create_simulator_app(KEY, max_records=2)) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as client,
    ):
        for model in ("sim/json", "sim/stream", "sim/reject"):
            client.post(CHAT, json=chat_body(model))

        assert [r["model"] for r in records(client)] == ["sim/stream", "sim/reject"]


# --- closed_early ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "stream"),
    [
        pytest.param("sim/stream:gap=5", True, id="stream"),
        pytest.param("sim/json:delay=5:gap=5", False, id="json"),
        pytest.param("sim/stream:errevent=1", True, id="errevent"),
        pytest.param("sim/json:status=503", False, id="status"),
    ],
)
def test_simulator_closed_early_is_false_for_a_finished_answer(
    client: httpx.Client, model: str, stream: bool
) -> None:
    client.post(CHAT, json=chat_body(model, stream=stream)).read()

    assert [r["closed_early"] for r in records(client)] == [False]


@pytest.mark.parametrize("model", ["sim/stream:drop=1", "sim/json:drop=1"])
def test_simulator_closed_early_is_false_when_the_simulator_drops(
    client: httpx.Client, model: str
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CHAT, json=chat_body(model, stream=True))

    assert [(r["closed_early"], r["status"]) for r in records(client)] == [(False, 200)]


def test_simulator_closed_early_when_the_client_leaves_mid_stall(client: httpx.Client) -> None:
    leave_after_events(client, "sim/stream:stall=2", events=3)

    assert [(r["closed_early"], r["status"]) for r in records(client)] == [(True, 200)]


def test_simulator_closed_early_when_the_client_leaves_a_stalled_json_answer(
    client: httpx.Client,
) -> None:
    with client.stream("POST", CHAT, json=chat_body("sim/json:stall=0")) as response:
        assert response.status_code == 200

    assert [(r["closed_early"], r["status"]) for r in records(client)] == [(True, 200)]


def test_simulator_closed_early_when_the_client_leaves_mid_gap(client: httpx.Client) -> None:
    leave_after_events(client, "sim/stream:gap=60000", events=1)

    assert [(r["closed_early"], r["status"]) for r in records(client)] == [(True, 200)]


def test_simulator_closed_early_when_the_client_leaves_mid_delay(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            CHAT, json=chat_body("sim/stream:delay=60000"), timeout=httpx.Timeout(5, read=0.1)
        )

    assert [(r["closed_early"], r["status"]) for r in records(client)] == [(True, None)]
