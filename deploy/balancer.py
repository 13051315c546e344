"""A small TCP balancer for the compose cluster: one published port in front of several HTTP servers,
each connection to the next one whose /readyz said 200 (no registry here for an nginx or HAProxy image)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys

log = logging.getLogger("balancer")
CHECK_EVERY_S = 1.0


class Backends:
    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.addresses = addresses
        self.ready: list[tuple[str, int]] = []
        self.turn = itertools.count()

    def next(self) -> tuple[str, int] | None:
        ready = self.ready or self.addresses  # none ready yet: let a backend answer its own 503
        return ready[next(self.turn) % len(ready)]

    async def check(self) -> None:
        """Keep `ready` to the backends whose /readyz answers 200, and say when that changes."""
        while True:
            answers = await asyncio.gather(*map(_ready, self.addresses))
            found = [a for a, ok in zip(self.addresses, answers, strict=True) if ok]
            if found != self.ready:
                log.warning("ready backends: %s", ", ".join(f"{h}:{p}" for h, p in found) or "none")
            self.ready = found
            await asyncio.sleep(CHECK_EVERY_S)


async def _ready(address: tuple[str, int]) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: balancer\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 2.0)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def serve(port: int, backends: Backends) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        address = backends.next()
        try:
            assert address is not None
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 2.0)
        except (OSError, TimeoutError):
            client_writer.close()  # the client sees a dropped connection and retries, as with any proxy
            return
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))

    server = await asyncio.start_server(handle, "0.0.0.0", port)
    checks = asyncio.create_task(backends.check())
    async with server:
        await server.serve_forever()
    checks.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.balancer", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("backends", nargs="+", help="host:port of each HTTP server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s balancer: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as PID 1 nothing else would stop it
    addresses = [(b.rsplit(":", 1)[0], int(b.rsplit(":", 1)[1])) for b in args.backends]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, Backends(addresses)))


if __name__ == "__main__":
    main()
