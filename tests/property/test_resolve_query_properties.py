"""Resolve reads its query string two ways: the common shape (exactly one usable
`unit_id`) checked directly, everything else through ResolveQuery. For any query string,
the direct check accepts only what the model accepts, with the same unit id, and it takes
every single usable `unit_id` the model takes (so the fast way is the one used)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given, settings
from hypothesis import strategies as st

from optimizer.errors import InvalidInput
from optimizer.http.application_api import plain_unit_id
from optimizer.http.body import read_query
from optimizer.http.requests import ResolveQuery

# Every character a URL can carry once percent-encoded, surrogates included (they arrive
# as the replacement character or as escapes, whichever yarl makes of them).
_text = st.text(st.characters(codec=None), max_size=260) | st.sampled_from(
    ["", " ", "\t \n", "\x00", "a\x00b", "x" * 200, "x" * 201, "é" * 200, "u-1", "０"]
)
_names = st.sampled_from(["unit_id", "UNIT_ID", "unit", "limit", "unit_id ", ""]) | st.text(
    max_size=8
)
_queries = st.lists(st.tuples(_names, _text), max_size=3)


def _request(pairs: list[tuple[str, str]]) -> web.Request:
    query = "&".join(
        f"{quote(name, safe='', errors='surrogatepass')}="
        f"{quote(value, safe='', errors='surrogatepass')}"
        for name, value in pairs
    )
    return make_mocked_request("GET", f"/v1/prompts/p/resolve?{query}")


def _model_answer(request: web.Request) -> str | InvalidInput:
    try:
        return read_query(request, ResolveQuery).unit_id
    except InvalidInput as exc:
        return exc


@settings(max_examples=400, deadline=None, database=None)
@given(_queries)
@example([("unit_id", "u-1")])
@example([("unit_id", "u-1"), ("unit_id", "u-2")])
@example([("unit_id", "u-1"), ("limit", "3")])
@example([("unit_id", " ")])
@example([("unit_id", "\x00")])
@example([("unit_id", "x" * 201)])
@example([("unit_id", "\ud800")])
def test_direct_check_agrees_with_the_model(pairs: list[tuple[str, str]]) -> None:
    request = _request(pairs)
    direct = plain_unit_id(request.query)
    model = _model_answer(request)
    if direct is not None:
        assert model == direct
    elif isinstance(model, str):
        # The model took it: then it was not a lone unit_id the direct check refused.
        assert len(request.query) != 1 or "unit_id" not in request.query
