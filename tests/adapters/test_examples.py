"""
The examples of ``docs/examples/`` run, and do what docs/embedding.md says they do.

- docs/embedding.md describes every input and action of the session, and links only to
  examples that exist.
- ``plain_engine.py`` runs as a script; its output (the client's SSE bytes between ``>>``
  lines, then the trace) is read back and checked scene by scene.
- ``fastapi_app.py`` and ``aiohttp_app.py`` expose ``create_app(upstream_url, key)``: each app
  is served on loopback against the simulator and called once streamed and once not, beside
  its own route; each script also starts as a script (``--help``), so its imports hold when run
  from the command line. The aiohttp example's shutdown hook and its per-request key mode are
  checked too.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from engine import events
from engine.config import StreamingConfig
from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import SIM_KEY
from .frameworks_support import (
    CHAT_PATH,
    CLIENT_TIMEOUT,
    AiohttpServerThread,
    SimRecords,
    chat_body,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"
SCRIPT_TIMEOUT = 30.0


def load_example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str) -> str:
    """Run ``docs/examples/<name>.py`` with this interpreter; its standard output."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(name="records")
def _records(simulator: ServerThread) -> SimRecords:
    records = SimRecords(simulator.url)
    records.clear()
    return records


# --- plain_engine.py ------------------------------------------------------------------------


#: Each scene's ``>>`` lines and its SSE text, by the scene's title.
Scenes = dict[str, tuple[list[str], str]]


def _scenes(output: str) -> Scenes:
    """Each scene's ``>>`` lines and the SSE text printed between them, by title."""
    scenes: Scenes = {}
    for block in output.split("### ")[1:]:
        title, _, rest = block.partition("\n")
        lines = rest.splitlines(keepends=True)
        notes = [line.removeprefix(">> ").rstrip("\n") for line in lines if line.startswith(">> ")]
        sse = "".join(line for line in lines if not line.startswith(">> "))
        scenes[title] = (notes, sse)
    return scenes


def _trace(notes: list[str]) -> list[str]:
    return [note.removeprefix("trace: ") for note in notes if note.startswith("trace: ")]


def _head(notes: list[str]) -> str:
    return next(note for note in notes if note.startswith("send the head: "))


@pytest.fixture(name="scenes", scope="module")
def _scenes_fixture() -> Scenes:
    """The script's output, run once for the module."""
    return _scenes(run_script("plain_engine"))


def test_plain_engine_example_prints_three_scenes(scenes: Scenes) -> None:
    assert list(scenes) == ["pass-through", "fallback with heartbeats", "client gone"]


def test_plain_engine_example_relays_a_stream_cut_anywhere(scenes: Scenes) -> None:
    notes, sse = scenes["pass-through"]

    report = check_stream(sse.encode(), include_usage=True)
    assert report.content == "Hello from the engine."
    assert report.finish_reason == "stop"
    assert "X-Gateway-Stream-Mode: stream" in _head(notes)
    assert _trace(notes) == [
        "detecting --upstream_streamed--> streaming at 400 ms",
        "streaming --upstream_finished--> draining at 800 ms",
        "draining --drained--> done at 800 ms",
    ]
    assert notes[-1] == "outcome: done (error: None)"


def test_plain_engine_example_keeps_the_client_alive_then_replays_the_answer(
    scenes: Scenes,
) -> None:
    notes, sse = scenes["fallback with heartbeats"]

    report = check_stream(sse.encode(), include_usage=True)
    assert report.comments == 1  # ticks at 10 s (the commit) and 20 s (one heartbeat)
    assert report.content == "A whole answer, replayed in pieces."
    assert report.usage == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert "X-Gateway-Stream-Mode: detecting" in _head(notes)
    assert _trace(notes) == [
        "detecting --upstream_answered_whole--> falling_back at 25000 ms",
        "falling_back --answer_received--> draining at 25100 ms",
        "draining --drained--> done at 25100 ms",
    ]


def test_plain_engine_example_cancels_the_upstream_when_the_client_leaves(
    scenes: Scenes,
) -> None:
    notes, sse = scenes["client gone"]

    report = check_stream(sse.encode(), partial=True)
    assert (report.content, report.ended) == ("", False)
    assert "cancel the upstream call" in notes
    assert "end the response body" not in notes
    assert _trace(notes) == ["detecting --client_gone--> errored at 12500 ms"]
    assert notes[-1] == "outcome: cancelled (error: client_disconnected)"


# --- fastapi_app.py and aiohttp_app.py ------------------------------------------------------

Serve = Callable[[Any], ServerThread | AiohttpServerThread]

APPS = [
    pytest.param("fastapi_app", lambda app: ServerThread(app, graceful_timeout=0.5), id="fastapi"),
    pytest.param("aiohttp_app", AiohttpServerThread, id="aiohttp"),
]


@pytest.mark.parametrize(("name", "server"), APPS)
def test_framework_example_serves_the_chat_endpoint_beside_its_own_route(
    simulator: ServerThread, records: SimRecords, name: str, server: Serve
) -> None:
    model = "sim/stream"
    expected = records.answer(model)
    app = load_example(name).create_app(simulator.url, SIM_KEY)

    with server(app) as served, httpx.Client(base_url=served.url, timeout=CLIENT_TIMEOUT) as http:
        own = http.get("/hello")
        streamed = http.post(CHAT_PATH, json=chat_body(model, stream=True))
        whole = http.post(CHAT_PATH, json=chat_body(model, stream=False))

    assert own.json() == {"hello": "from the app's own route"}
    assert streamed.status_code == 200
    assert streamed.headers["x-gateway-stream-mode"] == "stream"
    assert check_stream(streamed.content).content == expected
    assert whole.status_code == 200
    assert whole.json()["choices"][0]["message"]["content"] == expected
    assert [r["stream"] for r in records.settled(model)] == [True, False]


@pytest.mark.parametrize("name", ["fastapi_app", "aiohttp_app"])
def test_framework_example_runs_as_a_script(name: str) -> None:
    assert "--upstream-url" in run_script(name, "--help")


def test_framework_example_without_a_key_sends_the_clients_own(
    simulator: ServerThread, records: SimRecords
) -> None:
    """Per-request mode (contract §9): no server key, so the client's bearer token goes upstream."""
    app = load_example("aiohttp_app").create_app(simulator.url, None)

    with AiohttpServerThread(app) as served, httpx.Client(base_url=served.url) as http:
        refused = http.post(CHAT_PATH, json=chat_body("sim/json", stream=False))
        wrong = http.post(
            CHAT_PATH,
            json=chat_body("sim/json", stream=False),
            headers={"Authorization": "Bearer not-the-key"},
        )
        right = http.post(
            CHAT_PATH,
            json=chat_body("sim/json", stream=False),
            headers={"Authorization": f"Bearer {SIM_KEY}"},
        )

    assert refused.status_code == 401
    assert wrong.status_code == 401
    assert json.loads(wrong.content)["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200


def test_aiohttp_example_ends_open_streams_at_the_end_of_its_grace_period(
    simulator: ServerThread, records: SimRecords
) -> None:
    """Stopping the server runs the example's shutdown hook: the error event after the grace."""
    example: Any = load_example("aiohttp_app")  # a module of our own; its globals are set below
    example.GRACE_SECONDS = 0.3  # the server waits up to 1 s for its handlers
    app = example.create_app(simulator.url, SIM_KEY, config=StreamingConfig(heartbeat_interval=0.1))
    served = AiohttpServerThread(app).start()
    heartbeat_seen = threading.Event()
    received: list[bytes] = []

    def client() -> None:
        with (
            httpx.Client(base_url=served.url, timeout=CLIENT_TIMEOUT) as http,
            http.stream("POST", CHAT_PATH, json=chat_body("sim/json:delay=3000", stream=True)) as r,
        ):
            for data in r.iter_raw():
                received.append(data)
                if b": keep-alive" in data:
                    heartbeat_seen.set()

    reading = threading.Thread(target=client)
    reading.start()
    try:
        assert heartbeat_seen.wait(CLIENT_TIMEOUT)
    finally:
        served.stop()
        reading.join(CLIENT_TIMEOUT)

    report = check_stream(b"".join(received))
    assert report.error is not None
    assert report.error["code"] == "server_shutting_down"
    assert [r["closed_early"] for r in records.settled("sim/json:delay=3000")] == [True]


# --- docs/embedding.md ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", sorted(set(events.__all__) - {"Input", "Action"}), ids=lambda name: name
)
def test_embedding_guide_describes_every_session_input_and_action(name: str) -> None:
    rows = [
        line
        for line in (DOCS / "embedding.md").read_text().splitlines()
        if line.startswith(f"| `{name}(")
    ]
    assert len(rows) == 1, f"no table row for {name}"


def test_embedding_guide_links_only_to_examples_that_exist() -> None:
    linked = re.findall(r"\]\((examples/[^)]*)\)", (DOCS / "embedding.md").read_text())
    assert sorted(set(linked)) == [
        "examples/",
        "examples/aiohttp_app.py",
        "examples/fastapi_app.py",
        "examples/plain_engine.py",
    ]
    assert all((DOCS / link).exists() for link in linked)
