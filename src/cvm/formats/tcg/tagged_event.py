"""TCG_PCClientTaggedEvent: the event data of EV_EVENT_TAG.

PFP 1.05 r23, section 10.4 (structure TCG_PCClientTaggedEvent): ``u32 taggedEventID |
u32 taggedEventDataSize | u8 taggedEventData[taggedEventDataSize]``, little-endian. The Linux
EFI stub logs its initrd (ID 0x8F3B22EC, "Linux initrd") and load options (0x8F3B22ED,
"LOADED_IMAGE::LoadOptions") this way into PCR 9 (linux ``drivers/firmware/efi/libstub/
efistub.h``); the digest covers the measured object, not this structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.wire import Reader, Writer

LINUX_INITRD_EVENT_TAG_ID = 0x8F3B22EC
LINUX_LOAD_OPTIONS_EVENT_TAG_ID = 0x8F3B22ED


@dataclass(frozen=True)
class TaggedEvent:
    """A tagged event: an ID and opaque data (NUL-terminated text for the Linux stub's)."""

    tagged_event_id: int
    data: bytes

    @classmethod
    def parse(cls, data: bytes) -> TaggedEvent:
        reader = Reader(data, "TCG_PCClientTaggedEvent")
        tag = reader.u32("taggedEventID")
        body = reader.take(reader.u32("taggedEventDataSize"), "taggedEventData")
        reader.expect_end()
        return cls(tag, body)

    def to_bytes(self) -> bytes:
        writer = Writer().u32(self.tagged_event_id).u32(len(self.data))
        return writer.put(self.data).to_bytes()

    def text(self) -> str | None:
        """The data as text when it is printable ASCII with an optional final NUL."""
        body = self.data[:-1] if self.data.endswith(b"\0") else self.data
        if body and all(0x20 <= b < 0x7F for b in body):
            return body.decode("ascii")
        return None

    def describe(self) -> str:
        text = self.text()
        shown = repr(text) if text is not None else f"{len(self.data)} bytes"
        return f"tag {self.tagged_event_id:#010x} {shown}"

    def to_json(self) -> dict[str, object]:
        return {"kind": "TCG_PCClientTaggedEvent", "tagged_event_id": self.tagged_event_id,
                "text": self.text(), "data": self.data.hex()}
