"""The ESP as the boot stages see it: paths either way round, any case, nothing above the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import StateError, UsageError
from cvm.guest.boot.esp_files import EspFiles, normalise


def test_a_path_is_normalised_to_one_lower_case_slash_form() -> None:
    assert normalise("\\EFI\\BOOT\\BOOTX64.EFI") == "/efi/boot/bootx64.efi"
    assert normalise("EFI//./Boot/./grubx64.efi/") == "/efi/boot/grubx64.efi"
    assert normalise("/") == "/"
    with pytest.raises(UsageError) as refused:
        normalise("/EFI/../grub.cfg")
    assert str(refused.value) == "ESP path '/EFI/../grub.cfg' must not contain '..'"


def test_files_keep_their_own_names_and_are_found_in_any_case() -> None:
    files = EspFiles({"\\EFI\\BOOT\\BOOTX64.EFI": b"shim", "EFI/debian/grub.cfg/": b"cfg"})
    assert list(files) == ["/EFI/BOOT/BOOTX64.EFI", "/EFI/debian/grub.cfg"]
    assert files["/efi/boot/./bootx64.efi"] == b"shim" and len(files) == 2
    assert "/EFI/DEBIAN/GRUB.CFG" in files and 7 not in files
    assert files.is_directory("/efi/BOOT/") and files.is_directory("\\EFI")
    assert not files.is_directory("/efi/boot/bootx64.efi") and not files.is_directory("/EF")
    with pytest.raises(StateError) as missing:
        files.read("/EFI/BOOT/grubx64.efi", "shim")
    assert str(missing.value) == "shim: file /EFI/BOOT/grubx64.efi not found on the ESP"
    with pytest.raises(StateError) as missing:
        files.read("/EFI/BOOT/mmx64.efi")
    assert str(missing.value) == "the boot chain: file /EFI/BOOT/mmx64.efi not found on the ESP"
    assert list(EspFiles({"X/EFI/X": b""})) == ["/X/EFI/X"]  # names kept as given


def test_the_same_file_twice_is_refused() -> None:
    with pytest.raises(UsageError) as refused:
        EspFiles({"/EFI/BOOT/BOOTX64.EFI": b"a", "/efi/boot/bootx64.efi": b"b"})
    assert str(refused.value) == ("ESP path '/efi/boot/bootx64.efi' given twice (names are "
                                  "case-insensitive)")


def test_an_unpacked_esp_is_read_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "EFI" / "BOOT").mkdir(parents=True)
    (tmp_path / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"shim")
    (tmp_path / "EFI" / "empty").mkdir()
    files = EspFiles.from_directory(tmp_path)
    assert list(files) == ["/EFI/BOOT/BOOTX64.EFI"] and files["/efi/boot/bootx64.efi"] == b"shim"
    with pytest.raises(UsageError) as refused:
        EspFiles.from_directory(tmp_path / "nothing")
    assert str(refused.value) == f"ESP directory {tmp_path / 'nothing'} does not exist"
