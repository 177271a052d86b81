#!/usr/bin/env python3
"""A minimal RTP relay on uvloop: the Python reference of bench/relay_bench.py.

``uvloop_relay.py PAIRS [--host 127.0.0.1] [--max-seconds S]`` binds PAIRS pairs of
UDP sockets on ephemeral ports, prints ``{"ports": [a0, b0, a1, b1, ...]}`` on one
line of stdout, and forwards every datagram that arrives on one socket of a pair
out of the other, to the address that socket has latched: each side's address is
learnt from the first packet it receives (symmetric RTP, as a media relay behind
NAT does). A packet that arrives before the other side has sent anything is
dropped. No signalling, no RTP parsing. It exits on SIGTERM or SIGINT, or after
``--max-seconds`` (a bound so that it never outlives its bench).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import resource
import signal
import sys

import uvloop

Address = tuple[str, int]


class Side(asyncio.DatagramProtocol):
    """One socket of a pair: latches its peer and forwards to the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: Address | None = None
        self.other: Side | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.peer is None:
            self.peer = addr
        other = self.other
        if other is not None and other.peer is not None and other.transport is not None:
            other.transport.sendto(data, other.peer)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for a send (the peer's port closed): nothing to do."""


def _same(side: Side) -> Side:
    """The protocol factory of an endpoint: the side made beforehand."""
    return side


def raise_nofile(sockets: int) -> None:
    """Raise the soft open-file limit to what ``sockets`` need (up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = sockets + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"{sockets} sockets need RLIMIT_NOFILE {want}, hard limit {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def serve(pairs: int, host: str, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    sides: list[Side] = []
    for _ in range(pairs):
        a, b = Side(), Side()
        a.other, b.other = b, a
        for side in (a, b):
            # uvloop's UDP transport is not an asyncio.DatagramTransport subclass, so it
            # is kept as returned rather than checked in connection_made.
            side.transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_same, side), (host, 0)
            )
            sides.append(side)
    ports = []
    for side in sides:
        assert side.transport is not None
        ports.append(side.transport.get_extra_info("sockname")[1])
    print(json.dumps({"ports": ports}), flush=True)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), max_seconds)
    for side in sides:
        if side.transport is not None:
            side.transport.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", type=int, help="socket pairs (calls)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--max-seconds", type=float, default=600, help="exit after this (600)")
    args = p.parse_args()
    raise_nofile(2 * args.pairs)
    uvloop.run(serve(args.pairs, args.host, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
