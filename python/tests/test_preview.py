"""Port previews against a real daemon: a server in the sandbox answers
through the signed link, which dies with unexpose."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import arbor
from arbor import Image
from arbor.aio import AsyncClient


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_expose(base: Image) -> None:
    op = base.run(
        shell="mkdir /www && echo hi-py > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www",
        keep_stdin=True,
    )
    p = op.expose(8080, ttl=120)
    assert p.port == 8080 and p.url.endswith(p.path) and f"/preview/{op.id}/8080/" in p.path
    deadline = time.monotonic() + 60
    code, body = _get(p.url + "index.html")
    while code == 502 and time.monotonic() < deadline:  # httpd starts after the spawn
        time.sleep(0.1)
        code, body = _get(p.url + "index.html")
    assert (code, body) == (200, "hi-py\n")
    assert [x.port for x in op.previews()] == [8080]
    op.unexpose(8080)
    assert _get(p.url + "index.html")[0] == 403
    assert isinstance(p, arbor.Preview)
    op.cancel()


def test_expose_async(daemon: Any, base: Image) -> None:
    from conftest import RUNTIME

    async def main() -> None:
        async with AsyncClient(url=daemon.url, token=daemon.token, runtime=RUNTIME) as c:
            img = await c.images.use(base.uuid)
            op = await img.run(shell="cat", keep_stdin=True)
            p = await op.expose(9000, ttl=60)
            assert p.port == 9000 and p.url
            assert [x.port for x in await op.previews()] == [9000]
            await op.unexpose(9000)
            await op.cancel()

    asyncio.run(main())
