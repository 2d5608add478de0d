"""A small asyncio TCP fault proxy (Toxiproxy is not obtainable here): latency, blackhole, reset, bandwidth.

It listens on a free 127.0.0.1 port, forwards to one loopback target, and runs its event loop in a daemon
thread so synchronous tests can flip faults while traffic flows. Faults apply to live connections at once.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class Faults:
    """The knobs; every field may be changed at any time from any thread."""

    latency_s: float = 0.0  # added before each forwarded chunk, both directions
    blackhole: bool = False  # keep connections open, forward nothing (a hung peer)
    reset_after_bytes: int | None = None  # RST a connection once this many bytes went upstream->client
    bandwidth_bps: int | None = None  # throttle each direction to this many bytes per second
    refuse: bool = False  # new connections are reset immediately (a peer that is down)


class FaultProxy:
    """TCP proxy to 127.0.0.1:`target_port` with injectable faults; use as a context manager."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy only targets loopback")
        self.target = (target_host, target_port)
        self.faults = Faults()
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        """Listen and serve from the background thread."""
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then stop the loop."""
        if self._server is not None:
            self.reset_all()

            async def close() -> None:
                assert self._server is not None
                self._server.close()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def reset_all(self) -> None:
        """Abort every open connection with a TCP RST (both sides see 'connection reset')."""

        async def abort() -> None:
            for writer in list(self._writers):
                _rst(writer)

        asyncio.run_coroutine_threadsafe(abort(), self._loop).result(timeout=10)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.faults.refuse:
            _rst(client_w)
            return
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.target), timeout=5)
        except (OSError, TimeoutError):
            _rst(client_w)
            return
        self._writers.update((client_w, up_w))
        budget = [self.faults.reset_after_bytes]
        try:
            await asyncio.gather(
                self._pipe(client_r, up_w, client_w, None),
                self._pipe(up_r, client_w, up_w, budget),
            )
        finally:
            self._writers.difference_update((client_w, up_w))
            for w in (client_w, up_w):
                w.close()

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        budget: list[int | None] | None,
    ) -> None:
        """Copy one direction, applying the faults chunk by chunk."""
        try:
            while True:
                chunk = await src.read(16384)
                if not chunk:
                    break
                f = self.faults
                while f.blackhole:  # hold the bytes (a frozen peer); they flow again once lifted
                    await asyncio.sleep(0.05)
                if f.latency_s:
                    await asyncio.sleep(f.latency_s)
                if f.bandwidth_bps:
                    await asyncio.sleep(len(chunk) / f.bandwidth_bps)
                if budget is not None and budget[0] is not None:
                    if len(chunk) >= budget[0]:
                        dst.write(chunk[: budget[0]])
                        await dst.drain()
                        _rst(dst)
                        _rst(other)
                        return
                    budget[0] -= len(chunk)
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            _rst(dst)
            _rst(other)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0 so the peer gets a RST rather than a clean FIN."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()
