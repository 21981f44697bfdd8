"""Who may use the dashboard at all, from the settings alone (pure: no I/O).

UI_ACCESS=auto keeps the guarantee ADMIN_HMAC_SECRET gives: with it set, every admin request
must be signed, which a browser form cannot do, so a token-only login would grant more than
the API does. The dashboard is then off unless the operator opts in with read-only or full.
"""

from __future__ import annotations

from typing import Literal

from optimizer.config import Settings

UiMode = Literal["off", "read-only", "full"]


def ui_mode(settings: Settings) -> UiMode:
    """The mode in force: auto is full without ADMIN_HMAC_SECRET and off with it."""
    if settings.ui_access == "auto":
        return "off" if settings.admin_hmac_secret else "full"
    return settings.ui_access


def why_off(settings: Settings) -> str:
    """Why the dashboard is off, naming the setting that turns it on."""
    if settings.ui_access == "off":
        return (
            "The dashboard is turned off (UI_ACCESS=off). "
            "Set UI_ACCESS to read-only or full to open it."
        )
    return (
        "The dashboard is off because ADMIN_HMAC_SECRET is set: admin requests must then be "
        "signed, which a browser form cannot do, and UI_ACCESS=auto keeps that guarantee. "
        "Set UI_ACCESS=read-only (pages only) or UI_ACCESS=full to open it anyway."
    )


def unavailable(settings: Settings) -> str | None:
    """Why no one can log in, or None when the dashboard is open."""
    if ui_mode(settings) == "off":
        return why_off(settings)
    if not settings.admin_token:
        return (
            "The dashboard is disabled because ADMIN_TOKEN is not set: logging in takes the "
            "admin token. Set ADMIN_TOKEN to a long random string and restart the service."
        )
    return None


def can_write(settings: Settings) -> bool:
    """Whether forms and actions are offered and accepted (not in read-only mode)."""
    return ui_mode(settings) == "full"
