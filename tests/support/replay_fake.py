"""The fake Anthropic API answering replay and judge requests from what they hold, so a
replay gate runs through the real SDK with answers that depend on the prompt replayed.

    async with ReplayFake(marker="billing") as fake: ...

Scripted replies (`fake.script(...)`) are used first, as in FakeAnthropic. After that a
judge request (its system text is the judge's) gets a verdict for the answers that carry
`marker` (A when only answer A does, B when only B does, tie otherwise), and any other
request is taken for a replay: the answer carries the marker when the system prompt
replayed under does (case-insensitive). `judge_text` replaces the judge's reply when set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from optimizer.replay.requests import JUDGE_SYSTEM
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply

GOOD_ANSWER = "I checked your invoice: the duplicate charge of 20 EUR is refunded by Friday."
PLAIN_ANSWER = "Please contact your bank about charges."


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, list):
        return "".join(block.get("text", "") for block in system)
    return str(system or "")


def is_judge(request: RecordedRequest) -> bool:
    return system_text(request.body) == JUDGE_SYSTEM


def block(text: str, tag: str) -> str:
    found = re.search(rf"<{tag}\b[^>]*>\n(.*?)\n</{tag}>", text, re.S)
    return found.group(1) if found else ""


def judge_user(request: RecordedRequest) -> str:
    return str(request.body["messages"][-1]["content"])


class ReplayFake(FakeAnthropic):
    def __init__(self, *args: Any, marker: str = "billing", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker.lower()
        self.judge_text: Callable[[RecordedRequest], str] | None = None

    def _next(self, model: str | None) -> Reply:
        reply = super()._next(model)
        if reply.status != 200 or reply.text is not None:
            return reply  # scripted
        request = self.requests[-1]
        if is_judge(request):
            text = self.judge_text(request) if self.judge_text else self.verdict(request)
            return Reply(text=text)
        good = self.marker in system_text(request.body).lower()
        return Reply(text=GOOD_ANSWER if good else PLAIN_ANSWER)

    def verdict(self, request: RecordedRequest) -> str:
        user = judge_user(request)
        a, b = GOOD_ANSWER in block(user, "answer_a"), GOOD_ANSWER in block(user, "answer_b")
        choice = "A" if a and not b else "B" if b and not a else "tie"
        return f"<reason>Answer {choice} quotes the invoice.</reason>\n<verdict>{choice}</verdict>"

    def replays(self) -> list[RecordedRequest]:
        return [r for r in self.requests if not is_judge(r) and r.body.get("messages")]

    def judgements(self) -> list[RecordedRequest]:
        return [r for r in self.requests if is_judge(r)]
