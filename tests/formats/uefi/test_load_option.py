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


@pytest.mark.parametrize("cut", [3, 7, 20, 60])
def test_truncated_options_are_format_errors(cut: int) -> None:
    with pytest.raises(FormatError):
        LoadOption.parse(CDROM[:cut])
