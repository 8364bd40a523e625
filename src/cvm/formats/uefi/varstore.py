"""The OVMF NV variable store (``OVMF_VARS*.fd``): firmware volume, variable store, records.

edk2 ``MdePkg/Include/Pi/PiFirmwareVolume.h`` (EFI_FIRMWARE_VOLUME_HEADER, PI 1.7 vol. 3
§3.2.1), ``MdeModulePkg/Include/Guid/VariableFormat.h`` (VARIABLE_STORE_HEADER,
AUTHENTICATED_VARIABLE_HEADER, variable states) and ``SystemNvDataGuid.h`` (the fault-tolerant
write working block header). A record is live when its State is VAR_ADDED (0x3F) or
VAR_ADDED & VAR_IN_DELETED_TRANSITION (0x3E); records are 4-byte aligned and the list ends at the
first header whose StartId is not 0x55AA. Writing keeps the firmware volume header and every byte
after the variable store (FTW working block and spare area) and rewrites the store compacted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import (
    EDKII_WORKING_BLOCK_SIGNATURE,
    EFI_AUTHENTICATED_VARIABLE,
    EFI_SYSTEM_NV_DATA_FV,
)
from cvm.formats.uefi.variable import EfiVariable, decode_name, encode_name
from cvm.wire import Guid, Layout, raw, reserved, u8, u16, u32, u64
from cvm.wire.layout import Value

FIRMWARE_VOLUME_HEADER = Layout("EFI_FIRMWARE_VOLUME_HEADER", 0x48, [
    raw("zero_vector", 0x00, 16),
    raw("file_system_guid", 0x10, 16),
    u64("fv_length", 0x20),
    raw("signature", 0x28, 4),
    u32("attributes", 0x2C),
    u16("header_length", 0x30),
    u16("checksum", 0x32),
    u16("ext_header_offset", 0x34),
    reserved(0x36, 1),
    u8("revision", 0x37),
    u32("num_blocks", 0x38),
    u32("block_length", 0x3C),
    reserved(0x40, 8),
])
VARIABLE_STORE_HEADER = Layout("VARIABLE_STORE_HEADER", 0x1C, [
    raw("signature", 0x00, 16),
    u32("size", 0x10),
    u8("format", 0x14),
    u8("state", 0x15),
    u16("reserved", 0x16),
    u32("reserved1", 0x18),
])
AUTHENTICATED_VARIABLE_HEADER = Layout("AUTHENTICATED_VARIABLE_HEADER", 0x3C, [
    u16("start_id", 0x00),
    u8("state", 0x02),
    u8("reserved", 0x03),
    u32("attributes", 0x04),
    u64("monotonic_count", 0x08),
    raw("timestamp", 0x10, 16),
    u32("pub_key_index", 0x20),
    u32("name_size", 0x24),
    u32("data_size", 0x28),
    raw("vendor_guid", 0x2C, 16),
])
FTW_WORKING_BLOCK_HEADER = Layout("EFI_FAULT_TOLERANT_WORKING_BLOCK_HEADER", 0x20, [
    raw("signature", 0x00, 16),
    u32("crc", 0x10),
    u8("state", 0x14),
    raw("reserved", 0x15, 3),
    u64("write_queue_size", 0x18),
])
FVH_SIGNATURE = b"_FVH"
VARIABLE_DATA = 0x55AA
VAR_ADDED = 0x3F
VAR_IN_DELETED_TRANSITION = 0xFE
# An update interrupted between writing the new record and deleting the old one leaves both.
VAR_ADDED_IN_DELETED_TRANSITION = VAR_ADDED & VAR_IN_DELETED_TRANSITION
LIVE_STATES = (VAR_ADDED, VAR_ADDED_IN_DELETED_TRANSITION)
VARIABLE_STORE_FORMATTED = 0x5A
VARIABLE_STORE_HEALTHY = 0xFE
ERASED = 0xFF
# Geometry of the 4 MiB OVMF build's 540672-byte varstore (OvmfPkg/OvmfPkgDefines.fdf.inc).
OVMF_4M_FV_LENGTH = 0x84000
OVMF_4M_STORE_END = 0x40000
OVMF_4M_FTW_WORKING = 0x41000
OVMF_4M_FTW_WORKING_SIZE = 0x1000
OVMF_FV_ATTRIBUTES = 0x4FEFF
BLOCK_SIZE = 0x1000


def align4(value: int) -> int:
    return (value + 3) & ~3


def fv_checksum_ok(header: bytes) -> bool:
    return sum(int.from_bytes(header[i : i + 2], "little") for i in range(0, len(header), 2)) \
        & 0xFFFF == 0


@dataclass(frozen=True)
class VariableRecord:
    """One AUTHENTICATED_VARIABLE_HEADER record and where it sits in the file."""

    offset: int
    state: int
    variable: EfiVariable
    pub_key_index: int = 0

    @property
    def live(self) -> bool:
        return is_live(self.state)


@dataclass(frozen=True)
class Varstore:
    """An OVMF NV varstore image; ``variables`` are the live ones, ``records`` every record."""

    data: bytes
    store_offset: int
    store_size: int
    records: tuple[VariableRecord, ...]

    @property
    def variables(self) -> tuple[EfiVariable, ...]:
        return live_variables(self.records)

    def get(self, name: str, vendor: Guid | None = None) -> EfiVariable | None:
        """The live variable ``name`` (under ``vendor`` when given), or None."""
        return find_variable(self.records, name, vendor)

    @classmethod
    def parse(cls, data: bytes) -> Varstore:
        data = bytes(data)
        size = FIRMWARE_VOLUME_HEADER.size
        if len(data) < size + VARIABLE_STORE_HEADER.size:
            raise FormatError(f"varstore: {len(data)} bytes is too small")
        fv = FIRMWARE_VOLUME_HEADER.unpack(data[:size])
        if fv["signature"] != FVH_SIGNATURE or fv["file_system_guid"] != \
                EFI_SYSTEM_NV_DATA_FV.to_bytes():
            raise FormatError("varstore: no EFI_SYSTEM_NV_DATA firmware volume header (_FVH)")
        header_length, fv_length = fv["header_length"], fv["fv_length"]
        assert isinstance(header_length, int) and isinstance(fv_length, int)
        if header_length != size or not fv_checksum_ok(data[:size]) or fv_length > len(data):
            raise FormatError("varstore: firmware volume header length, checksum or size is bad")
        store = VARIABLE_STORE_HEADER.unpack(data[size : size + VARIABLE_STORE_HEADER.size])
        if store["signature"] != EFI_AUTHENTICATED_VARIABLE.to_bytes():
            raise FormatError("varstore: the variable store is not of authenticated variables")
        if store["format"] != VARIABLE_STORE_FORMATTED or store["state"] != \
                VARIABLE_STORE_HEALTHY:
            raise FormatError("varstore: the variable store is not formatted and healthy")
        store_size = store["size"]
        assert isinstance(store_size, int)
        if store_size < VARIABLE_STORE_HEADER.size or size + store_size > fv_length:
            raise FormatError(f"varstore: variable store size {store_size:#x} is out of range")
        return cls(data, size, store_size, _records(data, size, size + store_size))

    def with_variables(self, variables: list[EfiVariable] | tuple[EfiVariable, ...]) -> Varstore:
        """A copy whose store holds exactly ``variables`` (compacted), all else unchanged."""
        start = self.store_offset + VARIABLE_STORE_HEADER.size
        end = self.store_offset + self.store_size
        body = b"".join(_record_bytes(v) for v in variables)
        if start + len(body) > end:
            raise UsageError(
                f"varstore: {len(body)} bytes of variables do not fit the "
                f"{end - start}-byte store"
            )
        data = bytearray(self.data)
        data[start:end] = body + bytes([ERASED]) * (end - start - len(body))
        return Varstore.parse(bytes(data))

    def set(self, variable: EfiVariable) -> Varstore:
        """A copy where ``variable`` replaces the live one with its name and vendor."""
        kept = [v for v in self.variables if v.key != variable.key]
        return self.with_variables([*kept, variable])

    def to_bytes(self) -> bytes:
        return self.data

    @classmethod
    def empty_4m(cls) -> Varstore:
        """A blank varstore of the 4 MiB OVMF build (what ``OVMF_VARS_4M.fd`` holds)."""
        data = bytearray([ERASED]) * OVMF_4M_FV_LENGTH
        fv: dict[str, Value] = dict(
            zero_vector=bytes(16), file_system_guid=EFI_SYSTEM_NV_DATA_FV.to_bytes(),
            fv_length=OVMF_4M_FV_LENGTH, signature=FVH_SIGNATURE,
            attributes=OVMF_FV_ATTRIBUTES, header_length=FIRMWARE_VOLUME_HEADER.size,
            checksum=0, ext_header_offset=0, revision=2,
            num_blocks=OVMF_4M_FV_LENGTH // BLOCK_SIZE, block_length=BLOCK_SIZE,
        )
        header = FIRMWARE_VOLUME_HEADER.pack(fv)
        fv["checksum"] = -sum(int.from_bytes(header[i : i + 2], "little")
                              for i in range(0, len(header), 2)) & 0xFFFF
        header = FIRMWARE_VOLUME_HEADER.pack(fv)
        store = VARIABLE_STORE_HEADER.pack(dict(
            signature=EFI_AUTHENTICATED_VARIABLE.to_bytes(),
            size=OVMF_4M_STORE_END - len(header), format=VARIABLE_STORE_FORMATTED,
            state=VARIABLE_STORE_HEALTHY, reserved=0, reserved1=0,
        ))
        data[: len(header) + len(store)] = header + store
        working: dict[str, Value] = dict(
            signature=EDKII_WORKING_BLOCK_SIGNATURE.to_bytes(), crc=0xFFFFFFFF, state=ERASED,
            reserved=b"\xff" * 3, write_queue_size=OVMF_4M_FTW_WORKING_SIZE - 0x20,
        )
        working["crc"] = zlib.crc32(FTW_WORKING_BLOCK_HEADER.pack(working))
        working["state"] = 0xFE
        ftw = FTW_WORKING_BLOCK_HEADER.pack(working)
        data[OVMF_4M_FTW_WORKING : OVMF_4M_FTW_WORKING + len(ftw)] = ftw
        return cls.parse(bytes(data))


def is_live(state: int) -> bool:
    """Whether a record in ``state`` holds a variable (added, perhaps in deleted transition)."""
    return state in LIVE_STATES


def live_variables(records: tuple[VariableRecord, ...]) -> tuple[EfiVariable, ...]:
    """The variables the firmware sees, in store order.

    A record in deleted transition whose name and vendor also have a VAR_ADDED record is the
    old value of an interrupted update: edk2's variable driver skips it (``FindVariableEx``,
    ``VariableServiceGetNextVariableInternal``), and so does this.
    """
    added = {r.variable.key for r in records if r.state == VAR_ADDED}
    return tuple(
        r.variable for r in records
        if r.state == VAR_ADDED
        or (r.state == VAR_ADDED_IN_DELETED_TRANSITION and r.variable.key not in added)
    )


def find_variable(
    records: tuple[VariableRecord, ...], name: str, vendor: Guid | None
) -> EfiVariable | None:
    """The variable ``name`` as edk2's ``FindVariableEx`` picks it: the first VAR_ADDED
    record, else the last one in deleted transition, else None."""
    in_transition = None
    for record in records:
        variable = record.variable
        if variable.name != name or vendor not in (None, variable.vendor):
            continue
        if record.state == VAR_ADDED:
            return variable
        if record.state == VAR_ADDED_IN_DELETED_TRANSITION:
            in_transition = variable
    return in_transition


def _record_bytes(variable: EfiVariable) -> bytes:
    name = encode_name(variable.name) + b"\0\0"
    header = AUTHENTICATED_VARIABLE_HEADER.pack(dict(
        start_id=VARIABLE_DATA, state=VAR_ADDED, reserved=0, attributes=variable.attributes,
        monotonic_count=variable.monotonic_count, timestamp=variable.timestamp.to_bytes(),
        pub_key_index=0, name_size=len(name), data_size=len(variable.data),
        vendor_guid=variable.vendor.to_bytes(),
    ))
    record = header + name + variable.data
    return record.ljust(align4(len(record)), b"\xff")


def _records(data: bytes, store_start: int, store_end: int) -> tuple[VariableRecord, ...]:
    records = []
    offset = align4(store_start + VARIABLE_STORE_HEADER.size)
    size = AUTHENTICATED_VARIABLE_HEADER.size
    while offset + size <= store_end:
        fields = AUTHENTICATED_VARIABLE_HEADER.unpack(data[offset : offset + size])
        if fields["start_id"] != VARIABLE_DATA:
            break
        ints = {k: v for k, v in fields.items() if isinstance(v, int)}
        name_end = offset + size + ints["name_size"]
        data_end = name_end + ints["data_size"]
        if data_end > store_end or ints["name_size"] % 2:
            raise FormatError(f"varstore: variable record at {offset:#x} overruns the store")
        timestamp = fields["timestamp"]
        vendor = fields["vendor_guid"]
        assert isinstance(timestamp, bytes) and isinstance(vendor, bytes)
        variable = EfiVariable(
            name=decode_name(data[offset + size : name_end]),
            vendor=Guid.from_bytes(vendor),
            attributes=ints["attributes"],
            data=data[name_end:data_end],
            timestamp=EfiTime.from_bytes(timestamp),
            monotonic_count=ints["monotonic_count"],
        )
        records.append(VariableRecord(offset, ints["state"], variable, ints["pub_key_index"]))
        offset = align4(data_end)
    return tuple(records)

