"""A small keep-alive HTTP/1.1 load generator (asyncio streams) shared by the benchmarks.

httpx costs more CPU per request than the servers under test; on a 2-core machine that would measure the
client. This writes pre-built requests on persistent connections and reads `Content-Length` bodies back.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx


@dataclass
class Result:
    """Latencies (seconds) and status codes of one run."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        """Requests answered."""
        return len(self.latencies)

    @property
    def rps(self) -> float:
        """Answered requests per second."""
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    @property
    def non_2xx(self) -> int:
        """Answers outside 200-299."""
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    def line(self, label: str) -> str:
        """One printable summary line."""
        return (
            f"{label:28} {self.rps:8.1f} req/s  p50 {self.pct(50):7.2f} ms  p99 {self.pct(99):7.2f} ms  "
            f"mean {statistics.fmean(self.latencies) * 1000 if self.latencies else 0:6.2f} ms  "
            f"non-2xx {self.non_2xx}  n={self.count}"
        )


def build_request(path: str, body: bytes, headers: dict[str, str], host: str = "127.0.0.1") -> bytes:
    """Raw HTTP/1.1 request bytes."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in {"content-length", "host", "connection"}]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def closed_loop(port: int, requests: Sequence[bytes], *, connections: int, duration_s: float) -> Result:
    """Saturation: `connections` clients each send the next request as soon as the last is answered."""
    result = Result()
    source = itertools.cycle(requests)
    deadline = time.perf_counter() + duration_s

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(next(source))
                status = await _read_response(reader)
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


async def open_loop(
    port: int, requests: Sequence[bytes], *, rate: float, duration_s: float, connections: int = 64
) -> Result:
    """Fixed arrival rate (requests start on schedule, not when the previous one ends): honest tail latency."""
    result = Result()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    total = int(rate * duration_s)
    source = itertools.cycle(requests)
    start = time.perf_counter()

    async def one(scheduled: float, raw: bytes) -> None:
        reader, writer = await pool.get()
        try:
            writer.write(raw)
            status = await _read_response(reader)
        finally:
            pool.put_nowait((reader, writer))
        result.latencies.append(time.perf_counter() - scheduled)  # includes waiting for a free connection
        result.statuses[status] = result.statuses.get(status, 0) + 1

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, next(source))))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return result


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    cmd: list[str], env: dict[str, str], port: int, *, log: Path | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server process (output to `log` or discarded) and wait until its /livez answers."""
    out: IO[bytes] | int = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}" + (f"; see {log}" if log else ""))
