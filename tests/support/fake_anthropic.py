"""A fake Anthropic Messages API: a local aiohttp server the real `anthropic` SDK talks to.

    async with FakeAnthropic(text="hello") as fake:
        client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=fake.base_url)
        ...
        fake.requests[0].body["model"]

It listens on 127.0.0.1 on a free port and answers POST /v1/messages in the real wire
formats: a JSON message, or with "stream": true a text/event-stream with the real event
sequence (message_start, content_block_start, ping, content_block_delta..., content_block_stop,
message_delta, message_stop). Each answer comes from the queue filled by `script(...)`,
else from the per-model answer set with `always(model, ...)`, else it is a success with the
text for that model (`texts_by_model`) or the default text. Errors have the API's JSON
error shape and headers (retry-after, request-id).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
DEFAULT_USAGE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
# How a streamed answer ends: normally, cut off cleanly, with a garbled event, with the
# connection dropped, or with an error event (as the API does when overloaded mid-stream).
STREAM_ENDS = ("complete", "truncated", "malformed", "disconnect", "error_event")


@dataclass(frozen=True)
class Reply:
    status: int = 200
    error_type: str | None = None
    error_message: str = "scripted error from the fake Anthropic API"
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None  # None: the text for the model asked for
    model: str | None = None  # the reply's model field; None: the model asked for
    usage: Mapping[str, int] | None = None
    chunk_delay: float = 0.0  # seconds before each text chunk of a stream
    stream_end: str = "complete"
    stop_reason: str = "end_turn"

    @classmethod
    def error(
        cls, status: int, *, retry_after: str | None = None, message: str | None = None
    ) -> Reply:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        return cls(
            status=status,
            error_type=ERROR_TYPES.get(status, "api_error"),
            error_message=message or f"scripted HTTP {status}",
            headers=headers,
        )


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


class FakeAnthropic:
    def __init__(
        self,
        text: str = "Hello from the fake Anthropic API.",
        *,
        texts_by_model: Mapping[str, str] | None = None,
        usage: Mapping[str, int] | None = None,
        chunk_size: int = 16,
    ) -> None:
        self.text = text
        self.texts_by_model = dict(texts_by_model or {})
        self.usage = {**DEFAULT_USAGE, **(usage or {})}
        self.chunk_size = chunk_size
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._by_model: dict[str, Reply] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order."""
        self._queue.extend(replies)

    def always(self, model: str, reply: Reply) -> None:
        """Answer every request for `model` with this once the queue is empty."""
        self._by_model[model] = reply

    async def __aenter__(self) -> FakeAnthropic:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _next(self, model: str | None) -> Reply:
        if self._queue:
            return self._queue.popleft()
        return self._by_model.get(model or "", Reply())

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error_response(Reply.error(400, message="body is not JSON"), 0)
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.path, headers, body))
        number = len(self.requests)
        reply = self._next(body.get("model"))
        if reply.status != 200:
            return _error_response(reply, number)
        text = (
            reply.text
            if reply.text is not None
            else self.texts_by_model.get(body.get("model", ""), self.text)
        )
        message = {
            "id": f"msg_fake_{number:04d}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or body.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**self.usage, **(reply.usage or {})},
        }
        if body.get("stream") is True:
            return await self._stream(request, reply, message, text, number)
        final = {
            **message,
            "content": [{"type": "text", "text": text}],
            "stop_reason": reply.stop_reason,
        }
        return web.json_response(final, headers={"request-id": f"req_fake_{number:04d}"})

    async def _stream(
        self, request: web.Request, reply: Reply, message: dict[str, Any], text: str, number: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "request-id": f"req_fake_{number:04d}",
            }
        )
        await response.prepare(request)
        usage = message["usage"]
        start = {**message, "usage": {**usage, "output_tokens": 1}}
        await _event(response, "message_start", {"type": "message_start", "message": start})
        await _event(
            response,
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await _event(response, "ping", {"type": "ping"})
        chunks = [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]
        cut = len(chunks) // 2 if reply.stream_end != "complete" else len(chunks)
        for chunk in chunks[:cut]:
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            await _event(
                response,
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": chunk},
                },
            )
        if reply.stream_end == "complete":
            await _finish(response, reply, usage)
        else:
            await _break(request, response, reply)
        return response


async def _event(response: web.StreamResponse, name: str, data: dict[str, Any] | str) -> None:
    payload = data if isinstance(data, str) else json.dumps(data)
    await response.write(f"event: {name}\ndata: {payload}\n\n".encode())


async def _finish(response: web.StreamResponse, reply: Reply, usage: Mapping[str, int]) -> None:
    await _event(response, "content_block_stop", {"type": "content_block_stop", "index": 0})
    await _event(
        response,
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    await _event(response, "message_stop", {"type": "message_stop"})
    await response.write_eof()


async def _break(request: web.Request, response: web.StreamResponse, reply: Reply) -> None:
    if reply.stream_end == "malformed":
        await _event(response, "content_block_delta", '{"type": "content_block_delta", "ind')
    elif reply.stream_end == "error_event":
        await _event(
            response,
            "error",
            {
                "type": "error",
                "error": {
                    "type": reply.error_type or "overloaded_error",
                    "message": reply.error_message,
                },
            },
        )
    elif reply.stream_end == "disconnect":
        if request.transport is not None:
            request.transport.close()
        return
    elif reply.stream_end != "truncated":
        raise ValueError(f"unknown stream_end {reply.stream_end!r}; one of {STREAM_ENDS}")
    await response.write_eof()


def _error_response(reply: Reply, number: int) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": reply.error_type or "api_error", "message": reply.error_message},
        "request_id": f"req_fake_{number:04d}",
    }
    return web.json_response(
        body, status=reply.status, headers={"request-id": f"req_fake_{number:04d}", **reply.headers}
    )
