"""The structured transcript a logged conversation may carry (`messages`), typed, and the
check `log()` runs on it. The service's rules (docs/api.md#logging-conversations): a list of
at most 500 {"role", "content"} objects, role one of ROLES, content a string or a list of
Anthropic-style text blocks, nothing else in a message. A record breaking them would be
refused by the service, so log() drops it at once and says why, as for a missing unit_id.

What only the service checks (the 100,000 characters of content in all, NUL characters) is
left to it: it then refuses that row alone, and the client drops it (stats.dropped_rejected).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

Role = Literal["user", "assistant", "system", "tool"]
ROLES: tuple[Role, ...] = ("user", "assistant", "system", "tool")
MAX_MESSAGES = 500
# Keys a text block may carry beside "type" and "text" (Anthropic's): the service ignores them.
BLOCK_METADATA = ("cache_control", "citations")


class TextBlock(TypedDict):
    """An Anthropic-style text block; the service joins a message's blocks into one string
    (a blank line between them)."""

    type: Literal["text"]
    text: str
    cache_control: NotRequired[Any]
    citations: NotRequired[Any]


class Message(TypedDict):
    """One turn: `{"role": "user", "content": "Where is my refund?"}`."""

    role: Role
    content: str | list[TextBlock]


def messages_problem(messages: object) -> str | None:
    """Why the service would refuse `messages`, naming the item ("messages[3].role must be
    one of ..."); None when the shape is right. Never quotes a content."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        return f"messages must be a list of {{role, content}}; got {type(messages).__name__}"
    if len(messages) > MAX_MESSAGES:
        return f"messages holds {len(messages):,} items; at most {MAX_MESSAGES}"
    for at, message in enumerate(messages):
        problem = _message_problem(message)
        if problem is not None:
            return f"messages[{at}]{problem}"
    return None


def _message_problem(message: object) -> str | None:
    if not isinstance(message, Mapping):
        return f" must be an object with role and content; got {type(message).__name__}"
    extra = sorted(str(key) for key in message if key not in ("role", "content"))
    if extra:
        return f" has the unknown key {extra[0]!r}; allowed: role, content"
    role = message.get("role")
    if role not in ROLES:
        shown = repr(role) if isinstance(role, str) and len(role) <= 40 else type(role).__name__
        return f".role must be one of {', '.join(ROLES)}; got {shown}"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, Sequence) or isinstance(content, bytes):
        return f".content must be a string or a list of text blocks; got {type(content).__name__}"
    for at, block in enumerate(content):
        if not _is_text_block(block):
            return (
                f".content[{at}] must be a text block "
                '{"type": "text", "text": "..."}: send other content as a string'
            )
    return None


def _is_text_block(block: object) -> bool:
    return (
        isinstance(block, Mapping)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
        and all(key in ("type", "text", *BLOCK_METADATA) for key in block)
    )
