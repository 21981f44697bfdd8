"""The dashboard's template environment and filters (optimizer/ui/render.py), and the shared
templates base.html, _macros.html, error.html and login.html rendered on their own."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from jinja2 import UndefinedError
from markupsafe import Markup

from optimizer.ui.render import ago, code_spans, environment, num, pct, render, sig, when
from optimizer.ui.web import NOTICES, UiContext

NOW = datetime(2026, 12, 1, 13, 5, 42, tzinfo=UTC)


def ui(**fields: object) -> UiContext:
    values: dict[str, object] = {
        "csrf": "c" * 64,
        "can_write": True,
        "section": "prompts",
        "notice": None,
        "now": NOW,
    }
    values.update(fields)
    return UiContext(**values)  # type: ignore[arg-type]


def test_when_shows_utc_to_the_minute():
    assert when(NOW) == "2026-12-01 13:05 UTC"
    assert when(NOW.astimezone(timezone(timedelta(hours=-5)))) == "2026-12-01 13:05 UTC"
    assert when(NOW.replace(tzinfo=None)) == "2026-12-01 13:05 UTC"  # naive reads as UTC
    assert when(None) == "—"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=42), "42 s ago"),
        (timedelta(minutes=5, seconds=59), "5 min ago"),
        (timedelta(hours=3), "3 h ago"),
        (timedelta(days=1, hours=23), "47 h ago"),
        (timedelta(days=12), "12 days ago"),
        (-timedelta(minutes=5), "in 5 min"),
    ],
)
def test_ago(delta, text):
    assert ago(NOW - delta, NOW) == text


def test_ago_of_nothing_and_of_a_naive_time():
    assert ago(None, NOW) == "—"
    assert ago(NOW.replace(tzinfo=None) - timedelta(minutes=2), NOW) == "2 min ago"


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        (0.032, "+3.2%"),
        (-0.1234, "-12.3%"),
        (0.0, "0.0%"),
        (-0.00001, "0.0%"),
        (1.5, "+150.0%"),
        (None, "—"),
        (math.nan, "—"),
        (math.inf, "—"),
    ],
)
def test_pct(ratio, text):
    assert pct(ratio) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.021987, "+0.022"),
        (-0.015563, "-0.0156"),
        (0.059541, "+0.0595"),
        (-0.003896, "-0.0039"),
        (12.345, "+12.3"),
        (123456.0, "+1.23e+05"),
        (0.0, "0"),
        (-0.0, "0"),
        (-1e-300, "-1e-300"),
        (None, "—"),
        (math.nan, "—"),
        (-math.inf, "—"),
        ("0.5", "—"),
        (True, "—"),
    ],
)
def test_sig(value, text):
    assert sig(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12345, "12,345"),
        (-1234567, "-1,234,567"),
        (0, "0"),
        (3.0, "3"),
        (0.5, "0.5"),
        (12345.678, "12,345.68"),
        (None, "—"),
        (math.nan, "—"),
    ],
)
def test_num(value, text):
    assert num(value) == text


def test_undefined_names_fail_instead_of_rendering_nothing():
    with pytest.raises(UndefinedError):
        environment().from_string("{{ missing }}").render()


def test_values_are_escaped_but_markup_is_not():
    template = environment().from_string("{{ a }}|{{ b }}")
    out = template.render(a="<script>alert('x')</script>", b=Markup("<svg></svg>"))
    assert out == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;|<svg></svg>"


def test_tojson_is_jinjas_own_and_safe_inside_html():
    out = environment().from_string("{{ v|tojson }}").render(v={"name": "</script><b>"})
    assert "</script>" not in out and "\\u003c/script\\u003e" in out


def test_the_error_page_escapes_everything_it_shows():
    html = render(
        "error.html",
        {
            "status": 400,
            "title": "Bad Request",
            "message": "name <script>alert(1)</script> is not valid — ünïcode",
            "field": "<b>name</b>",
            "ui": ui(),
        },
    )
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "&lt;b&gt;name&lt;/b&gt;" in html
    assert "ünïcode" in html
    assert 'href="/ui/static/ui.css"' in html


def test_base_marks_the_section_and_carries_the_csrf_token_in_the_logout_form():
    html = render(
        "error.html",
        {"status": 404, "title": "Not Found", "message": "m", "field": None, "ui": ui()},
    )
    assert '<a href="/ui/prompts" class="active" aria-current="page">Prompts</a>' in html
    for href in ("/ui/", "/ui/experiments", "/ui/insights", "/ui/jobs"):
        assert f'<a href="{href}">' in html
    assert 'action="/ui/logout"' in html
    assert f'name="csrf" value="{"c" * 64}"' in html
    assert "read-only" not in html


def test_base_shows_read_only_and_the_notice():
    html = render(
        "error.html",
        {
            "status": 409,
            "title": "Conflict",
            "message": "m",
            "field": None,
            "ui": ui(can_write=False, notice=NOTICES["job-added"]),
        },
    )
    assert "badge-read-only" in html
    assert NOTICES["job-added"] in html


def test_signed_out_pages_have_no_nav_and_no_logout():
    html = render(
        "error.html",
        {
            "status": 503,
            "title": "Dashboard unavailable",
            "message": "m",
            "field": None,
            "ui": ui(csrf="", can_write=False, section="", signed_in=False),
        },
    )
    assert "/ui/logout" not in html and 'href="/ui/jobs"' not in html


def test_macros():
    page = environment().from_string(
        '{% import "_macros.html" as m %}'
        "{{ m.csrf_field(ui) }}|{{ m.pager(next_url) }}|{{ m.status_badge(status) }}|"
        "{{ m.moment(t, now) }}|{{ m.moment(none, now) }}|{{ m.field_error(errors, 'payload') }}"
    )
    out = page.render(
        ui=ui(),
        next_url="/ui/jobs?before=12&status=<x>",
        status="running",
        t=NOW - timedelta(minutes=5),
        now=NOW,
        errors={"payload": "payload is not JSON <here>"},
    )
    assert f'<input type="hidden" name="csrf" value="{"c" * 64}">' in out
    assert 'href="/ui/jobs?before=12&amp;status=&lt;x&gt;" rel="next"' in out
    assert '<span class="badge badge-running">running</span>' in out
    assert 'title="2026-12-01 13:00 UTC">5 min ago</time>' in out
    assert '<span class="muted">—</span>' in out
    assert "payload is not JSON &lt;here&gt;" in out
    empty = environment().from_string(
        '{% import "_macros.html" as m %}{{ m.pager(none) }}{{ m.field_error({}, "x") }}'
    )
    assert empty.render().strip() == ""


def test_no_template_has_inline_style_or_script():
    # The CSP forbids both: an inline one would silently not work in the browser.
    env = environment()
    assert env.loader is not None
    for name in env.list_templates():
        source = env.loader.get_source(env, name)[0]
        assert not re.search(r"\sstyle=|<style", source), name
        assert not re.search(r"<script(?![^>]*\ssrc=)|\son[a-z]+=", source), name


def test_messages_show_backticked_commands_as_code_and_escape_the_rest():
    shown = code_spans("stop it (`prompt-worker experiments stop 3`), not <b>`x`</b> & `")
    assert shown == (
        "stop it (<code>prompt-worker experiments stop 3</code>), "
        "not &lt;b&gt;<code>x</code>&lt;/b&gt; &amp; `"
    )
