"""The time a build stamps into the bundle: ``SOURCE_DATE_EPOCH``, a fixed date under a seed,
or the clock.

Reproducible Builds' ``SOURCE_DATE_EPOCH`` specification (reproducible-builds.org/specs/
source-date-epoch, version 1.0): the variable, when set, is a whole number of seconds since
1970-01-01 00:00:00 UTC in ASCII decimal, and replaces the current time in everything a build
stamps; a malformed value is an error. An empty value is taken as unset (CI systems export
empty variables).

What a build stamps: the FAT directory entries of the ESP (mtools, in UTC when the time is
fixed) and the owner's certificates (``notBefore``; ``notAfter`` ten years later). The rule
(:func:`build_epoch`): ``SOURCE_DATE_EPOCH`` when given; else, for a seeded build,
:data:`SEEDED_EPOCH` (2025-01-01 00:00:00 UTC, the date cvm's certificates have always started
at); else ``None`` — the ESP takes the clock and the certificates their usual start.

FAT (Microsoft's FAT specification, "Date and Time Formats") holds dates from 1980-01-01 to
2107-12-31, in steps of two seconds: an epoch outside that range is refused, and an odd second
is written rounded down, as mtools does.
"""

from __future__ import annotations

import datetime

from cvm.errors import UsageError

SEEDED_EPOCH = 1735689600
"""2025-01-01T00:00:00Z: what a seeded build stamps when ``SOURCE_DATE_EPOCH`` is not set."""
FAT_FIRST_EPOCH = 315532800
"""1980-01-01T00:00:00Z, the first time a FAT directory entry can hold."""
FAT_LAST_EPOCH = 4354819199
"""2107-12-31T23:59:59Z, the last second of the last day a FAT directory entry can hold."""
VARIABLE = "SOURCE_DATE_EPOCH"


def parse_source_date_epoch(text: str | None) -> int | None:
    """The value of ``SOURCE_DATE_EPOCH`` (``None`` or empty: not set); UsageError naming the
    variable for anything but ASCII decimal digits, or a time FAT cannot hold."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"{VARIABLE}: {text!r} is not a whole number of seconds since 1970 "
                         "(ASCII digits only)")
    epoch = int(text)
    check_epoch(epoch)
    return epoch


def check_epoch(epoch: int) -> None:
    """Refuse a build time the ESP's FAT cannot hold (UsageError naming the variable)."""
    if not FAT_FIRST_EPOCH <= epoch <= FAT_LAST_EPOCH:
        raise UsageError(f"{VARIABLE}: {epoch} is outside 1980-01-01..2107-12-31, the dates "
                         f"a FAT directory entry holds ({FAT_FIRST_EPOCH}..{FAT_LAST_EPOCH})")


def build_epoch(seeded: bool, source_date_epoch: int | None) -> int | None:
    """The build's time in seconds since 1970: ``source_date_epoch`` when given, else
    :data:`SEEDED_EPOCH` for a seeded build, else ``None`` (the clock)."""
    if source_date_epoch is not None:
        return source_date_epoch
    return SEEDED_EPOCH if seeded else None


def epoch_datetime(epoch: int | None) -> datetime.datetime | None:
    """``epoch`` as an aware UTC ``datetime`` (``None`` stays ``None``)."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)
