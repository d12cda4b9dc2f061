"""Timing rules at chosen instants, in the candidate's own time zone."""
from __future__ import annotations

from datetime import timedelta

import pytest
from zoneinfo import ZoneInfo

from milo_portal.followups.rules import Rules, backoff, in_window, next_allowed, parse_days, parse_hours
from tests.conftest import at

R = Rules()


def local(iso_with_offset: str):
    return at(iso_with_offset)


@pytest.mark.parametrize("when,initial,expected", [
    # Thursday 17:59 in the window: now. 18:01: Friday is not allowed for a first invite → Monday 09:00.
    ("2026-12-03T17:59:00-05:00", True, "2026-12-03T17:59:00-05:00"),
    ("2026-12-03T18:01:00-05:00", True, "2026-12-07T09:00:00-05:00"),
    # Friday application → Monday 09:00 candidate-local.
    ("2026-12-04T10:00:00-05:00", True, "2026-12-07T09:00:00-05:00"),
    # A reminder may go on Friday; after Friday 18:00 it waits for Monday.
    ("2026-12-04T10:00:00-05:00", False, "2026-12-04T10:00:00-05:00"),
    ("2026-12-04T18:30:00-05:00", False, "2026-12-07T09:00:00-05:00"),
    # Before the window: that day's 09:00. Weekend: Monday.
    ("2026-12-02T06:00:00-05:00", True, "2026-12-02T09:00:00-05:00"),
    ("2026-12-05T12:00:00-05:00", False, "2026-12-07T09:00:00-05:00"),
])
def test_new_york_candidate(when, initial, expected):
    assert next_allowed(local(when), "America/New_York", R, initial) == local(expected)


def test_thursday_1759_versus_1801_invite():
    assert in_window(local("2026-12-03T17:59:00-05:00"), "America/New_York", R, initial=True)
    assert not in_window(local("2026-12-03T18:01:00-05:00"), "America/New_York", R, initial=True)


def test_candidate_in_tokyo_with_the_server_in_utc():
    # 02:00 UTC Friday is 11:00 Friday in Tokyo: no first invite on a Friday there → Monday 09:00 JST.
    assert next_allowed(at("2026-12-04T02:00:00"), "Asia/Tokyo", R, True) == local("2026-12-07T09:00:00+09:00")
    # 23:30 UTC Sunday is already Monday 08:30 in Tokyo → 09:00 JST Monday, 00:00 UTC.
    assert next_allowed(at("2026-12-06T23:30:00"), "Asia/Tokyo", R, True) == at("2026-12-07T00:00:00")
    # 08:00 UTC Wednesday is 17:00 JST: inside the window.
    assert next_allowed(at("2026-12-02T08:00:00"), "Asia/Tokyo", R, True) == at("2026-12-02T08:00:00")


@pytest.mark.parametrize("tz,before,after", [
    # Europe/Berlin leaves summer time on Sunday 25 October 2026.
    ("Europe/Berlin", ("2026-10-23T19:00:00+02:00", "2026-10-26T09:00:00+01:00"),
     ("2026-10-26T20:00:00+01:00", "2026-10-27T09:00:00+01:00")),
    # America/New_York leaves summer time on Sunday 1 November 2026.
    ("America/New_York", ("2026-10-30T19:00:00-04:00", "2026-11-02T09:00:00-05:00"),
     ("2026-11-02T20:00:00-05:00", "2026-11-03T09:00:00-05:00")),
])
def test_a_0900_window_is_0900_local_on_both_sides_of_a_dst_change(tz, before, after):
    for frm, expected in (before, after):
        result = next_allowed(local(frm), tz, R)
        assert result == local(expected)
        assert result.astimezone(ZoneInfo(tz)).hour == 9


def test_spring_forward_week_in_berlin():
    # Sunday 29 March 2026 clocks go forward; Monday's 09:00 is 07:00 UTC (it was 08:00 the Friday before).
    assert next_allowed(at("2026-03-27T17:30:00"), "Europe/Berlin", R) == at("2026-03-30T07:00:00")
    assert next_allowed(at("2026-03-26T07:30:00"), "Europe/Berlin", R) == at("2026-03-26T08:00:00")


def test_a_window_start_inside_the_skipped_hour_moves_forward():
    rules = Rules(window_start=2 * 60 + 30, window_end=5 * 60, send_days=frozenset(range(1, 8)))
    # 02:30 does not exist in Berlin on 29 March 2026: 03:30 CEST is the real moment.
    assert next_allowed(at("2026-03-29T00:00:00"), "Europe/Berlin", rules) == at("2026-03-29T01:30:00")


def test_no_allowed_day_means_no_instant():
    assert next_allowed(at("2026-12-01T10:00:00"), "UTC", Rules(send_days=frozenset()), False) is None


def test_unknown_zone_falls_back_to_utc():
    assert next_allowed(at("2026-12-02T08:00:00"), "Mars/Olympus", R) == at("2026-12-02T09:00:00")


def test_parsers_and_backoff():
    assert parse_days("1,2,3,9,x") == {1, 2, 3}
    assert parse_hours("48, 24,0,-1") == (24, 48)
    assert [backoff(n) for n in (1, 2, 3)] == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4)]
    assert backoff(30) == timedelta(hours=1)


def test_a_window_until_midnight_covers_the_whole_day():
    rules = Rules(window_start=0, window_end=24 * 60, send_days=frozenset(range(1, 8)),
                  initial_days=frozenset(range(1, 8)))
    assert next_allowed(at("2026-12-05T23:59:00"), "UTC", rules, True) == at("2026-12-05T23:59:00")
    assert in_window(at("2026-12-06T00:00:00"), "UTC", rules, True)
