"""
Load and soak: hundreds of streams waiting in fallback, clients coming and going, and nothing
growing from one round to the next (issue 6; bounded, loopback only).

The simulator (``straico-gateway simulate``) and the gateway run as their own processes, so the
gateway's memory and descriptors are its own. The gateway is served by a small harness
(:data:`HARNESS`) around :func:`server.run.serve_gateway`, the function ``serve`` runs; the
harness adds only one thing: on ``SIGUSR1`` it prints how many asyncio tasks its loop has.

One round:

1. ``waiting`` streaming clients ask a model whose whole answer comes after ``gap`` (fallback:
   heartbeats keep them alive meanwhile), all at once;
2. during the gap, ``churn`` more clients come and go: half finish quick requests (a relayed
   stream, a replayed one, a rejected stream flag, a non-streaming answer), half leave after
   their first heartbeat;
3. every completed stream must pass the SSE checker and carry the simulator's answer, every
   waiting stream got heartbeats, and every client that left had its upstream call closed by
   the gateway (the simulator's ``closed_early``). The one exception, bounded by
   :data:`DROPPED_FRACTION`: a client whose upstream connection broke, which must then get
   §7's answer for it (``upstream_disconnected``).

After each round, once the gateway is idle: its asyncio tasks are back to their number before
any load, its descriptors other than pooled upstream connections too, and the pool holds no
more connections than the round had clients. From the second round on the resident memory
does not grow beyond a small tolerance (CPython keeps freed memory, so round 1 is the warm-up).
How many idle keep-alive connections the pool holds at a given moment depends on timing, not
on leaks, so the pool is checked another way: once the simulator has closed every idle
connection (its keep-alive timeout), none may still be established.

``make test`` runs the short form (500 waiting streams, 2 rounds); ``make soak`` the long one
(``@pytest.mark.soak``: the same load for 8 rounds with a longer wait, about two minutes).
Bigger loads saturate a two-CPU machine (the upstream pool's bookkeeping grows with the
square of its connections) until the simulator itself drops connections, which tests the
machine rather than the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import httpx
import pytest

from tests.support.sse_check import check_stream

SIM_KEY = "sim-key"
SCRIPT = Path(sys.executable).parent / "straico-gateway"
ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 20.0
SETTLE_SECONDS = 15.0
POLL_SECONDS = 0.1
HEARTBEAT_SECONDS = 0.5
#: Memory may move a little between equal rounds (allocator, caches); a leak grows with load.
RSS_TOLERANCE = 1.10
RSS_SLACK_KIB = 8 * 1024
#: Hypercorn closes an idle keep-alive connection after 5 s (the simulator's server).
UPSTREAM_KEEP_ALIVE_SECONDS = 5.0
TCP_ESTABLISHED = "01"
SETTLE_MARGIN_SECONDS = 3.0
WANTED_OPEN_FILES = 16_384
LEAVER_GAP_MS = 120_000
#: At most this share of the clients may see their upstream connection break. On a loaded
#: two-CPU machine a few loopback connections to the simulator are reset now and then; the
#: gateway then answers as §7 says (502 or an ``upstream_disconnected`` event), and that
#: answer is checked; more than a trace of them would be a fault of the gateway's.
DROPPED_FRACTION = 0.01

HARNESS = """
import asyncio, json, signal, sys
from server.logging import configure_logging
from server.run import loop_factory, raise_open_files_limit, serve_gateway
from server.settings import Settings

settings = Settings.resolve(json.loads(sys.argv[1]), env={}, file=None)
configure_logging("json", settings.log_level)
raise_open_files_limit()

def report():
    print(json.dumps({"tasks": len(asyncio.all_tasks())}), flush=True)

async def ready(url):
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
    print(json.dumps({"url": url}), flush=True)

with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
    runner.run(serve_gateway(settings, on_ready=ready))
"""


@attrs.frozen
class Load:
    waiting: int
    churn: int
    gap_ms: int
    rounds: int


SHORT = Load(waiting=500, churn=100, gap_ms=2000, rounds=2)
LONG = Load(waiting=500, churn=100, gap_ms=3000, rounds=8)


# --- processes ------------------------------------------------------------------------------


class Process:
    """A child process whose stdout lines are read by a thread (bounded waits, killed at end)."""

    def __init__(self, args: list[str]) -> None:
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.strip())

    def next_line(self, contains: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                assert self.popen.poll() is None, f"exited with {self.popen.returncode}"
                continue
            if contains in line:
                return line
        raise AssertionError(f"no line with {contains!r} within {timeout} s")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@attrs.frozen
class Usage:
    """What the gateway process holds, read from /proc and from its harness."""

    rss_kib: int
    fds: int
    upstream_connections: int
    tasks: int

    @property
    def other_fds(self) -> int:
        return self.fds - self.upstream_connections


class Gateway:
    def __init__(self, simulator_url: str) -> None:
        self.simulator_port = int(simulator_url.rsplit(":", 1)[1])
        settings = {
            "port": 0,
            "upstream_url": simulator_url,
            "upstream_key": SIM_KEY,
            "heartbeat_interval": HEARTBEAT_SECONDS,
            "log_level": "warning",
            "shutdown_grace": 1,
        }
        self.process = Process([sys.executable, "-c", HARNESS, json.dumps(settings)])
        try:
            self.url = json.loads(self.process.next_line('"url"', STARTUP_SECONDS))["url"]
        except BaseException:
            self.process.stop()
            raise

    def tasks(self) -> int:
        os.kill(self.process.pid, signal.SIGUSR1)
        count: int = json.loads(self.process.next_line('"tasks"', SETTLE_SECONDS))["tasks"]
        return count

    def _socket_inodes(self) -> set[str]:
        inodes = set()
        for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
            with contextlib.suppress(FileNotFoundError):  # closed since it was listed
                target = os.readlink(f"/proc/{self.process.pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        return inodes

    def upstream_connections(self, *, established_only: bool = False) -> int:
        """The gateway's TCP sockets to the simulator's port (its pooled upstream connections)."""
        inodes = self._socket_inodes()
        count = 0
        for line in Path(f"/proc/{self.process.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port != self.simulator_port or fields[9] not in inodes:
                continue
            if established_only and fields[3] != TCP_ESTABLISHED:
                continue
            count += 1
        return count

    def usage(self) -> Usage:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return Usage(
            rss_kib=rss,
            fds=len(os.listdir(f"/proc/{self.process.pid}/fd")),
            upstream_connections=self.upstream_connections(),
            tasks=self.tasks(),
        )


@pytest.fixture(name="open_files", scope="module")
def _open_files() -> None:
    """Hundreds of client sockets in this process: raise the soft limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture(name="processes")
def _processes(open_files: None) -> Iterator[tuple[str, Gateway]]:
    simulator = Process([str(SCRIPT), "simulate", "--port", "0", "--key", SIM_KEY])
    gateway: Gateway | None = None
    try:
        line = simulator.next_line("http://", STARTUP_SECONDS)
        simulator_url = line[line.index("http://") :].split()[0]
        gateway = Gateway(simulator_url)
        yield simulator_url, gateway
    finally:
        if gateway is not None:
            gateway.process.stop()
        simulator.stop()


# --- clients --------------------------------------------------------------------------------

Kind = Literal["waiting", "quick", "leaver"]


@attrs.frozen
class Outcome:
    kind: Kind
    model: str
    stream: bool
    body: bytes
    status: int


QUICK = [
    ("sim/stream:words=15", True),
    ("sim/json:words=15", True),
    ("sim/reject:words=15", True),
    ("sim/json:words=15", False),
]


def _body(model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "soak"}]}
    if stream:
        body["stream"] = True
    return body


async def _complete(client: httpx.AsyncClient, kind: Kind, model: str, stream: bool) -> Outcome:
    response = await client.post("/v1/chat/completions", json=_body(model, stream))
    return Outcome(kind, model, stream, response.content, response.status_code)


async def _leave_after_heartbeat(client: httpx.AsyncClient, model: str) -> Outcome:
    received = b""
    async with client.stream("POST", "/v1/chat/completions", json=_body(model, True)) as response:
        if response.status_code != 200:
            return Outcome("leaver", model, True, await response.aread(), response.status_code)
        async for data in response.aiter_raw():
            received += data
            if b": keep-alive" in received:
                break
    return Outcome("leaver", model, True, received, 200)


async def _round(url: str, load: Load, waiting_model: str, leaver_model: str) -> list[Outcome]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, connect=30.0)
    # Connection: close, so the server ends each connection with its answer (none lingers idle)
    headers = {"Connection": "close"}
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=timeout, headers=headers
    ) as client:
        tasks = [
            asyncio.create_task(_complete(client, "waiting", waiting_model, True))
            for _ in range(load.waiting)
        ]
        spacing = load.gap_ms / 1000 * 0.8 / max(load.churn, 1)
        for index in range(load.churn):
            await asyncio.sleep(spacing)
            if index % 2:
                tasks.append(asyncio.create_task(_leave_after_heartbeat(client, leaver_model)))
            else:
                model, stream = QUICK[(index // 2) % len(QUICK)]
                tasks.append(asyncio.create_task(_complete(client, "quick", model, stream)))
        return list(await asyncio.gather(*tasks))


def _reference(url: str, model: str) -> str:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json=_body(model, False),
        headers={"Connection": "close"},
        timeout=30,
    )
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def _upstream_dropped(outcome: Outcome) -> bool:
    """The §7 answer to an upstream connection that broke: a 502, or one error event."""
    if outcome.status == 502:
        return bool(json.loads(outcome.body)["error"]["code"] == "upstream_disconnected")
    if outcome.status != 200 or not outcome.stream:
        return False
    report = check_stream(outcome.body, partial=outcome.kind == "leaver")
    return report.error is not None and report.error["code"] == "upstream_disconnected"


def _check_outcomes(outcomes: list[Outcome], references: dict[str, str]) -> int:
    """Check every client's answer; return how many saw their upstream connection break."""
    dropped = [outcome for outcome in outcomes if _upstream_dropped(outcome)]
    assert len(dropped) <= len(outcomes) * DROPPED_FRACTION, dropped[:3]
    for outcome in outcomes:
        if outcome in dropped:
            continue
        assert outcome.status == 200, outcome.body[:300]
        if outcome.kind == "leaver":
            report = check_stream(outcome.body, partial=True)
            assert report.comments >= 1 and report.content == ""
            continue
        if not outcome.stream:
            answer = json.loads(outcome.body)["choices"][0]["message"]["content"]
            assert answer == references[outcome.model]
            continue
        report = check_stream(outcome.body)
        assert (report.done, report.content) == (True, references[outcome.model]), report.error
        if outcome.kind == "waiting":
            assert report.comments >= 1, "a waiting stream got no heartbeat"
    return len(dropped)


def _records(simulator_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{simulator_url}/_sim/requests", params={"wait": 20}, timeout=40)
    records: list[dict[str, Any]] = response.json()
    return records


def _settle(gateway: Gateway, tasks_idle: int) -> Usage:
    """The gateway's usage once its task count is back to idle (or after a bounded wait)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    usage = gateway.usage()
    while usage.tasks != tasks_idle and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        usage = gateway.usage()
    return usage


def run_soak(simulator_url: str, gateway: Gateway, load: Load) -> None:
    waiting_model = f"sim/json:gap={load.gap_ms}:words=20"
    # never answered within a round: only the gateway closing the call ends it early
    leaver_model = f"sim/json:gap={LEAVER_GAP_MS}:words=13"
    references = {
        model: _reference(gateway.url, model)
        for model in {waiting_model, *(model for model, _ in QUICK)}
    }
    idle = _settle(gateway, gateway.tasks())
    peak = load.waiting + load.churn
    usages: list[Usage] = []
    for _ in range(load.rounds):
        httpx.delete(f"{simulator_url}/_sim/requests")
        outcomes = asyncio.run(_round(gateway.url, load, waiting_model, leaver_model))
        dropped = _check_outcomes(outcomes, references)
        records = _records(simulator_url)
        left = [r for r in records if r["model"] == leaver_model]
        # a client may leave before its call reached the upstream: then there is nothing to close
        assert 0 < len(left) <= sum(1 for o in outcomes if o.kind == "leaver")
        assert [r for r in left if not r["closed_early"]] == []
        waited = [r for r in records if r["model"] == waiting_model]
        assert load.waiting - dropped <= len(waited) <= load.waiting
        assert sum(1 for r in waited if r["closed_early"]) <= dropped

        usage = _settle(gateway, idle.tasks)
        assert usage.tasks == idle.tasks, "tasks left behind after the round"
        assert usage.other_fds == idle.other_fds, "descriptors left behind after the round"
        assert usage.upstream_connections <= peak
        usages.append(usage)
        # Pooled connections are idle keep-alive ones, closed by the upstream after its
        # keep-alive timeout; one still established after it is held by a call never closed.
        # Waiting also keeps the next round off connections the upstream is closing right
        # then: reusing one of those fails a request whatever the gateway does.
        assert _wait_pool_drained(gateway) == 0

    first = usages[0]  # CPython keeps what it freed: round 1 is the warm-up
    for later in usages[1:]:
        assert later.rss_kib <= first.rss_kib * RSS_TOLERANCE + RSS_SLACK_KIB, usages


def _wait_pool_drained(gateway: Gateway) -> int:
    """Established upstream connections once the upstream's keep-alive closed the idle ones."""
    deadline = time.monotonic() + UPSTREAM_KEEP_ALIVE_SECONDS + SETTLE_MARGIN_SECONDS
    established = gateway.upstream_connections(established_only=True)
    while established and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        established = gateway.upstream_connections(established_only=True)
    return established


def test_soak_short_500_waiting_streams_with_churn_two_rounds(
    processes: tuple[str, Gateway],
) -> None:
    simulator_url, gateway = processes
    run_soak(simulator_url, gateway, SHORT)


@pytest.mark.soak
def test_soak_long_500_waiting_streams_with_more_churn_eight_rounds(
    processes: tuple[str, Gateway],
) -> None:
    simulator_url, gateway = processes
    run_soak(simulator_url, gateway, LONG)
