"""The build's time (:mod:`cvm.image.build_epoch`): ``SOURCE_DATE_EPOCH`` read strictly, the
seeded date, the range a FAT directory entry holds, and the spec's check of a given time."""

from __future__ import annotations

import datetime

import pytest

from cvm.errors import UsageError
from cvm.image.build_epoch import (
    FAT_FIRST_EPOCH,
    FAT_LAST_EPOCH,
    SEEDED_EPOCH,
    build_epoch,
    check_epoch,
    epoch_datetime,
    parse_source_date_epoch,
)
from cvm.image.bundle import ImageSpec

UTC = datetime.UTC


def test_the_dates_are_the_documented_ones() -> None:
    assert epoch_datetime(SEEDED_EPOCH) == datetime.datetime(2025, 1, 1, tzinfo=UTC)
    assert epoch_datetime(FAT_FIRST_EPOCH) == datetime.datetime(1980, 1, 1, tzinfo=UTC)
    assert epoch_datetime(FAT_LAST_EPOCH) == datetime.datetime(2107, 12, 31, 23, 59, 59,
                                                               tzinfo=UTC)
    assert epoch_datetime(None) is None
    moment = epoch_datetime(1700000000)
    assert moment is not None and moment.utcoffset() == datetime.timedelta(0)


def test_source_date_epoch_wins_then_the_seed_then_the_clock() -> None:
    assert build_epoch(False, None) is None
    assert build_epoch(True, None) == SEEDED_EPOCH
    assert build_epoch(True, 1700000000) == 1700000000
    assert build_epoch(False, 1700000000) == 1700000000


@pytest.mark.parametrize(("text", "epoch"), [
    (None, None), ("", None), ("1700000000", 1700000000), ("0315532800", FAT_FIRST_EPOCH),
    (str(FAT_FIRST_EPOCH), FAT_FIRST_EPOCH), (str(FAT_LAST_EPOCH), FAT_LAST_EPOCH)])
def test_source_date_epoch_is_read(text: str | None, epoch: int | None) -> None:
    assert parse_source_date_epoch(text) == epoch


@pytest.mark.parametrize("text", ["abc", "-1700000000", "+1700000000", "1700000000.5",
                                  " 1700000000", "1700000000\n", "1_700_000_000", "1e9",
                                  "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660"])
def test_a_malformed_source_date_epoch_is_refused(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_source_date_epoch(text)
    assert str(refused.value) == (f"SOURCE_DATE_EPOCH: {text!r} is not a whole number of "
                                  "seconds since 1970 (ASCII digits only)")


@pytest.mark.parametrize("epoch", [0, FAT_FIRST_EPOCH - 1, FAT_LAST_EPOCH + 1, 1 << 40])
def test_a_time_fat_cannot_hold_is_refused(epoch: int) -> None:
    message = (f"SOURCE_DATE_EPOCH: {epoch} is outside 1980-01-01..2107-12-31, the dates a FAT "
               "directory entry holds (315532800..4354819199)")
    for refuse in (lambda: parse_source_date_epoch(str(epoch)), lambda: check_epoch(epoch),
                   lambda: ImageSpec(source_date_epoch=epoch).check()):
        with pytest.raises(UsageError) as refused:
            refuse()
        assert str(refused.value) == message
    ImageSpec(source_date_epoch=FAT_FIRST_EPOCH).check()
    ImageSpec(source_date_epoch=FAT_LAST_EPOCH).check()
    check_epoch(FAT_FIRST_EPOCH)
    check_epoch(FAT_LAST_EPOCH)
