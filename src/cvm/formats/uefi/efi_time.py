"""EFI_TIME: the 16-byte timestamp of authenticated variables.

UEFI 2.10 §8.3 (GetTime, "EFI_TIME"): ``{u16 Year; u8 Month; u8 Day; u8 Hour; u8 Minute;
u8 Second; u8 Pad1; u32 Nanosecond; i16 TimeZone; u8 Daylight; u8 Pad2}``. In
EFI_VARIABLE_AUTHENTICATION_2 the Pad1, Nanosecond, TimeZone, Daylight and Pad2 fields must be
zero (§8.2.2), which :meth:`EfiTime.from_bytes` checks when asked to.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Layout, u8, u16, u32

EFI_TIME = Layout("EFI_TIME", 0x10, [
    u16("year", 0x0),
    u8("month", 0x2),
    u8("day", 0x3),
    u8("hour", 0x4),
    u8("minute", 0x5),
    u8("second", 0x6),
    u8("pad1", 0x7),
    u32("nanosecond", 0x8),
    u16("time_zone", 0xC),
    u8("daylight", 0xE),
    u8("pad2", 0xF),
])
EFI_TIME_SIZE = EFI_TIME.size


@dataclass(frozen=True, order=True)
class EfiTime:
    """An EFI_TIME; ordering compares the date and time fields, as variable updates do."""

    year: int = 0
    month: int = 0
    day: int = 0
    hour: int = 0
    minute: int = 0
    second: int = 0
    nanosecond: int = 0
    time_zone: int = 0
    daylight: int = 0
    pad1: int = 0
    pad2: int = 0

    @classmethod
    def from_bytes(cls, data: bytes, authenticated: bool = False) -> EfiTime:
        values = EFI_TIME.unpack(data)
        fields = {k: v for k, v in values.items() if isinstance(v, int)}
        result = cls(**fields)
        if authenticated and (result.pad1 or result.nanosecond or result.time_zone
                              or result.daylight or result.pad2):
            raise FormatError("EFI_TIME of an authenticated variable: Pad1, Nanosecond, "
                              "TimeZone, Daylight and Pad2 must be zero")
        return result

    def to_bytes(self) -> bytes:
        return EFI_TIME.pack({
            "year": self.year, "month": self.month, "day": self.day, "hour": self.hour,
            "minute": self.minute, "second": self.second, "pad1": self.pad1,
            "nanosecond": self.nanosecond, "time_zone": self.time_zone,
            "daylight": self.daylight, "pad2": self.pad2,
        })

    @classmethod
    def from_datetime(cls, moment: datetime.datetime) -> EfiTime:
        return cls(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                   moment.second)

    def __str__(self) -> str:
        return (f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
                f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}")
