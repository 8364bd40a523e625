"""EFI_LOAD_OPTION: the Boot#### data OVMF writes, byte for byte both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.tcg.device_path import DevicePath
from cvm.formats.uefi.load_option import LoadOption

# Boot0001 of a real boot of Debian's OVMF on QEMU q35 (the empty CD-ROM), read from its log
CDROM = bytes.fromhex(
    "01000000200055004500460049002000510045004d00550020004400560044002d0052004f004d00200051004d"
    "00300030003000300035002000000002010c00d041030a0000000001010600021f03120a000200ffff00007fff"
    "04004eac0881119f594d850ee21a522c59b2"
)


def test_a_real_option_parses_and_writes_back() -> None:
    option = LoadOption.parse(CDROM)
    assert option.description == "UEFI QEMU DVD-ROM QM00005 "
    assert option.file_path.to_text().startswith("PciRoot(0x0)/Pci(0x1f,0x2)")
    assert option.optional_data.hex() == "4eac0881119f594d850ee21a522c59b2"
    assert option.to_bytes() == CDROM


@given(st.integers(0, 0xFFFFFFFF), st.text(max_size=20).filter(lambda s: "\0" not in s),
       st.binary(max_size=20))
def test_round_trip(attributes: int, description: str, optional: bytes) -> None:
    option = LoadOption(attributes, description, DevicePath.file_path("\\EFI\\BOOT\\X.EFI"),
                        optional)
    assert LoadOption.parse(option.to_bytes()) == option


@pytest.mark.parametrize(("cut", "message"), [
    (3, "Attributes needs 4 bytes at offset 0x0, only 3 left"),
    (5, "FilePathListLength needs 2 bytes at offset 0x4, only 1 left"),
    (7, "Description needs 2 bytes at offset 0x6, only 1 left"),
    (20, "Description needs 2 bytes at offset 0x14, only 0 left"),
    (70, "FilePathList needs 32 bytes at offset 0x3c, only 10 left"),
])
def test_a_cut_option_names_the_field_it_ends_in(cut: int, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        LoadOption.parse(CDROM[:cut])
    assert str(caught.value) == f"EFI_LOAD_OPTION: {message}"


def test_the_optional_data_is_every_byte_after_the_path() -> None:
    assert LoadOption.parse(CDROM[:92]).optional_data == b""
    assert LoadOption.parse(CDROM[:93]).optional_data == CDROM[92:93]


def test_a_description_that_is_not_utf16_is_refused() -> None:
    lone_surrogate = (1).to_bytes(4, "little") + (0).to_bytes(2, "little") + b"\x00\xd8\0\0"
    with pytest.raises(FormatError) as caught:
        LoadOption.parse(lone_surrogate)
    assert str(caught.value) == "EFI_LOAD_OPTION: Description is not UTF-16"
