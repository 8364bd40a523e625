"""MSG_KEY_REQ and MSG_KEY_RSP: a guest asks the firmware for a key bound to its launch.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §7.2 "Key Derivation",
Table 18 "MSG_KEY_REQ Message Structure" (0x20 bytes in message version 1, 0x28 with
LAUNCH_MIT_VECTOR in version 2) and Table 19 "MSG_KEY_RSP Message Structure" (0x40 bytes).
GUEST_FIELD_SELECT chooses which launch fields are mixed into the derived key (the VMPL always
is). Little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u32, u64

KEY_REQ_SIZE_V1 = 0x20
KEY_REQ_SIZE_V2 = 0x28
KEY_REQ_SIZES = {1: KEY_REQ_SIZE_V1, 2: KEY_REQ_SIZE_V2}  # MSG_VERSION -> the request's size
KEY_RSP_SIZE = 0x40
DERIVED_KEY_SIZE = 32

_V1_FIELDS = [
    u32("root_key_select", 0x00),
    reserved(0x04, 4),
    u64("guest_field_select", 0x08),
    u32("vmpl", 0x10),
    u32("guest_svn", 0x14),
    u64("tcb_version", 0x18),
]
KEY_REQ_LAYOUT_V1 = Layout("MSG_KEY_REQ", KEY_REQ_SIZE_V1, _V1_FIELDS)
KEY_REQ_LAYOUT_V2 = Layout(
    "MSG_KEY_REQ v2", KEY_REQ_SIZE_V2, [*_V1_FIELDS, u64("launch_mit_vector", 0x20)]
)
KEY_RSP_LAYOUT = Layout(
    "MSG_KEY_RSP",
    KEY_RSP_SIZE,
    [u32("status", 0x00), reserved(0x04, 0x1C), raw("derived_key", 0x20, DERIVED_KEY_SIZE)],
)


class RootKey(IntEnum):
    """ROOT_KEY_SELECT bit 0: derive from the chip's VCEK root or the migration agent's VMRK."""

    VCEK = 0
    VMRK = 1


class GuestFieldSelect(IntFlag):
    """GUEST_FIELD_SELECT bits (56860 Table 18)."""

    GUEST_POLICY = 1 << 0
    IMAGE_ID = 1 << 1
    FAMILY_ID = 1 << 2
    MEASUREMENT = 1 << 3
    GUEST_SVN = 1 << 4
    TCB_VERSION = 1 << 5
    LAUNCH_MIT_VECTOR = 1 << 6


_KNOWN_FIELDS = sum(int(flag) for flag in GuestFieldSelect)
NO_FIELDS = GuestFieldSelect(0)


class KeyStatus(IntEnum):
    """STATUS of MSG_KEY_RSP."""

    SUCCESS = 0x00
    INVALID_PARAMETERS = 0x16


def key_request_version(launch_mit_vector: int | None) -> int:
    """MSG_VERSION of a MSG_KEY_REQ: 2 when it carries LAUNCH_MIT_VECTOR (0x28 bytes), else 1."""
    return 1 if launch_mit_vector is None else 2


@dataclass(frozen=True)
class KeyRequest:
    """What the derived key is bound to."""

    guest_field_select: GuestFieldSelect = NO_FIELDS
    root_key_select: RootKey = RootKey.VCEK
    vmpl: int = 0
    guest_svn: int = 0
    tcb_version: int = 0
    launch_mit_vector: int | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.vmpl < 1 << 32 and 0 <= self.guest_svn < 1 << 32):
            raise UsageError("VMPL and GUEST_SVN are u32 values")
        if not 0 <= self.tcb_version < 1 << 64:
            raise UsageError("TCB_VERSION is a u64")
        if (
            GuestFieldSelect.LAUNCH_MIT_VECTOR in self.guest_field_select
            and self.launch_mit_vector is None
        ):
            raise UsageError("LAUNCH_MIT_VECTOR can only be selected in a version 2 request")

    @property
    def msg_version(self) -> int:
        """The MSG_VERSION of this request (:func:`key_request_version`)."""
        return key_request_version(self.launch_mit_vector)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRequest:
        if len(data) == KEY_REQ_SIZE_V1:
            values = KEY_REQ_LAYOUT_V1.unpack(data)
        elif len(data) == KEY_REQ_SIZE_V2:
            values = KEY_REQ_LAYOUT_V2.unpack(data)
        else:
            raise FormatError(f"MSG_KEY_REQ: expected 0x20 or 0x28 bytes, got {len(data):#x}")
        ints = {k: v for k, v in values.items() if isinstance(v, int)}
        if ints["root_key_select"] > 1:
            raise FormatError("MSG_KEY_REQ: ROOT_KEY_SELECT bits 31:1 are reserved")
        select = ints["guest_field_select"]
        if select & ~_KNOWN_FIELDS:
            raise FormatError(f"MSG_KEY_REQ: GUEST_FIELD_SELECT {select:#x} sets reserved bits")
        mit = ints.get("launch_mit_vector")
        if mit is None and select & GuestFieldSelect.LAUNCH_MIT_VECTOR:
            raise FormatError("MSG_KEY_REQ: LAUNCH_MIT_VECTOR selected in a version 1 request")
        return cls(
            GuestFieldSelect(select),
            RootKey(ints["root_key_select"]),
            ints["vmpl"],
            ints["guest_svn"],
            ints["tcb_version"],
            mit,
        )

    def to_bytes(self) -> bytes:
        values: dict[str, int | bytes] = {
            "root_key_select": int(self.root_key_select),
            "guest_field_select": int(self.guest_field_select),
            "vmpl": self.vmpl,
            "guest_svn": self.guest_svn,
            "tcb_version": self.tcb_version,
        }
        if self.launch_mit_vector is None:
            return KEY_REQ_LAYOUT_V1.pack(values)
        return KEY_REQ_LAYOUT_V2.pack({**values, "launch_mit_vector": self.launch_mit_vector})


@dataclass(frozen=True)
class KeyResponse:
    """The status and the 32-byte derived key (zero on failure)."""

    status: int
    derived_key: bytes = bytes(DERIVED_KEY_SIZE)

    def __post_init__(self) -> None:
        if len(self.derived_key) != DERIVED_KEY_SIZE:
            raise UsageError("a derived key is 32 bytes")
        if not 0 <= self.status < 1 << 32:
            raise UsageError("STATUS is a u32")

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyResponse:
        values = KEY_RSP_LAYOUT.unpack(data)
        status, key = values["status"], values["derived_key"]
        if not isinstance(status, int) or not isinstance(key, bytes):
            raise FormatError("MSG_KEY_RSP: malformed fields")
        if status != KeyStatus.SUCCESS and any(key):
            raise FormatError("MSG_KEY_RSP: a failed response carries a key")
        return cls(status, key)

    def to_bytes(self) -> bytes:
        return KEY_RSP_LAYOUT.pack({"status": self.status, "derived_key": self.derived_key})
