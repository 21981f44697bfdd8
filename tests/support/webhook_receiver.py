"""A local webhook endpoint on the test's event loop, for tests of what gets sent."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Receiver:
    """Answers with the queued statuses, then 204; records every request."""

    secret: str
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 204)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The body of every request, its signature checked."""
        out = []
        for headers, body in self.requests:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Prompt-Worker-Signature"], expected)
            out.append(json.loads(body))
        return out


@contextlib.asynccontextmanager
async def receiving(secret: str) -> AsyncIterator[Receiver]:
    """A Receiver listening on 127.0.0.1 at `receiver.url` until the block ends."""
    receiver = Receiver(secret)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver.url = str(server.make_url("/hook"))
    try:
        yield receiver
    finally:
        await server.close()
