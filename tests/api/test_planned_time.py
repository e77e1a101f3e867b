"""Planned time over HTTP against the real database, every case worked by hand.

Park p1 (Asia/Shanghai) runs a weekday day shift 08:00-20:00 with 4 November 2026 a
holiday; its factory f1 follows it, f2 has its own weekday night shift 22:00-06:00 (which
replaces the park's, holidays included). Park p2 in the same city has no calendar. Park
b1 (Europe/Berlin) has a Saturday night shift across the spring daylight-saving change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from schemas.fleet import Fleet, parse_fleet
from services.core.readings import Reading
from services.storage.fleet_store import read_fleet
from tests.harness.storage import load, reading, write

FLEET = """
parks:
  - id: p1
    city: Hebi
    timezone: Asia/Shanghai
    calendar:
      shifts: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "20:00"}]
      holidays: ["2026-11-04"]
    factories:
      - id: f1
        devices:
          - {id: l1, type: production_line, capacity_units_per_hour: 1200}
          - {id: m1, type: power_meter}
      - id: f2
        calendar:
          shifts: [{days: [mon, tue, wed, thu, fri], start: "22:00", end: "06:00"}]
        devices:
          - {id: l2, type: production_line, capacity_units_per_hour: 600}
  - id: p2
    city: Hebi
    factories:
      - id: g1
        devices:
          - {id: l3, type: production_line, capacity_units_per_hour: 100}
  - id: b1
    city: Berlin
    timezone: Europe/Berlin
    calendar:
      shifts: [{days: [sat], start: "22:00", end: "06:00"}]
    factories:
      - id: k1
        devices:
          - {id: l9, type: production_line, capacity_units_per_hour: 60}
"""

SHANGHAI = timedelta(hours=8)


def local(text: str) -> datetime:
    """A Shanghai wall-clock time (no DST there) as a UTC instant."""
    return (datetime.fromisoformat(text) - SHANGHAI).replace(tzinfo=UTC)


def signals(api: TestClient, path: str, as_of: datetime) -> dict[str, Any]:
    """GET live signals at ``as_of`` over 5 minutes."""
    response = api.get(path, params={"as_of": as_of.isoformat(), "window": "5m"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def line(device: str, as_of: datetime, state: str, outputs: list[tuple[int, float]]) -> list[Any]:
    """A line's state 20 s before ``as_of`` and output counter readings (seconds before)."""
    found = [reading(device, "state", as_of - timedelta(seconds=20), state)]
    found += [reading(device, "output_units", as_of - timedelta(seconds=s), v) for s, v in outputs]
    return found


def meter(as_of: datetime) -> list[Reading]:
    """m1 online at ``as_of``."""
    return [reading("m1", "power_kw", as_of - timedelta(seconds=10), 50)]


@pytest.fixture
def fleet(api: TestClient, clean_db: str) -> str:
    """The planned-time fleet, loaded."""
    del api
    load(clean_db, FLEET)
    return clean_db


def test_window_crossing_a_shift_boundary(api: TestClient, fleet: str) -> None:
    """Two minutes into f1's shift: capacity over 120 s, f2 (off shift) not counted."""
    as_of = local("2026-11-03T08:02:00")  # a Tuesday
    write(
        fleet,
        # l1: 0 at 07:58 (before the shift), 10, then 40: +40 in the window.
        line("l1", as_of, "running", [(240, 0), (90, 10), (10, 40)])
        + line("l2", as_of, "idle", [(200, 0), (30, 5)])
        + meter(as_of),
    )
    body = signals(api, "/v1/parks/p1/signals", as_of)
    s, c = body["signals"], body["counts"]
    assert (c["factories_with_lines"], c["factories_scheduled"], c["factories_operating"]) == (
        2,
        1,
        1,
    )
    assert s["operating_rate"] == 1.0  # f1 of the one scheduled factory
    # 40 units over 1200 u/h x 120 s / 3600 s = 40 units; l2's 5 units are off shift.
    assert s["capacity_utilization"] == pytest.approx(1.0)
    assert c["output_units_increase"] == 40.0
    # f1 is scheduled 120 of 300 s, f2 none: (0.4 + 0) / 2.
    assert c["scheduled_fraction_of_window"] == pytest.approx(0.2)
    assert s["health_index"] == 100.0


def test_night_shift_past_midnight_in_shanghai(api: TestClient, fleet: str) -> None:
    """At 02:00 on Tuesday f2's Monday night shift runs; f1's day shift does not."""
    as_of = local("2026-11-03T02:00:00")
    write(
        fleet,
        line("l2", as_of, "running", [(280, 0), (10, 50)])
        + line("l1", as_of, "idle", [(280, 0), (10, 0)])
        + meter(as_of),
    )
    body = signals(api, "/v1/parks/p1/signals", as_of)
    s, c = body["signals"], body["counts"]
    assert (c["factories_scheduled"], c["factories_operating"]) == (1, 1)
    assert s["operating_rate"] == 1.0  # idle f1 is off shift, not "not operating"
    # 50 units over 600 u/h x 300 s / 3600 s = 50 units.
    assert s["capacity_utilization"] == pytest.approx(1.0)


def test_factory_calendar_overrides_its_parks(api: TestClient, fleet: str) -> None:
    """At 10:00 on Tuesday the park's shift runs but f2 keeps its own (night) calendar."""
    as_of = local("2026-11-03T10:00:00")
    write(
        fleet,
        line("l1", as_of, "idle", [(280, 0), (10, 0)])
        + line("l2", as_of, "running", [(280, 0), (10, 50)])
        + meter(as_of),
    )
    body = signals(api, "/v1/parks/p1/signals", as_of)
    s, c = body["signals"], body["counts"]
    # Only f1 is scheduled, and it is idle; f2 running off shift does not count.
    assert (c["factories_scheduled"], c["factories_operating"]) == (1, 0)
    assert s["operating_rate"] == 0.0
    assert s["capacity_utilization"] == 0.0  # 0 of l1's 100 units; l2's output is off shift


def test_a_holiday_leaves_nothing_scheduled(api: TestClient, fleet: str) -> None:
    """On the park's holiday at 10:00 no factory is scheduled: both rates are null."""
    as_of = local("2026-11-04T10:00:00")
    write(fleet, line("l1", as_of, "idle", [(280, 0)]) + line("l2", as_of, "idle", [(280, 0)]))
    body = signals(api, "/v1/parks/p1/signals", as_of)
    s, c = body["signals"], body["counts"]
    assert s["operating_rate"] is None
    assert s["capacity_utilization"] is None
    assert (c["factories_scheduled"], c["scheduled_fraction_of_window"]) == (0, 0.0)
    # m1 never reported: online 2 of 3. Re-weighted over online_rate and no_alarm:
    # 100 x (0.25 x 2/3 + 0.20 x 1) / 0.45 = 81.48
    assert set(body["components"]) == {"online_rate", "no_alarm"}
    assert body["components"]["online_rate"]["weight"] == pytest.approx(0.25 / 0.45)
    assert s["health_index"] == 81.5
    # The next day the day shift runs again.
    after = local("2026-11-05T10:00:00")
    write(fleet, line("l1", after, "running", [(280, 0), (10, 20)]))
    assert signals(api, "/v1/parks/p1/signals", after)["signals"]["operating_rate"] == 1.0


def test_city_sums_scheduled_factories_of_its_parks(api: TestClient, fleet: str) -> None:
    """On p1's holiday the city's operating rate is p2's alone (p2 has no calendar)."""
    as_of = local("2026-11-04T10:00:00")
    write(fleet, line("l1", as_of, "running", [(280, 0)]) + line("l3", as_of, "running", []))
    response = api.get(
        "/v1/cities/hebi/signals", params={"as_of": as_of.isoformat(), "window": "5m"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    c = body["counts"]
    assert (c["factories_with_lines"], c["factories_scheduled"], c["factories_operating"]) == (
        3,
        1,
        1,
    )
    assert body["signals"]["operating_rate"] == 1.0
    # f1, f2 off for the window, g1 on: 1 - (1 + 1) / 3.
    assert c["scheduled_fraction_of_window"] == pytest.approx(1 / 3)
    ranked = {r["park_id"]: r["signals"]["operating_rate"] for r in body["ranking"]}
    assert ranked == {"p1": None, "p2": 1.0}


def test_history_buckets_across_a_daylight_saving_change(api: TestClient, fleet: str) -> None:
    """Berlin's night 28-29 March 2026 loses an hour: 7 one-hour buckets are on shift.

    22:00 CET is 21:00 UTC and 06:00 CEST is 04:00 UTC. l9 runs every minute from 20:00
    to 06:00 UTC making 1 unit a minute (60 u/h, its capacity).
    """
    start = datetime(2026, 3, 28, 20, tzinfo=UTC)
    minutes = [start + timedelta(minutes=m) for m in range(10 * 60)]
    write(
        fleet,
        [reading("l9", "state", ts, "running") for ts in minutes]
        + [reading("l9", "output_units", ts, float(i)) for i, ts in enumerate(minutes)],
    )
    response = api.get(
        "/v1/parks/b1/signals/history",
        params={
            "start": start.isoformat(),
            "end": (start + timedelta(hours=10)).isoformat(),
            "bucket": "1h",
        },
    )
    assert response.status_code == 200, response.text
    buckets = response.json()["buckets"]
    hours = [b["ts"][11:13] for b in buckets]
    assert hours == ["20", "21", "22", "23", "00", "01", "02", "03", "04", "05"]
    operating = [b["signals"]["operating_rate"] for b in buckets]
    assert operating == [None, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, None, None]
    capacity = [b["signals"]["capacity_utilization"] for b in buckets]
    assert capacity[1:8] == [pytest.approx(1.0)] * 7
    assert capacity[0] is None
    scheduled = [b["counts"]["factory_minutes_scheduled"] for b in buckets]
    assert scheduled == [0, 60, 60, 60, 60, 60, 60, 60, 0, 0]
    assert all(b["counts"]["factory_minutes_with_lines"] == 60 for b in buckets)


def test_history_counts_operating_minutes_only_inside_shifts(api: TestClient, fleet: str) -> None:
    """Work past a shift's end is not operating time, in any bucket.

    On Tuesday 3 November (Shanghai) l1 runs 19:30-22:30, past f1's 20:00 end; l2 runs
    21:30-22:30, from half an hour before f2's 22:00 start. Hourly buckets from 19:00:
    19:00 is f1's last scheduled hour and it runs 30 of its minutes; nothing is scheduled
    at 20:00 and 21:00; at 22:00 only f2 is, and it runs 30 minutes (f1's 30 minutes that
    hour are off shift, so they do not count towards the rate).
    """

    def running(device: str, first: str, last: str) -> list[Reading]:
        ts, end = local(first), local(last)
        found = []
        while ts < end:
            found.append(reading(device, "state", ts, "running"))
            ts += timedelta(minutes=1)
        return found

    write(
        fleet,
        running("l1", "2026-11-03T19:30:00", "2026-11-03T22:30:00")
        + running("l2", "2026-11-03T21:30:00", "2026-11-03T22:30:00"),
    )
    response = api.get(
        "/v1/parks/p1/signals/history",
        params={
            "start": local("2026-11-03T19:00:00").isoformat(),
            "end": local("2026-11-03T23:00:00").isoformat(),
            "bucket": "1h",
        },
    )
    assert response.status_code == 200, response.text
    buckets = response.json()["buckets"]
    assert [b["counts"]["factory_minutes_scheduled"] for b in buckets] == [60, 0, 0, 60]
    assert [b["counts"]["factory_minutes_operating"] for b in buckets] == [30, 0, 0, 30]
    assert [b["signals"]["operating_rate"] for b in buckets] == [0.5, None, None, 0.5]


def test_time_zones_and_calendars_round_trip_through_the_registry(fleet: str) -> None:
    """The registry reads back the time zones and calendars a fleet load stored."""
    with psycopg.connect(fleet) as conn:
        back = read_fleet(conn)

    def planned(fleet: Fleet) -> dict[str, Any]:
        return {
            p.id: (p.timezone, p.calendar, {f.id: f.calendar for f in p.factories})
            for p in fleet.parks
        }

    assert planned(back) == planned(parse_fleet(FLEET))
    p1 = next(p for p in back.parks if p.id == "p1")
    assert p1.calendar is not None
    assert [str(d) for d in p1.calendar.holidays] == ["2026-11-04"]
    assert next(p for p in back.parks if p.id == "b1").timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (("timezone: Asia/Shanghai", "timezone: Asia/Hebi"), "unknown time zone 'Asia/Hebi'"),
        (('start: "08:00"', 'start: "8:00"'), "'8:00' is not a time HH:MM"),
        (('fri], start: "22', 'fry], start: "22'), "unknown weekday 'fry'"),
    ],
)
def test_fleet_upload_names_a_bad_calendar(
    api: TestClient, edit: tuple[str, str], fragment: str
) -> None:
    """PUT /v1/fleet refuses a bad time zone, time or weekday as a 422 that says which."""
    text = FLEET.replace(*edit, 1)
    assert text != FLEET
    refused = api.put("/v1/fleet", content=text, headers={"content-type": "application/yaml"})
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert fragment in refused.text
