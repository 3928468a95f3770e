"""The domain's rules for storable text and timestamps (domain/text.py), and the size setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.text import LATEST, TextValidationError, check_epoch_seconds, check_text, check_timestamp
from services.settings import Settings, parse_size

ALLOWED_CONTROLS = "\t\n\r"
FORBIDDEN_CHARS = st.one_of(
    st.sampled_from([chr(c) for c in range(0x20) if chr(c) not in ALLOWED_CONTROLS] + ["\x7f"]),
    st.characters(min_codepoint=0x80, max_codepoint=0x9F),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
)
# Any character but the controls and surrogates.
TEXT = st.text(st.characters(blacklist_categories=["Cc", "Cs"]) | st.sampled_from(ALLOWED_CONTROLS))


@given(TEXT)
def test_text_without_controls_or_surrogates_is_storable(value: str) -> None:
    check_text("subject", value)
    value.encode("utf-8")  # and UTF-8 can carry it


@given(TEXT, FORBIDDEN_CHARS, TEXT)
def test_any_control_character_or_lone_surrogate_is_refused_naming_the_field(before: str, bad: str,
                                                                          after: str) -> None:
    with pytest.raises(TextValidationError) as info:
        check_text("message", before + bad + after)
    assert info.value.code == "validation_error"
    assert info.value.message.startswith("message: ")
    assert f"U+{ord(bad):04X}" in info.value.message


def test_timestamp_bounds_hold_after_conversion_to_utc() -> None:
    minus14 = timezone(-timedelta(hours=14))
    check_timestamp("ends_at", LATEST)
    check_timestamp("ends_at", datetime(1970, 1, 1, tzinfo=UTC))
    check_timestamp("ends_at", datetime(9999, 12, 30, 9, 59, 59, tzinfo=minus14))  # 23:59:59Z
    for bad in (datetime(9999, 12, 31, 23, 59, 59, tzinfo=minus14), datetime(9999, 12, 31, tzinfo=UTC),
                datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
                datetime(2030, 1, 1)):
        with pytest.raises(TextValidationError, match=r"^ends_at: "):
            check_timestamp("ends_at", bad)


@given(st.datetimes(timezones=st.timezones()))
def test_an_accepted_timestamp_survives_every_timezone_shift(value: datetime) -> None:
    try:
        check_timestamp("at", value)
    except TextValidationError:
        return
    utc = value.astimezone(UTC)
    for hours in (-14, 14):
        utc.astimezone(timezone(timedelta(hours=hours))).isoformat()  # no OverflowError


def test_epoch_seconds_are_whole_numbers_within_the_bounds() -> None:
    assert check_epoch_seconds("created", 0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert check_epoch_seconds("created", int(LATEST.timestamp())) == LATEST
    for bad in (1e20, 10**20, -1, 1.0, True, False, "1", None, int(LATEST.timestamp()) + 1):
        with pytest.raises(TextValidationError, match=r"^created: "):
            check_epoch_seconds("created", bad)


def test_sizes() -> None:
    assert [parse_size(v) for v in ("1MiB", "512KiB", "10GiB", "2048", 4096, " 8 MiB ", "1MB")] == [
        1024**2, 512 * 1024, 10 * 1024**3, 2048, 4096, 8 * 1024**2, 1000**2]
    for bad in ("1.5MiB", "-1", "lots", "1 XB", True):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert Settings().max_body == 1024**2
    assert Settings(max_body="64KiB").max_body == 64 * 1024
