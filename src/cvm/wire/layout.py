"""Fixed-size binary layouts with explicit offsets, checked when the module defining them loads.

A :class:`Layout` is declared once per wire structure with every field's offset written out in
hex. Declaring it checks that the fields tile the structure exactly (no gap, no overlap, ending
at the declared size), so an off-by-one in a table is an import error, not a silent misparse.

``unpack`` is strict: exact size, every reserved range zero. ``pack`` always returns exactly
``size`` bytes and range-checks every integer.

Both run through one precompiled :class:`struct.Struct` per layout (integers of 1, 2, 4 or 8
bytes as ``B H I Q``, byte areas as ``Ns``, reserved ranges as ``Ns`` checked against zeros); the
field-by-field path remains for layouts with other integer widths and to word the error of a
value the struct refuses.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cvm.errors import FormatError, InternalError, UsageError

Endian = Literal["little", "big"]
FieldKind = Literal["uint", "bytes", "reserved"]
Value = int | bytes


@dataclass(frozen=True)
class Field:
    """One field of a layout: a name, its byte offset, its size and how to read it."""

    name: str
    offset: int
    size: int
    kind: FieldKind

    @property
    def end(self) -> int:
        return self.offset + self.size


def u8(name: str, offset: int) -> Field:
    return Field(name, offset, 1, "uint")


def u16(name: str, offset: int) -> Field:
    return Field(name, offset, 2, "uint")


def u32(name: str, offset: int) -> Field:
    return Field(name, offset, 4, "uint")


def u64(name: str, offset: int) -> Field:
    return Field(name, offset, 8, "uint")


def raw(name: str, offset: int, size: int) -> Field:
    return Field(name, offset, size, "bytes")


def reserved(offset: int, size: int) -> Field:
    """A range that must be zero when parsed and is written as zero."""
    return Field(f"reserved_{offset:#x}", offset, size, "reserved")


class Layout:
    """A named fixed-size structure made of fields that tile it exactly."""

    def __init__(
        self, name: str, size: int, fields: Sequence[Field], endian: Endian = "little"
    ) -> None:
        self.name = name
        self.size = size
        self.endian: Endian = endian
        self.fields = tuple(sorted(fields, key=lambda f: f.offset))
        position = 0
        seen: set[str] = set()
        for field in self.fields:
            if field.offset != position:
                kind = "gap" if field.offset > position else "overlap"
                raise InternalError(
                    f"layout {name}: {kind} before field {field.name} at {field.offset:#x} "
                    f"(previous field ends at {position:#x})"
                )
            if field.size <= 0:
                raise InternalError(f"layout {name}: field {field.name} has size {field.size}")
            if field.name in seen:
                raise InternalError(f"layout {name}: field {field.name} declared twice")
            seen.add(field.name)
            position = field.end
        if position != size:
            raise InternalError(
                f"layout {name}: fields end at {position:#x}, structure size is {size:#x}"
            )
        self._by_name = {f.name: f for f in self.fields}
        self._struct, self._names, self._ints, self._areas, self._zeros = _compile(
            self.fields, endian)
        # what the struct path compares at once: the type of every item (a reserved range is
        # b""), each item's value when absent (b""), and the byte areas' names and sizes
        self._types = tuple(int if name in self._ints else bytes for name in self._names)
        self._blanks = (b"",) * len(self._names)
        self._area_names = tuple(name for name, _ in self._areas)
        self._area_sizes = tuple(size for _, size in self._areas)

    def field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise InternalError(f"layout {self.name} has no field {name!r}") from None

    def span(self, first: str, last: str | None = None) -> slice:
        """The byte range from the start of ``first`` to the end of ``last`` (or of ``first``)."""
        start = self.field(first).offset
        end = self.field(last or first).end
        return slice(start, end)

    def unpack(self, data: bytes | bytearray | memoryview) -> dict[str, Value]:
        """Parse ``data`` (exactly ``size`` bytes) into a dict of field values; strict."""
        view = bytes(data)
        if len(view) != self.size:
            raise FormatError(
                f"{self.name}: expected {self.size:#x} bytes, got {len(view):#x}"
            )
        if self._struct is not None:
            items = self._struct.unpack(view)
            if all(items[index] == zero for index, zero in self._zeros):
                values = dict(zip(self._names, items, strict=True))
                values.pop("", None)
                return values
        return self._unpack_fields(view)

    def _unpack_fields(self, view: bytes) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for field in self.fields:
            chunk = view[field.offset : field.end]
            if field.kind == "reserved":
                if any(chunk):
                    raise FormatError(
                        f"{self.name}: reserved bytes at {field.offset:#x}..{field.end - 1:#x} "
                        "are not zero"
                    )
            elif field.kind == "uint":
                values[field.name] = int.from_bytes(chunk, self.endian)
            else:
                values[field.name] = chunk
        return values

    def pack(self, values: Mapping[str, Value]) -> bytes:
        """Serialise ``values`` to exactly ``size`` bytes; every non-reserved field is required."""
        if self._struct is not None and len(values) == len(self._ints) + len(self._areas):
            fast = self._pack_struct(values)
            if fast is not None:
                return fast
        return self._pack_fields(values)

    def _pack_struct(self, values: Mapping[str, Value]) -> bytes | None:
        """The struct path; None when any value needs the field-by-field path's judgement
        (a missing field, a bool or int subclass, a bytearray, a wrong length, a range)."""
        assert self._struct is not None
        items = tuple(map(values.get, self._names, self._blanks))
        if tuple(map(type, items)) != self._types:
            return None
        areas = map(values.get, self._area_names, self._blanks)  # bytes: the types match
        if tuple(map(len, areas)) != self._area_sizes:  # type: ignore[arg-type]
            return None
        try:
            return self._struct.pack(*items)
        except struct.error:
            return None

    def _pack_fields(self, values: Mapping[str, Value]) -> bytes:
        out = bytearray(self.size)
        for field in self.fields:
            if field.kind == "reserved":
                continue
            if field.name not in values:
                raise InternalError(f"{self.name}: no value for field {field.name}")
            value = values[field.name]
            if field.kind == "uint":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise UsageError(f"{self.name}.{field.name}: expected an integer")
                if not 0 <= value < (1 << (8 * field.size)):
                    raise UsageError(
                        f"{self.name}.{field.name}: {value} does not fit in {field.size} bytes"
                    )
                out[field.offset : field.end] = value.to_bytes(field.size, self.endian)
            else:
                if not isinstance(value, bytes | bytearray) or len(value) != field.size:
                    raise UsageError(
                        f"{self.name}.{field.name}: expected {field.size} bytes"
                    )
                out[field.offset : field.end] = value
        extra = set(values) - set(self._by_name)
        if extra:
            raise InternalError(f"{self.name}: unknown fields {sorted(extra)}")
        return bytes(out)


_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
Compiled = tuple[
    struct.Struct | None,
    tuple[str, ...],
    tuple[str, ...],
    tuple[tuple[str, int], ...],
    tuple[tuple[int, bytes], ...],
]


def _compile(fields: Sequence[Field], endian: Endian) -> Compiled:
    """The struct that reads and writes ``fields`` at once, with the name of each item (a
    reserved range is named ``""``), the integer fields, the byte areas with their sizes, and
    the item index and zero value of each reserved range; no struct when an integer is of a
    width struct has no code for."""
    codes: list[str] = []
    names: list[str] = []
    ints: list[str] = []
    areas: list[tuple[str, int]] = []
    zeros: list[tuple[int, bytes]] = []
    for field in fields:
        if field.kind == "uint":
            if field.size not in _STRUCT_CODES:
                return None, (), (), (), ()
            codes.append(_STRUCT_CODES[field.size])
            ints.append(field.name)
        elif field.kind == "bytes":
            codes.append(f"{field.size}s")
            areas.append((field.name, field.size))
        else:
            codes.append(f"{field.size}s")
            zeros.append((len(names), bytes(field.size)))
        names.append(field.name if field.kind != "reserved" else "")
    compiled = struct.Struct(("<" if endian == "little" else ">") + "".join(codes))
    return compiled, tuple(names), tuple(ints), tuple(areas), tuple(zeros)
