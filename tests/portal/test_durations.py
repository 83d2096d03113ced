"""The duration grammar: what the settings, forms, API and commands accept, and the API schema's pattern."""

import re

import pytest

from portal.durations import DURATION_PATTERN, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("20min", 1200),
        ("90s", 90),
        ("1h30min", 5400),
        ("1.5h", 5400),
        ("600", 600),
        (45, 45),
        ("2 min", 120),
    ],
)
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5min", "0", "10 parsecs", "1h30", "min"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["20min", "90s", "1h30min", "1.5h", "600", "2 min", "1 H 30 MIN", "0s1s", "1sec", "2m30s", "1hr", "soon", "-5min"]
    + ["0", "1h30", "min", ".5s", "5.", "0h", "1mins"],
)
def test_the_api_schema_pattern_accepts_exactly_what_the_parser_does(text):
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert bool(re.fullmatch(DURATION_PATTERN, text)) is parsed
