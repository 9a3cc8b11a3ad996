"""Config server names: whole-string validation (a trailing newline is not part of a group name)."""

from __future__ import annotations

from twinfer.bot.scenario import parse_duration
from twinfer.configserver.store import valid_group


def test_group_names_match_whole():
    assert valid_group("prod-eu.1")
    for bad in ("prod\n", "prod\r\n", "..", "a/b", ""):
        assert not valid_group(bad), repr(bad)


def test_durations_still_allow_surrounding_spaces():
    assert parse_duration(" 500ms ") == 0.5 and parse_duration("2m\n") == 120.0
