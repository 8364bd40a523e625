"""The byte-layout kit: fixed layouts with explicit offsets, cursors, GUIDs."""

from cvm.wire.cursor import Reader, Writer
from cvm.wire.guid import Guid
from cvm.wire.layout import Field, Layout, raw, reserved, u8, u16, u32, u64

__all__ = [
    "Field", "Guid", "Layout", "Reader", "Writer", "raw", "reserved", "u8", "u16", "u32", "u64",
]
