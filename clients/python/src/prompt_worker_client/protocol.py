"""The wire: conversations as JSON rows, and what each answer of the service means for the
client. Pure functions, shared by the sync and the async client."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from prompt_worker_client.assignment import unit_id_problem
from prompt_worker_client.backoff import parse_retry_after
from prompt_worker_client.messages import messages_problem

CONFIG_PATH = "/v1/config"
CONVERSATIONS_PATH = "/v1/conversations"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BATCH = 1000  # conversations the service takes in one request
REQUIRED = ("prompt", "version", "unit_id")
_SHOWN = 300  # characters of a server message kept in a log line


def encode_conversation(conversation: Mapping[str, Any], now: datetime) -> bytes:
    """One conversation as compact UTF-8 JSON. `occurred_at` is set to `now` when absent: a
    conversation may wait in the buffer (longer while the service is out), and the service
    would otherwise date it when the batch arrives. Raises ValueError saying why a record
    cannot be sent (the service would refuse it, and one bad row refuses its whole batch)."""
    for name in REQUIRED:
        if conversation.get(name) is None:
            hint = " (an answer served from a fallback has none: do not log it)"
            raise ValueError(f"{name} is missing" + (hint if name == "version" else ""))
    problem = unit_id_problem(conversation["unit_id"])
    if problem is not None:
        raise ValueError(f"unit_id {problem}")
    if conversation.get("messages") is not None:
        problem = messages_problem(conversation["messages"])
        if problem is not None:
            raise ValueError(problem)
    if conversation.get("occurred_at") is None:
        conversation = {**conversation, "occurred_at": now.isoformat()}
    try:
        text = json.dumps(conversation, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        return text.encode()
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate (invalid Unicode)") from None
    except (TypeError, ValueError) as exc:  # NaN, infinity, a value JSON cannot hold
        raise ValueError(f"not JSON: {exc}") from None


SendAction = Literal["delivered", "retry", "drop", "drop_rows", "split"]


@dataclass(frozen=True)
class SendVerdict:
    action: SendAction
    reason: str = ""
    retry_after: float | None = None  # the server's Retry-After, in seconds
    bad_rows: tuple[int, ...] = ()  # drop_rows: the positions the service refused


def judge_send(
    status: int, headers: Mapping[str, str], body: bytes, rows: int, now: datetime
) -> SendVerdict:
    """What to do with a batch after the service answered `status`:
    - 2xx: stored (or had been, for a retry with the same key);
    - 429, 408, 5xx: try again later with the same key and bytes, after Retry-After if given;
    - 409 about the key: a bug (the bytes changed), so drop; any other 409 says a prompt,
      version or experiment changed while the batch was stored: send it again;
    - 413: too large: split it in two (a single conversation that is too large is dropped);
    - 400 naming rows: drop those rows and send the rest as a new batch (nothing was stored);
    - any other 4xx (a wrong token, a malformed batch): drop it, never retry forever."""
    if 200 <= status < 300:
        return SendVerdict("delivered")
    reason = f"{status}: {server_message(body)}"
    document = _json(body)
    field = document.get("field") if isinstance(document, dict) else None
    if status in (408, 429) or status >= 500 or (status == 409 and field != IDEMPOTENCY_HEADER):
        return SendVerdict("retry", reason, parse_retry_after(headers.get("Retry-After"), now))
    if status == 413:
        return SendVerdict("split" if rows > 1 else "drop", reason)
    if status == 400 and isinstance(document, dict):
        bad = _bad_rows(document.get("errors"), rows)
        if bad and len(bad) < rows:
            return SendVerdict("drop_rows", reason, bad_rows=bad)
    return SendVerdict("drop", reason)


ConfigAction = Literal["load", "not_modified", "failed"]


@dataclass(frozen=True)
class ConfigVerdict:
    action: ConfigAction
    reason: str = ""
    retry_after: float | None = None


def judge_config(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime
) -> ConfigVerdict:
    if status == 200:
        return ConfigVerdict("load")
    if status == 304:
        return ConfigVerdict("not_modified")
    return ConfigVerdict(
        "failed",
        f"{status}: {server_message(body)}",
        parse_retry_after(headers.get("Retry-After"), now),
    )


def server_message(body: bytes) -> str:
    """The service's `error` text (with the first row problems of a refused batch), or the
    start of whatever else answered (a proxy's page), shortened for a log line."""
    document = _json(body)
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        text = str(document["error"])
        errors = document.get("errors")
        if isinstance(errors, list) and errors:
            shown = "; ".join(_row_problem(error) for error in errors[:3])
            text += f" ({shown}{'; ...' if len(errors) > 3 else ''})"
    else:
        text = body[:_SHOWN].decode(errors="replace").strip() or "(no body)"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _row_problem(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)[:80]
    return f"row {error.get('index')} {error.get('field')}: {error.get('problem')}"


def _bad_rows(errors: Any, rows: int) -> tuple[int, ...]:
    if not isinstance(errors, list):
        return ()
    found = {
        error["index"]
        for error in errors
        if isinstance(error, dict)
        and isinstance(error.get("index"), int)
        and not isinstance(error.get("index"), bool)
        and 0 <= error["index"] < rows
    }
    return tuple(sorted(found))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
