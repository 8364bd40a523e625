"""EFI device paths as logged (UEFI 2.10 sections 10.2, 10.3, 10.6.1.6), check by check: the
node limits, the bytes, the refusal of a node shorter than its header, and the text form of
every node kind cvm renders (the appraisal names the image it explains by this text)."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.formats.tcg.device_path import END_NODE, DevicePath, DevicePathNode
from cvm.wire import Guid

GUID = Guid.parse("7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def test_node_limits() -> None:
    for kind, subtype in ((256, 0), (0, 256), (-1, 0), (0, -1)):
        with pytest.raises(UsageError) as caught:
            DevicePathNode(kind, subtype, b"")
        assert str(caught.value) == "device path node: type and subtype are bytes"
    largest = DevicePathNode(0xFF, 0xFF, bytes(0xFFFF - 4))
    assert largest.to_bytes()[:4] == b"\xff\xff\xff\xff"
    with pytest.raises(UsageError) as caught:
        DevicePathNode(1, 1, bytes(0xFFFF - 3))
    assert str(caught.value) == "device path node: longer than 65535 bytes"


def test_node_bytes_and_parse() -> None:
    path = DevicePath((DevicePathNode(1, 1, b"\x00\x02"), DevicePathNode(4, 8, bytes(16)),
                       END_NODE))
    data = path.to_bytes()
    assert data == (b"\x01\x01\x06\x00\x00\x02" + b"\x04\x08\x14\x00" + bytes(16)
                    + b"\x7f\xff\x04\x00")
    assert DevicePath.parse(data) == path
    assert DevicePath.parse(b"") == DevicePath(())


def test_parse_refusals_name_the_field_and_offset() -> None:
    with pytest.raises(FormatError) as caught:
        DevicePath.parse(b"\x7f\xff\x04\x00" + b"\x01\x01\x03\x00")
    assert str(caught.value) == ("EFI device path: node length 3 is shorter than its header "
                                 "(at offset 0x8)")
    for data, field, at, size in ((b"\x01", "SubType", 1, 1), (b"\x01\x01\x06", "Length", 2, 2),
                                  (b"\x01\x01\x06\x00\x00", "node", 4, 2)):
        with pytest.raises(TruncatedError) as caught:
            DevicePath.parse(data)
        assert str(caught.value) == (f"EFI device path: {field} needs {size} bytes at offset "
                                     f"{at:#x}, only {len(data) - at} left")


def test_file_path() -> None:
    path = DevicePath.file_path("\\EFI\\BOOT\\BOOTX64.EFI")
    assert path.nodes == (DevicePathNode(4, 4, "\\EFI\\BOOT\\BOOTX64.EFI\0".encode("utf-16-le")),
                          END_NODE)
    assert path.to_text() == "\\EFI\\BOOT\\BOOTX64.EFI"


@pytest.mark.parametrize(("node", "text"), [
    (DevicePathNode(1, 1, b"\x01\x1f"), "Pci(0x1f,0x1)"),
    (DevicePathNode(1, 1, b"\x01"), "Path(1,1,01)"),
    (DevicePathNode(1, 2, b"\x01\x1f"), "Path(1,2,011f)"),
    (DevicePathNode(2, 1, _u32(0x0A0341D0) + _u32(3)), "PciRoot(0x3)"),
    (DevicePathNode(2, 1, _u32(0x0A0841D0) + _u32(0)), "PcieRoot(0x0)"),
    (DevicePathNode(2, 1, _u32(0x0A0641D0) + _u32(1)), "Acpi(0xa0641d0,0x1)"),
    (DevicePathNode(2, 1, _u32(0x0A0341D0)), "Path(2,1,d041030a)"),
    (DevicePathNode(2, 2, _u32(0x0A0341D0) + _u32(3)), "Path(2,2,d041030a03000000)"),
    (DevicePathNode(4, 4, "a\\b.efi\0".encode("utf-16-le")), "a\\b.efi"),
    (DevicePathNode(4, 4, "x".encode("utf-16-le")), "x"),
    (DevicePathNode(4, 4, b"\x00\xd8"), "Path(4,4,00d8)"),
    (DevicePathNode(4, 6, GUID.to_bytes()), f"FvFile({GUID})"),
    (DevicePathNode(4, 7, GUID.to_bytes()), f"Fv({GUID})"),
    (DevicePathNode(4, 7, GUID.to_bytes()[:15]), f"Path(4,7,{GUID.to_bytes()[:15].hex()})"),
    (DevicePathNode(4, 5, GUID.to_bytes()), f"Path(4,5,{GUID.to_bytes().hex()})"),
    (DevicePathNode(4, 8, _u64(0x1000) + _u64(0x1FFF)), "Offset(0x1000,0x1fff)"),
    (DevicePathNode(4, 8, _u64(0x1000)), "Path(4,8,0010000000000000)"),
    (DevicePathNode(0x7F, 0xFF, b""), ""),
    (DevicePathNode(0x7F, 0x01, b""), ","),
    (DevicePathNode(0x7F, 0x02, b""), "Path(127,2,)"),
    (DevicePathNode(3, 0x12, b"\x01\x02"), "Path(3,18,0102)"),
])
def test_node_text(node: DevicePathNode, text: str) -> None:
    assert node.to_text() == text


def _hard_drive(signature: bytes, signature_type: int, length: int = 38) -> DevicePathNode:
    data = _u32(2) + _u64(0x800) + _u64(0x100000) + signature + bytes([2, signature_type])
    return DevicePathNode(4, 1, data[:length])


def test_hard_drive_text() -> None:
    assert _hard_drive(GUID.to_bytes(), 2).to_text() == f"HD(2,GPT,{GUID},0x800,0x100000)"
    mbr = _u32(0xDEADBEEF) + bytes(12)
    assert _hard_drive(mbr, 1).to_text() == "HD(2,MBR,0xdeadbeef,0x800,0x100000)"
    assert _hard_drive(mbr, 0).to_text() == "HD(2,0,0,0x800,0x100000)"
    assert _hard_drive(mbr, 3).to_text() == "HD(2,3,0,0x800,0x100000)"
    short = _hard_drive(GUID.to_bytes(), 2, 37)
    assert short.to_text() == f"Path(4,1,{short.data.hex()})"


def test_path_text_joins_nodes_and_instances() -> None:
    root = DevicePathNode(2, 1, _u32(0x0A0341D0) + _u32(0))
    pci = DevicePathNode(1, 1, b"\x00\x02")
    end_instance = DevicePathNode(0x7F, 0x01, b"")
    path = DevicePath((root, pci, end_instance, root, END_NODE))
    assert path.to_text() == "PciRoot(0x0)/Pci(0x2,0x0),PciRoot(0x0)"
    assert DevicePath((END_NODE, root)).to_text() == "PciRoot(0x0)"
    assert DevicePath(()).to_text() == ""


def test_type_and_subtype_zero_are_bytes_too() -> None:
    assert DevicePathNode(0, 0, b"").to_bytes() == b"\0\0\x04\0"
    assert DevicePathNode(0, 0xFF, b"").to_text() == "Path(0,255,)"
    assert DevicePathNode(0xFF, 0, b"").to_text() == "Path(255,0,)"


def test_a_file_path_keeps_its_last_character() -> None:
    assert DevicePath.file_path("\\EFI\\X").to_text() == "\\EFI\\X"


def test_hard_drive_fields_do_not_run_into_each_other() -> None:
    data = (_u32(7) + _u64(0x1122334455667788) + _u64(0x99AABBCCDDEEFF01)
            + _u32(0x12345678) + b"\xab" * 12 + bytes([1, 1]))
    node = DevicePathNode(4, 1, data)
    assert node.to_text() == "HD(7,MBR,0x12345678,0x1122334455667788,0x99aabbccddeeff01)"
