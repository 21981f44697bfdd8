from datetime import UTC, datetime, timedelta

from optimizer.runtime.schedule import cron_trigger, latest_fire_time, tick_dedupe_key


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_latest_fire_time_is_the_scheduled_tick_not_now():
    trigger = cron_trigger("*/15 * * * *")
    for now in ("2026-11-22T10:15:00", "2026-11-22T10:15:00.400", "2026-11-22T10:19:59"):
        assert latest_fire_time(trigger, at(now), timedelta(minutes=5)) == at("2026-11-22T10:15:00")


def test_latest_fire_time_outside_lookback_is_none():
    trigger = cron_trigger("0 * * * *")
    assert latest_fire_time(trigger, at("2026-11-22T10:30:00"), timedelta(minutes=15)) is None


def test_latest_fire_time_picks_newest_of_several():
    trigger = cron_trigger("* * * * *")
    got = latest_fire_time(trigger, at("2026-11-22T10:03:30"), timedelta(minutes=5))
    assert got == at("2026-11-22T10:03:00")


def test_dedupe_key_names_type_scope_and_utc_fire_time():
    fire = datetime.fromisoformat("2026-11-22T11:15:00+01:00")
    assert tick_dedupe_key("experiment_monitoring", "all", fire) == (
        "experiment_monitoring:all:2026-11-22T10:15:00Z"
    )
