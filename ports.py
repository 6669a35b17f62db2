"""Local TCP ports: whether one is taken, and free ones for a private stack.

``stack.py`` waits on :func:`port_open` for its services; the tests and benchmarks that
start a stack of their own take its ports from :func:`free_port`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on this local port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


# Ports a private stack (a test's, a benchmark's) takes: below the kernel's ephemeral
# range, where no listener on port 0 and no outgoing connection lands.
PRIVATE_PORTS_FROM = 20000
_handed_out: set[int] = set()


def free_port() -> int:
    """A local TCP port nobody listens on, for a private stack (tests, benchmarks).

    A port found by binding port 0 and letting it go can be taken by anyone binding port 0
    before our server binds it. These come from below the kernel's ephemeral range
    instead, from this process's own slice of it when pytest-xdist runs several processes
    (``PYTEST_XDIST_WORKER``), starting at a place of its own in the slice (children share
    their parent's slice), and each only once per process.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (ephemeral - PRIVATE_PORTS_FROM) // count
    if size < 1:  # an unusual ephemeral range: take what the kernel gives
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    low = PRIVATE_PORTS_FROM + index * size
    start = os.getpid() * 7919 % size
    for i in range(size):
        port = low + (start + i) % size
        if port in _handed_out:
            continue
        _handed_out.add(port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free local port left in {low}-{low + size - 1}")
