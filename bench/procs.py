"""
The processes of a benchmark run: starting them pinned, and reading their CPU and memory.

Rules:

1. The process under test runs on core ``TARGET_CORE``; the load generator and the fake
   upstream on ``LOAD_CORE``. Pinning is done at spawn (``taskset -c``), so every thread and
   child a target starts later inherits it (``sched_setaffinity`` on a PID pins one thread).
2. Memory is summed over the whole process tree (Hypercorn or uvicorn may start children):
   ``VmRSS`` from ``/proc/PID/status`` and ``Pss`` from ``/proc/PID/smaps_rollup``.
3. "Other processes' CPU" is every process outside our own trees, from ``/proc/*/stat``.
4. Everything waits with a deadline; a target that does not come up is reported, not waited for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

__all__ = [
    "LOAD_CORE",
    "TARGET_CORE",
    "Target",
    "cpu_seconds",
    "cpu_snapshot",
    "free_port",
    "memory_kib",
    "other_load",
    "process_tree",
    "wait_quiet",
]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TARGET_CORE = 0
LOAD_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 90.0


def cores() -> int:
    """The machine's cores (not this process's affinity: the run pins itself first)."""
    return os.cpu_count() or 1


#: Tests turn pinning off, so that they never compete with a benchmark for its cores.
PINNING = True


def pinned(argv: Sequence[str], core: int) -> list[str]:
    """*argv* run on one core, when the machine has more than one and taskset exists."""
    if not PINNING or cores() < 2 or not Path("/usr/bin/taskset").exists():
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """*pid* and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """
    CPU time of these processes, every thread, in nanosecond resolution.

    ``/proc/PID/task/TID/schedstat`` counts time on the CPU in ns; ``/proc/PID/stat`` only in
    clock ticks (10 ms), too coarse for a few hundred short requests.
    """
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total / 1e9


def memory_kib(pids: Iterable[int]) -> dict[str, int]:
    """RSS and PSS summed over *pids*, in KiB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return {"rss_kib": rss, "pss_kib": pss}


def _system_busy_seconds() -> float:
    """CPU time every process has used since boot (``/proc/stat``; exited ones included)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    # irq and softirq time is left out: most of it is the loopback traffic of the benchmark
    # itself, which the kernel also counts in our own processes' run time.
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + steal) / CLK_TCK


def cpu_snapshot(ours: set[int]) -> tuple[float, float]:
    """(all CPU used since boot, CPU used by *ours*), for :func:`other_load`."""
    return _system_busy_seconds(), cpu_seconds(ours)


def other_load(before: tuple[float, float], after: tuple[float, float], elapsed: float) -> float:
    """CPU used by processes outside ours between two snapshots, in cores (1.0 = one core)."""
    other = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(other, 0.0) / elapsed, 3) if elapsed > 0 else 0.0


def wait_quiet(
    ours: set[int], *, threshold: float = 0.15, window: float = 0.5, max_wait: float = 10.0
) -> dict[str, float]:
    """
    Wait until other processes use less than *threshold* of one core over *window* seconds.

    Returns how long it waited and the last load seen (in cores).
    """
    started = time.monotonic()
    load = 0.0
    while True:
        before = cpu_snapshot(ours)
        time.sleep(window)
        load = other_load(before, cpu_snapshot(ours), window)
        if load < threshold or time.monotonic() - started > max_wait:
            break
    return {"waited_s": round(time.monotonic() - started, 2), "other_load": load}


@attrs.define
class Target:
    """A process under test (or the upstream itself, ``argv`` empty)."""

    name: str
    argv: list[str]
    port: int
    health_path: str | None = None
    env: dict[str, str] = attrs.Factory(dict)
    cwd: Path = ROOT
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    start_seconds: float | None = None
    failure: str | None = None

    @property
    def external(self) -> bool:
        return not self.argv

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Start pinned to the target core; False (and :attr:`failure`) if it never answers."""
        if self.external:
            return True
        started = time.monotonic()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            pinned(self.argv, TARGET_CORE),
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                self.failure = f"exited with {self.proc.returncode} while starting"
                return False
            if self._answers():
                self.start_seconds = round(time.monotonic() - started, 2)
                return True
            time.sleep(0.1)
        self.failure = f"not answering after {timeout:g} s"
        self.stop()
        return False

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        if self.health_path is None:
            return True
        try:
            url = f"http://127.0.0.1:{self.port}{self.health_path}"
            with urllib.request.urlopen(url, timeout=2) as reply:  # loopback only
                return bool(reply.status == 200)
        except OSError:
            return False

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return process_tree(self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        tree = process_tree(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        for pid in tree[1:]:  # children left behind by a killed parent
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
