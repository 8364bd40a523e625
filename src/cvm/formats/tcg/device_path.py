"""EFI device paths as logged in UEFI_IMAGE_LOAD_EVENT (and Boot#### load options).

UEFI Specification 2.10, section 10.2 (EFI_DEVICE_PATH_PROTOCOL: ``u8 Type | u8 SubType |
u16 Length`` then node data; End node Type 0x7F, SubType 0xFF entire / 0x01 instance) and
section 10.6.1.6 (text forms). Nodes whose text form cvm does not render show as
``Path(type,subtype,hexdata)``, the generic form of section 10.6.1.6. The node list keeps the
bytes exactly, so a path written back is the path read.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Guid, Reader, Writer

NODE_HEADER_SIZE = 4
HARDWARE, ACPI, MESSAGING, MEDIA, BBS, END = 0x01, 0x02, 0x03, 0x04, 0x05, 0x7F
END_ENTIRE, END_INSTANCE = 0xFF, 0x01
PCI_ROOT_HID = 0x0A0341D0  # EISA "PNP0A03"
PCIE_ROOT_HID = 0x0A0841D0  # EISA "PNP0A08"


@dataclass(frozen=True)
class DevicePathNode:
    """One device-path node: type, subtype and the data after the 4-byte header."""

    type: int
    subtype: int
    data: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.type <= 0xFF and 0 <= self.subtype <= 0xFF):
            raise UsageError("device path node: type and subtype are bytes")
        if len(self.data) + NODE_HEADER_SIZE > 0xFFFF:
            raise UsageError("device path node: longer than 65535 bytes")

    def to_bytes(self) -> bytes:
        writer = Writer().u8(self.type).u8(self.subtype)
        return writer.u16(len(self.data) + NODE_HEADER_SIZE).put(self.data).to_bytes()

    def to_text(self) -> str:
        key = (self.type, self.subtype)
        data = self.data
        try:
            if key == (HARDWARE, 0x01) and len(data) == 2:
                return f"Pci({data[1]:#x},{data[0]:#x})"
            if key == (ACPI, 0x01) and len(data) == 8:
                hid = int.from_bytes(data[:4], "little")
                uid = int.from_bytes(data[4:], "little")
                if hid == PCI_ROOT_HID:
                    return f"PciRoot({uid:#x})"
                if hid == PCIE_ROOT_HID:
                    return f"PcieRoot({uid:#x})"
                return f"Acpi({hid:#x},{uid:#x})"
            if key == (MEDIA, 0x01) and len(data) == 38:
                return self._hard_drive_text()
            if key == (MEDIA, 0x04):
                return data.decode("utf-16-le").rstrip("\0")
            if key in ((MEDIA, 0x06), (MEDIA, 0x07)) and len(data) == 16:
                name = "FvFile" if self.subtype == 0x06 else "Fv"
                return f"{name}({Guid.from_bytes(data)})"
            if key == (MEDIA, 0x08) and len(data) == 16:
                start = int.from_bytes(data[:8], "little")
                end = int.from_bytes(data[8:], "little")
                return f"Offset({start:#x},{end:#x})"
            if key == (END, END_ENTIRE):
                return ""
            if key == (END, END_INSTANCE):
                return ","
        except (UnicodeDecodeError, FormatError):
            pass
        return f"Path({self.type},{self.subtype},{data.hex()})"

    def _hard_drive_text(self) -> str:
        data = self.data
        number = int.from_bytes(data[0:4], "little")
        start = int.from_bytes(data[4:12], "little")
        size = int.from_bytes(data[12:20], "little")
        signature, signature_type = data[20:36], data[37]
        if signature_type == 0x02:
            return f"HD({number},GPT,{Guid.from_bytes(signature)},{start:#x},{size:#x})"
        if signature_type == 0x01:
            mbr = int.from_bytes(signature[:4], "little")
            return f"HD({number},MBR,{mbr:#x},{start:#x},{size:#x})"
        return f"HD({number},{signature_type},0,{start:#x},{size:#x})"


@dataclass(frozen=True)
class DevicePath:
    """A device path as a sequence of nodes (usually ending with the End node)."""

    nodes: tuple[DevicePathNode, ...]

    @classmethod
    def parse(cls, data: bytes) -> DevicePath:
        reader = Reader(data, "EFI device path")
        nodes = []
        while reader.remaining:
            node_type = reader.u8("Type")
            subtype = reader.u8("SubType")
            length = reader.u16("Length")
            if length < NODE_HEADER_SIZE:
                raise reader.fail(f"node length {length} is shorter than its header")
            nodes.append(DevicePathNode(node_type, subtype, reader.take(length - 4, "node")))
        return cls(tuple(nodes))

    @classmethod
    def file_path(cls, path: str) -> DevicePath:
        """A media file-path node (UEFI 2.10, 10.3.5.4) for ``path`` plus the End node."""
        node = DevicePathNode(MEDIA, 0x04, (path + "\0").encode("utf-16-le"))
        return cls((node, END_NODE))

    def to_bytes(self) -> bytes:
        return b"".join(node.to_bytes() for node in self.nodes)

    def to_text(self) -> str:
        parts: list[str] = []
        for node in self.nodes:
            text = node.to_text()
            if text == ",":
                parts.append(",")
            elif text:
                parts.append(text if not parts or parts[-1] == "," else "/" + text)
        return "".join(parts)


END_NODE = DevicePathNode(END, END_ENTIRE, b"")
