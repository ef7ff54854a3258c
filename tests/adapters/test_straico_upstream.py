"""
``StraicoUpstream`` against the simulator over loopback: what is sent, how errors map (contract
§7, §8, §12), the exact answers, and the model list and lookup.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from adapters.upstream import StraicoUpstream
from engine.capability import CapabilityCache
from engine.config import StreamingConfig

from .conftest import SIM_KEY, Sim, chat_body, run_exchange

CHAT_MODELS = [
    "sim/stream",
    "sim/json",
    "sim/reject",
    "openai/gpt-4o-mini",
    "anthropic/claude-3.5-sonnet",
]


def b64(text: str) -> str:
    """URL-safe base64 without padding, as the simulator's ``text=`` takes it."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- what is sent -----------------------------------------------------------------------------


@pytest.mark.parametrize("client_stream", [True, False], ids=["stream-client", "json-client"])
async def test_straico_upstream_request_body_as_recorded(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim, client_stream: bool
) -> None:
    body = {
        "model": "sim/json",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
        "stream": client_stream,
        "max_tokens": 20,
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "user": "user-1",
        "metadata": {"team": "a"},
        "x_unknown": True,
    }
    if client_stream:
        body["stream_options"] = {"include_usage": True}

    outcome = await run_exchange(straico, client, body)

    assert outcome.status == 200
    (record,) = await sim.chat_records()
    assert record["body"] == {
        "model": "sim/json",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
        "temperature": 0.5,
        "max_tokens": 50,
        "stream": client_stream,
    }
    assert record["key_sent"] is True
    assert record["stream"] is client_stream


async def test_straico_upstream_stop_sends_stream_false_and_cuts_the_answer(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = f"sim/stream:text={b64('one two STOP three')}"

    outcome = await run_exchange(straico, client, chat_body(model, stream=True, stop=["STOP"]))

    report = outcome.stream()
    assert report.content == "one two "
    assert report.finish_reason == "stop"
    assert await sim.streams_sent() == [False]  # D1: the gateway must see the answer whole
    assert outcome.path() == ["stream_declined", "answer_received", "drained"]


# --- exact answers ----------------------------------------------------------------------------

EXACT_TEXT = "Exactly this, with ünïcödé — and   odd  spacing.\nA second line."


@pytest.mark.parametrize("kind", ["stream", "json"])
async def test_straico_upstream_text_model_streamed_gives_the_exact_text(
    straico: StraicoUpstream, client: httpx.AsyncClient, kind: str
) -> None:
    model = f"sim/{kind}:text={b64(EXACT_TEXT)}"

    outcome = await run_exchange(straico, client, chat_body(model, stream=True))

    assert outcome.stream().content == EXACT_TEXT


@pytest.mark.parametrize("kind", ["stream", "json"])
async def test_straico_upstream_text_model_whole_gives_the_exact_text(
    straico: StraicoUpstream, client: httpx.AsyncClient, kind: str
) -> None:
    model = f"sim/{kind}:text={b64(EXACT_TEXT)}"

    outcome = await run_exchange(straico, client, chat_body(model, stream=False))

    assert outcome.json()["choices"][0]["message"]["content"] == EXACT_TEXT


# --- errors (contract §7, server key mode) --------------------------------------------------

# status=CODE -> (status the client gets, code, the simulator's message passed on)
STATUS_TABLE = {
    401: (502, "upstream_auth_failed", "Invalid API key"),
    402: (429, "insufficient_quota", "Insufficient coins"),
    403: (502, "upstream_auth_failed", "Forbidden"),
    404: (404, "model_not_found", "Not found"),
    422: (400, "upstream_rejected_request", "Unprocessable request"),
    429: (429, "rate_limit_exceeded", "Too many requests"),
    500: (502, "upstream_error", "Internal server error"),
    503: (503, "upstream_unavailable", "Service unavailable"),
    504: (504, "upstream_timeout", "Gateway timeout"),
}
NOT_RETRYABLE = {"upstream_auth_failed", "insufficient_quota"}


@pytest.mark.parametrize("client_stream", [True, False], ids=["stream-client", "json-client"])
@pytest.mark.parametrize("upstream_status", sorted(STATUS_TABLE))
async def test_straico_upstream_error_status_maps_per_contract(
    straico: StraicoUpstream,
    client: httpx.AsyncClient,
    sim: Sim,
    upstream_status: int,
    client_stream: bool,
) -> None:
    status, code, message = STATUS_TABLE[upstream_status]
    cache = CapabilityCache(ttl=600)
    model = f"sim/stream:status={upstream_status}"

    outcome = await run_exchange(
        straico, client, chat_body(model, stream=client_stream), cache=cache
    )

    assert outcome.status == status
    error = outcome.error()
    assert error["code"] == code
    assert message in error["message"]
    assert (outcome.headers.get("x-should-retry") == "false") == (code in NOT_RETRYABLE)
    assert outcome.session.state == "errored"
    assert outcome.path()[-1] == ("timed_out" if upstream_status == 504 else "upstream_failed")
    assert await sim.streams_sent() == [client_stream]  # one call, never repeated
    assert len(cache) == 0  # D5: an error teaches nothing


async def test_straico_upstream_rate_limit_keeps_retry_after(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run_exchange(
        straico, client, chat_body("sim/json:status=429:retry=7", stream=True)
    )

    assert outcome.status == 429
    assert outcome.headers["retry-after"] == "7"
    assert outcome.error()["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("upstream_status", "status", "code"),
    [(401, 401, "invalid_api_key"), (403, 403, "permission_denied")],
)
async def test_straico_upstream_auth_error_in_per_request_key_mode(
    straico: StraicoUpstream,
    client: httpx.AsyncClient,
    upstream_status: int,
    status: int,
    code: str,
) -> None:
    model = f"sim/json:status={upstream_status}"

    outcome = await run_exchange(straico, client, chat_body(model, stream=False), server_key=False)

    assert outcome.status == status
    assert outcome.error()["code"] == code


async def test_straico_upstream_wrong_key_is_upstream_auth_failed(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    outcome = await run_exchange(straico, client, chat_body("sim/json", stream=False), key="wrong")

    assert outcome.status == 502
    assert outcome.error()["code"] == "upstream_auth_failed"
    assert "wrong" not in outcome.body.decode()
    assert [r["key_sent"] for r in await sim.chat_records()] == [False]


async def test_straico_upstream_unknown_model_is_model_not_found(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run_exchange(straico, client, chat_body("sim/nosuchkind", stream=True))

    assert outcome.status == 404
    assert outcome.error()["code"] == "model_not_found"


async def test_straico_upstream_error_object_form_message_is_read(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run_exchange(
        straico, client, chat_body("sim/json:status=402:errobj=1", stream=False)
    )

    assert outcome.status == 429
    error = outcome.error()
    assert error["code"] == "insufficient_quota"
    assert "Insufficient coins" in error["message"]


async def test_straico_upstream_rejection_in_object_form_is_a_rejection(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject:errobj=1"
    expected = await sim.reference(model)

    outcome = await run_exchange(straico, client, chat_body(model, stream=True))

    assert outcome.stream().content == expected["choices"][0]["message"]["content"]
    assert await sim.streams_sent() == [True, False]
    assert outcome.path() == ["stream_rejected", "answer_received", "drained"]


async def test_straico_upstream_error_never_echoes_the_key(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    outcome = await run_exchange(
        straico, client, chat_body("sim/json:status=500", stream=False), config=StreamingConfig()
    )

    assert SIM_KEY not in outcome.body.decode()


# --- models -----------------------------------------------------------------------------------


async def test_straico_upstream_models_list_has_chat_models_only(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    response = await client.send(straico.models_request(SIM_KEY))
    assert response.status_code == 200
    raw_ids = [item["id"] for item in response.json()["data"]]
    assert "openai/dall-e-3" in raw_ids  # the simulator lists an image model ...

    models = straico.models_from(response.json())

    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == CHAT_MODELS  # ... the gateway does not
    for model in models["data"]:
        assert model == {
            "id": model["id"],
            "object": "model",
            "created": 1_735_689_600,
            "owned_by": model["id"].split("/")[0],
        }


@pytest.mark.parametrize(
    "model_id", ["anthropic/claude-3.5-sonnet", "sim/stream:words=3:delay=10", "sim/json"]
)
async def test_straico_upstream_model_lookup_by_id_with_slashes(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim, model_id: str
) -> None:
    response = await client.send(straico.model_request(model_id, SIM_KEY))
    assert response.status_code == 200, response.text

    model = straico.model_from(response.json())

    assert model == {
        "id": model_id,
        "object": "model",
        "created": 1_735_689_600,
        "owned_by": model_id.split("/", maxsplit=1)[0],
    }
    (record,) = await sim.records()
    assert record["model"] == model_id


async def test_straico_upstream_model_lookup_unknown_id_is_404(
    straico: StraicoUpstream, client: httpx.AsyncClient
) -> None:
    response = await client.send(straico.model_request("nobody/nothing", SIM_KEY))

    assert response.status_code == 404
    assert "Model not found" in response.json()["error"]
