"""UI_ACCESS and ADMIN_HMAC_SECRET together (optimizer/ui/access.py)."""

from __future__ import annotations

import pytest

from optimizer.config import Settings, load_settings
from optimizer.errors import ConfigError
from optimizer.ui.access import can_write, ui_mode, unavailable, why_off


def settings(**fields: object) -> Settings:
    return Settings(admin_token="admin-token-ü", **fields)


@pytest.mark.parametrize(
    ("access", "secret", "mode"),
    [
        ("auto", None, "full"),
        ("auto", "hmac-secret", "off"),
        ("off", None, "off"),
        ("off", "hmac-secret", "off"),
        ("read-only", None, "read-only"),
        ("read-only", "hmac-secret", "read-only"),
        ("full", None, "full"),
        ("full", "hmac-secret", "full"),
    ],
)
def test_modes(access, secret, mode):
    s = settings(ui_access=access, admin_hmac_secret=secret)
    assert ui_mode(s) == mode
    assert can_write(s) is (mode == "full")
    assert (unavailable(s) is None) is (mode != "off")


def test_off_because_of_the_secret_names_both_settings():
    text = why_off(settings(admin_hmac_secret="hmac-secret"))
    assert "ADMIN_HMAC_SECRET" in text and "UI_ACCESS" in text
    assert "hmac-secret" not in text  # the secret is never echoed


def test_off_by_choice_names_ui_access():
    text = why_off(settings(ui_access="off"))
    assert "UI_ACCESS=off" in text


def test_without_an_admin_token_no_one_can_log_in():
    text = unavailable(Settings())
    assert text is not None and "ADMIN_TOKEN" in text


def test_the_environment_spells_the_modes_in_any_case_and_refuses_others():
    assert load_settings({"UI_ACCESS": "Read-Only"}).ui_access == "read-only"
    assert load_settings({}).ui_access == "auto"
    with pytest.raises(ConfigError, match="UI_ACCESS must be one of auto, off, read-only, full"):
        load_settings({"UI_ACCESS": "yes"})


@pytest.mark.parametrize("hours", ["0", "-1", "169", "nan", "many"])
def test_session_hours_must_be_above_zero_and_at_most_a_week(hours):
    with pytest.raises(ConfigError, match="UI_SESSION_HOURS must be a"):
        load_settings({"UI_SESSION_HOURS": hours})


def test_session_hours_and_secure_cookies_from_the_environment():
    s = load_settings({"UI_SESSION_HOURS": "0.5", "UI_SECURE_COOKIES": "true"})
    assert s.ui_session_hours == 0.5
    assert s.ui_secure_cookies is True
    assert load_settings({}).ui_secure_cookies is False
