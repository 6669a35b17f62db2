"""Runs an ASGI app under a real uvicorn server on 127.0.0.1 in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn
from starlette.types import ASGIApp


@contextlib.contextmanager
def serve(app: ASGIApp, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serves ``app`` (lifespan included) on a free port; yields its base URL.

    The app gets its own event loop in the server thread: reach its state over HTTP, not
    by touching its objects from the test's loop.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(server, thread, base_url, startup_timeout)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if thread.is_alive():
            raise RuntimeError(f"server at {base_url} did not stop")


def _wait_until_answering(
    server: uvicorn.Server, thread: threading.Thread, base_url: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"server at {base_url} exited during startup")
        if server.started:
            try:
                httpx.get(f"{base_url}/", timeout=1.0)
                return
            except httpx.TransportError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"server at {base_url} did not answer within {timeout} s")
