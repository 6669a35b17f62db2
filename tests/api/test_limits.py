"""Bodies over 64 KiB are refused, counted on the stream: a chunked body without
Content-Length is cut off as well."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from api.limits import MAX_BODY_BYTES
from tests.api.conftest import Api
from tests.api.helpers import offline_api, offline_settings


def _padded_esim(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes that is otherwise a bad eSIM (422)."""
    head, tail = b'{"iccid": "1", "carrier": "telna", "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_a_body_of_exactly_64_kib_reaches_the_route(tmp_path: Path) -> None:
    with offline_api(offline_settings(tmp_path)) as url:
        body = _padded_esim(MAX_BODY_BYTES)
        response = httpx.post(f"{url}/v1/esims", content=body, headers=Api.auth())
        assert response.status_code == 422  # validated, so not refused for its size
        response = httpx.post(f"{url}/v1/esims", content=body + b" ", headers=Api.auth())
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_chunked_body_without_length_is_cut_off(tmp_path: Path) -> None:
    with offline_api(offline_settings(tmp_path)) as url:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{url}/v1/esims", content=_chunks(200 * 1024), headers=Api.auth()
            )
    assert response.status_code == 413
    assert "content-length" not in response.request.headers
