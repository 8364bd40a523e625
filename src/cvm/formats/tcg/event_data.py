"""Decoding the event data of a record according to its event type.

The structure per type is PFP 1.05 r23 Tables 9 and 10 ("Events", "EFI events") and section
10.4; see the module of each structure. Types whose data is free-form (EV_ACTION, EV_IPL,
EV_POST_CODE text, EV_S_CRTM_VERSION, EV_PLATFORM_CONFIG_FLAGS, ...) decode to
:class:`StringEvent`, which shows ASCII or UTF-16 text when the bytes are text and hex otherwise.
A type no table defines decodes to :class:`UnknownEvent`; every decoded value writes back the
exact bytes it came from (``to_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cvm.errors import FormatError
from cvm.formats.tcg.event_type import KNOWN_EVENT_TYPES, EventType, event_type_name
from cvm.formats.tcg.firmware_blob import FirmwareBlob, HandoffTables
from cvm.formats.tcg.gpt_data import UefiGptData
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.no_action import (
    LEGACY_SPEC_ID_SIGNATURE,
    SP800_155_SIGNATURES,
    STARTUP_LOCALITY_SIGNATURE,
    LegacySpecIdEvent,
    Sp800155Event,
    StartupLocalityEvent,
)
from cvm.formats.tcg.spec_id_event import SPEC_ID_SIGNATURE, SpecIdEvent
from cvm.formats.tcg.tagged_event import TaggedEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData

FIRMWARE_BLOB_SIZE = 16
SHOWN_BYTES = 32


class EventData(Protocol):
    """What every decoded event data offers."""

    def to_bytes(self) -> bytes: ...

    def describe(self) -> str: ...

    def to_json(self) -> dict[str, object]: ...


def _printable(text: str) -> bool:
    return text.isprintable() or all(ch.isprintable() or ch in "\t\r\n" for ch in text)


@dataclass(frozen=True)
class StringEvent:
    """Free-form event data: text (ASCII or UTF-16LE, optionally NUL-terminated) or bytes."""

    data: bytes

    def text(self) -> str | None:
        """The data as text, or None when it is not text."""
        body = self.data
        if body and body.endswith(b"\0") and b"\0" not in body[:-1]:
            body = body[:-1]
        try:
            ascii_text = body.decode("ascii")
            if _printable(ascii_text):
                return ascii_text
        except UnicodeDecodeError:
            pass
        if len(self.data) >= 2 and len(self.data) % 2 == 0:
            try:
                wide = self.data.decode("utf-16-le")
            except UnicodeDecodeError:
                return None
            wide = wide[:-1] if wide.endswith("\0") else wide
            if "\0" not in wide and _printable(wide):
                return wide
        return None

    def to_bytes(self) -> bytes:
        return self.data

    def describe(self) -> str:
        text = self.text()
        if text is not None:
            return repr(text)
        shown = self.data[:SHOWN_BYTES].hex()
        return f"{len(self.data)} bytes {shown}{'...' if len(self.data) > SHOWN_BYTES else ''}"

    def to_json(self) -> dict[str, object]:
        return {"kind": "string", "text": self.text(), "data": self.data.hex()}


@dataclass(frozen=True)
class SeparatorEvent:
    """EV_SEPARATOR data: u32 0 (success) or 1 (error), PFP section 3.3.2.2."""

    data: bytes

    @classmethod
    def parse(cls, data: bytes) -> SeparatorEvent:
        if len(data) != 4:
            raise FormatError(f"EV_SEPARATOR: expected 4 bytes of data, got {len(data)}")
        return cls(data)

    def to_bytes(self) -> bytes:
        return self.data

    def describe(self) -> str:
        value = int.from_bytes(self.data, "little")
        return {0: "separator", 1: "separator (error)"}.get(value, f"separator {value:#010x}")

    def to_json(self) -> dict[str, object]:
        return {"kind": "separator", "value": int.from_bytes(self.data, "little")}


@dataclass(frozen=True)
class SpecIdHeader:
    """The Spec ID Event03 header as decoded event data."""

    spec: SpecIdEvent

    def to_bytes(self) -> bytes:
        return self.spec.to_bytes()

    def describe(self) -> str:
        banks = ", ".join(f"{a.alg_id:#06x}/{a.digest_size}" for a in self.spec.algorithms)
        return f"Spec ID Event03, banks {banks}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "Spec ID Event03",
            "platform_class": self.spec.platform_class,
            "spec_version": f"{self.spec.spec_version_major}.{self.spec.spec_version_minor}",
            "spec_errata": self.spec.spec_errata,
            "uintn_size": self.spec.uintn_size,
            "algorithms": [
                {"alg_id": a.alg_id, "digest_size": a.digest_size} for a in self.spec.algorithms
            ],
            "vendor_info": self.spec.vendor_info.hex(),
        }


@dataclass(frozen=True)
class UnknownEvent:
    """Data of an event type that no TCG table defines."""

    event_type: int
    data: bytes

    def to_bytes(self) -> bytes:
        return self.data

    def describe(self) -> str:
        return f"unknown event type {self.event_type:#010x}, {len(self.data)} bytes"

    def to_json(self) -> dict[str, object]:
        return {"kind": "unknown", "event_type": self.event_type, "data": self.data.hex()}


@dataclass(frozen=True)
class MalformedEvent:
    """Data that does not fit the structure its event type names (a damaged or edited record),
    kept as bytes with the reason, so that a log can still be shown record by record."""

    event_type: int
    data: bytes
    problem: str

    def to_bytes(self) -> bytes:
        return self.data

    def describe(self) -> str:
        shown = self.data[:SHOWN_BYTES].hex()
        more = "..." if len(self.data) > SHOWN_BYTES else ""
        return f"malformed ({self.problem}): {len(self.data)} bytes {shown}{more}"

    def to_json(self) -> dict[str, object]:
        return {"kind": "malformed", "problem": self.problem, "data": self.data.hex()}


VARIABLE_TYPES = frozenset({
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, EventType.EV_EFI_VARIABLE_BOOT,
    EventType.EV_EFI_VARIABLE_BOOT2, EventType.EV_EFI_VARIABLE_AUTHORITY,
})
IMAGE_TYPES = frozenset({
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION, EventType.EV_EFI_BOOT_SERVICES_DRIVER,
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER,
})


def _decode_no_action(data: bytes) -> EventData:
    if data.startswith(SPEC_ID_SIGNATURE):
        return SpecIdHeader(SpecIdEvent.parse(data))
    if data.startswith(STARTUP_LOCALITY_SIGNATURE):
        return StartupLocalityEvent.parse(data)
    if data[:16] in SP800_155_SIGNATURES:
        return Sp800155Event.parse(data)
    if data.startswith(LEGACY_SPEC_ID_SIGNATURE):
        return LegacySpecIdEvent.parse(data)
    return StringEvent(data)


def _decode_post_code(data: bytes) -> EventData:
    text = StringEvent(data)
    if len(data) == FIRMWARE_BLOB_SIZE and text.text() is None:
        return FirmwareBlob.parse(data)
    return text


def _decode_blob2(data: bytes) -> EventData:
    return FirmwareBlob.parse(data, 2)


def _decode_tables2(data: bytes) -> EventData:
    return HandoffTables.parse(data, 2)


_DECODERS: dict[int, Callable[[bytes], EventData]] = {
    EventType.EV_NO_ACTION: _decode_no_action,
    EventType.EV_SEPARATOR: SeparatorEvent.parse,
    EventType.EV_EVENT_TAG: TaggedEvent.parse,
    EventType.EV_EFI_GPT_EVENT: UefiGptData.parse,
    EventType.EV_POST_CODE: _decode_post_code,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB: FirmwareBlob.parse,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _decode_blob2,
    EventType.EV_EFI_HANDOFF_TABLES: HandoffTables.parse,
    EventType.EV_EFI_HANDOFF_TABLES2: _decode_tables2,
}


def decode_event_data(event_type: int, data: bytes) -> EventData:
    """Decode ``data`` as the structure ``event_type`` carries; FormatError if it does not fit."""
    if event_type not in KNOWN_EVENT_TYPES:
        return UnknownEvent(event_type, data)
    if event_type in VARIABLE_TYPES:
        return UefiVariableData.parse(data)
    if event_type in IMAGE_TYPES:
        return UefiImageLoadEvent.parse(data)
    decoder = _DECODERS.get(event_type)
    if decoder is None:
        return StringEvent(data)
    try:
        return decoder(data)
    except FormatError as error:
        raise FormatError(f"{event_type_name(event_type)}: {error}") from None


def decode_or_malformed(event_type: int, data: bytes) -> EventData:
    """:func:`decode_event_data`, or a :class:`MalformedEvent` naming why the data does not fit."""
    try:
        return decode_event_data(event_type, data)
    except FormatError as error:
        return MalformedEvent(event_type, data, str(error))
