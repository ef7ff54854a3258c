"""
How many upstream calls each client request costs, in every detection case (contract §4, D1-D9),
read from what the simulator recorded.

Time: the exchange consults the capability cache at the event loop's clock. To put an entry
past its TTL, a test re-learns it through the cache's own API with a ``now`` that lies more than
the TTL in the past (``age_entry``), which is what the cache would see had the entry been learned
then; no test waits for an entry to expire.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from adapters.upstream import StraicoUpstream
from engine.capability import Capability, CapabilityCache
from engine.config import StreamingConfig

from .conftest import Outcome, Sim, chat_body, run_exchange

TTL = 60.0


def now() -> float:
    return asyncio.get_running_loop().time()


def cached(cache: CapabilityCache, upstream: StraicoUpstream, model: str) -> Capability | None:
    capability, _ = cache.lookup((upstream.cache_prefix, model), now())
    return capability


def age_entry(
    cache: CapabilityCache, upstream: StraicoUpstream, model: str, capability: Capability
) -> None:
    """Make *capability* an entry learned longer ago than the TTL."""
    cache.learn((upstream.cache_prefix, model), capability, now() - cache.ttl - 1)


async def run_many(
    upstream: StraicoUpstream,
    client: httpx.AsyncClient,
    model: str,
    count: int,
    *,
    cache: CapabilityCache,
    config: StreamingConfig | None = None,
    stream: bool = True,
) -> list[Outcome]:
    """*count* requests, one after the other; each must succeed."""
    outcomes = []
    for _ in range(count):
        outcome = await run_exchange(
            upstream, client, chat_body(model, stream=stream), cache=cache, config=config
        )
        assert outcome.status == 200, outcome.body
        assert outcome.session.state == "done"
        outcomes.append(outcome)
    return outcomes


# --- auto mode, one request at a time -------------------------------------------------------


async def test_detection_json_model_costs_no_extra_call(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/json"
    cache = CapabilityCache(ttl=TTL)

    outcomes = await run_many(straico, client, model, 10, cache=cache)

    assert await sim.streams_sent(model) == [True] * 10  # D3: asking costs nothing, ask again
    assert [o.session.upstream_calls for o in outcomes] == [1] * 10
    assert [o.session.capability for o in outcomes] == ["unknown"] + ["answers_whole"] * 9
    assert cached(cache, straico, model) == "answers_whole"


async def test_detection_stream_model_costs_one_call_each(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream"
    cache = CapabilityCache(ttl=TTL)

    outcomes = await run_many(straico, client, model, 5, cache=cache)

    assert await sim.streams_sent(model) == [True] * 5
    assert [o.session.capability for o in outcomes] == ["unknown"] + ["streams"] * 4
    assert all(o.path() == ["upstream_streamed", "upstream_finished", "drained"] for o in outcomes)
    assert cached(cache, straico, model) == "streams"


async def test_detection_reject_model_costs_one_extra_call_once(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject"
    cache = CapabilityCache(ttl=TTL)

    outcomes = await run_many(straico, client, model, 5, cache=cache)

    assert await sim.streams_sent(model) == [True, False, False, False, False, False]
    assert [o.session.upstream_calls for o in outcomes] == [2, 1, 1, 1, 1]
    assert outcomes[0].path() == ["stream_rejected", "answer_received", "drained"]
    assert outcomes[1].path() == ["stream_declined", "answer_received", "drained"]
    assert [o.session.capability for o in outcomes[1:]] == ["rejects_stream"] * 4
    assert cached(cache, straico, model) == "rejects_stream"


async def test_detection_json_client_sends_stream_false_and_teaches_nothing(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject"
    cache = CapabilityCache(ttl=TTL)

    await run_many(straico, client, model, 3, cache=cache, stream=False)

    assert await sim.streams_sent(model) == [False] * 3
    assert len(cache) == 0


# --- forced modes (D9) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "per_request"),
    [("sim/stream", [True]), ("sim/json", [True]), ("sim/reject", [True, False])],
)
async def test_detection_forced_on_always_asks_for_a_stream(
    straico: StraicoUpstream,
    client: httpx.AsyncClient,
    sim: Sim,
    model: str,
    per_request: list[bool],
) -> None:
    cache = CapabilityCache(ttl=TTL)
    config = StreamingConfig(force_streaming=True)

    outcomes = await run_many(straico, client, model, 3, cache=cache, config=config)

    assert await sim.streams_sent(model) == per_request * 3  # a rejection costs 2 every time
    assert {o.session.capability for o in outcomes} == {"forced"}
    assert len(cache) == 0  # neither written ...


async def test_detection_forced_on_ignores_a_live_entry(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream"
    cache = CapabilityCache(ttl=TTL)
    cache.learn((straico.cache_prefix, model), "rejects_stream", now())
    config = StreamingConfig(force_streaming=True)

    await run_many(straico, client, model, 2, cache=cache, config=config)

    assert await sim.streams_sent(model) == [True, True]  # ... nor read
    assert cached(cache, straico, model) == "rejects_stream"


async def test_detection_forced_off_never_asks_and_leaves_the_cache(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream"
    cache = CapabilityCache(ttl=TTL)
    cache.learn((straico.cache_prefix, model), "streams", now())
    config = StreamingConfig(force_streaming=False)

    outcomes = await run_many(straico, client, model, 3, cache=cache, config=config)

    assert await sim.streams_sent(model) == [False] * 3
    assert all(o.path() == ["stream_declined", "answer_received", "drained"] for o in outcomes)
    assert {o.session.capability for o in outcomes} == {"forced"}
    assert len(cache) == 1
    assert cached(cache, straico, model) == "streams"


# --- TTL (D7) ---------------------------------------------------------------------------------


async def test_detection_expired_rejection_is_probed_again(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject"
    cache = CapabilityCache(ttl=TTL)
    await run_many(straico, client, model, 2, cache=cache)
    assert await sim.streams_sent(model) == [True, False, False]
    await sim.clear()

    age_entry(cache, straico, model, "rejects_stream")
    expired, again = await run_many(straico, client, model, 2, cache=cache)

    assert await sim.streams_sent(model) == [True, False, False]
    assert (expired.session.capability, expired.session.cache_result) == ("unknown", "expired")
    assert (again.session.capability, again.session.cache_result) == ("rejects_stream", "hit")


async def test_detection_ttl_zero_probes_every_request(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject"
    cache = CapabilityCache(ttl=0)
    config = StreamingConfig(detection_cache_duration=0)

    outcomes = await run_many(straico, client, model, 4, cache=cache, config=config)

    assert await sim.streams_sent(model) == [True, False] * 4
    assert [o.session.upstream_calls for o in outcomes] == [2] * 4
    assert len(cache) == 0


# --- concurrency (D8) -------------------------------------------------------------------------


async def test_detection_concurrent_first_requests_each_probe_without_waiting(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/reject:delay=300"
    cache = CapabilityCache(ttl=TTL)

    outcomes = await asyncio.gather(
        *(
            run_exchange(straico, client, chat_body(model, stream=True), cache=cache)
            for _ in range(10)
        )
    )

    assert [o.status for o in outcomes] == [200] * 10
    # Every one started before the first rejection was learned, and none waited for another:
    # the simulator received all ten probes before the first repeat (each waits 300 ms).
    assert [o.session.capability for o in outcomes] == ["unknown"] * 10
    assert [o.session.upstream_calls for o in outcomes] == [2] * 10  # one extra each, no more
    sent = await sim.streams_sent(model)
    assert sent[:10] == [True] * 10
    assert sent[10:] == [False] * 10

    await sim.clear()
    late = await run_exchange(straico, client, chat_body(model, stream=True), cache=cache)

    assert late.session.capability == "rejects_stream"
    assert late.session.upstream_calls == 1
    assert await sim.streams_sent(model) == [False]


# --- contradictions (D6) ----------------------------------------------------------------------


async def test_detection_rejection_entry_steers_until_it_expires_then_is_replaced(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    model = "sim/stream"  # the upstream streams; the cache believes otherwise
    cache = CapabilityCache(ttl=TTL)
    cache.learn((straico.cache_prefix, model), "rejects_stream", now())

    live = await run_exchange(straico, client, chat_body(model, stream=True), cache=cache)

    assert live.path() == ["stream_declined", "answer_received", "drained"]
    assert await sim.streams_sent(model) == [False]
    assert cached(cache, straico, model) == "rejects_stream"  # a declined call teaches nothing
    await sim.clear()

    age_entry(cache, straico, model, "rejects_stream")
    probed = await run_exchange(straico, client, chat_body(model, stream=True), cache=cache)

    assert await sim.streams_sent(model) == [True]
    assert probed.path() == ["upstream_streamed", "upstream_finished", "drained"]
    assert probed.headers["x-gateway-stream-mode"] == "stream"
    assert cached(cache, straico, model) == "streams"


@pytest.mark.parametrize(
    ("model", "believed", "sent", "learned"),
    [
        ("sim/stream", "answers_whole", [True], "streams"),
        ("sim/json", "streams", [True], "answers_whole"),
        ("sim/reject", "streams", [True, False], "rejects_stream"),
        ("sim/reject", "answers_whole", [True, False], "rejects_stream"),
    ],
)
async def test_detection_live_entry_other_than_rejection_is_replaced_by_what_is_seen(
    straico: StraicoUpstream,
    client: httpx.AsyncClient,
    sim: Sim,
    model: str,
    believed: Capability,
    sent: list[bool],
    learned: Capability,
) -> None:
    cache = CapabilityCache(ttl=TTL)
    cache.learn((straico.cache_prefix, model), believed, now())

    outcome = await run_exchange(straico, client, chat_body(model, stream=True), cache=cache)

    assert outcome.status == 200
    assert outcome.session.capability == believed
    assert await sim.streams_sent(model) == sent  # D6: only rejects_stream changes what is sent
    assert cached(cache, straico, model) == learned


# --- fallback disabled (D10) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "learned"), [("sim/json", "answers_whole"), ("sim/reject", "rejects_stream")]
)
async def test_detection_no_fallback_fails_after_one_call_then_without_any(
    straico: StraicoUpstream,
    client: httpx.AsyncClient,
    sim: Sim,
    model: str,
    learned: Capability,
) -> None:
    cache = CapabilityCache(ttl=TTL)
    config = StreamingConfig(enable_fallback=False)

    first = await run_exchange(
        straico, client, chat_body(model, stream=True), cache=cache, config=config
    )
    second = await run_exchange(
        straico, client, chat_body(model, stream=True), cache=cache, config=config
    )

    for outcome in (first, second):
        assert outcome.status == 400
        assert outcome.error()["code"] == "streaming_unsupported"
        assert outcome.path() == ["upstream_failed"]
    assert [first.session.upstream_calls, second.session.upstream_calls] == [1, 0]
    assert await sim.streams_sent(model) == [True]  # no repeat, then no call at all
    assert cached(cache, straico, model) == learned


async def test_detection_no_fallback_streams_a_streaming_model(
    straico: StraicoUpstream, client: httpx.AsyncClient, sim: Sim
) -> None:
    config = StreamingConfig(enable_fallback=False)

    outcome = await run_exchange(
        straico, client, chat_body("sim/stream", stream=True), config=config
    )

    assert outcome.headers["x-gateway-stream-mode"] == "stream"
    assert await sim.streams_sent("sim/stream") == [True]
