"""The clear ESP (:mod:`cvm.disk.esp`): its size rule, the boot-chain tree it takes, the FAT32
it writes at a byte offset of an image (read back by fsck.fat, minfo and mtools), and the errors
of the tools it runs."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.disk.esp import (
    DEFAULT_LOADER,
    MIN_ESP_SIZE,
    boot_files,
    find_tool,
    fixed_time,
    list_esp,
    run_tool,
    serial_options,
    write_esp,
)
from cvm.errors import ExternalToolError, UsageError

MIB = 1 << 20
SIZE_MESSAGE = "^" + re.escape("the ESP needs at least 33 MiB on sector bounds") + "$"


def _tree(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    (boot / "EFI" / "BOOT").mkdir(parents=True)
    (boot / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ loader")
    (boot / "EFI" / "debian" / "fonts").mkdir(parents=True)
    (boot / "EFI" / "debian" / "grubx64.efi").write_bytes(b"MZ grub")
    (boot / "EFI" / "debian" / "fonts" / "unicode.pf2").write_bytes(b"font" * 1000)
    (boot / "loader.conf").write_bytes(b"timeout 0\n")
    return boot


def test_the_size_rule() -> None:
    assert MIN_ESP_SIZE == 33 * MIB  # 65525 clusters of 512 bytes, rounded up to whole MiB
    assert Path("EFI/BOOT/BOOTX64.EFI") == DEFAULT_LOADER


@pytest.mark.parametrize(("offset", "size"), [
    (MIB, MIN_ESP_SIZE - 512), (MIB + 1, MIN_ESP_SIZE), (MIB, MIN_ESP_SIZE + 1),
    (MIB + 256, 40 * MIB), (0, 0)])
def test_an_esp_off_the_size_rule_is_refused(tmp_path: Path, offset: int, size: int) -> None:
    image = tmp_path / "disk.img"
    with pytest.raises(UsageError, match=SIZE_MESSAGE):
        write_esp(image, offset, size, _tree(tmp_path))
    assert not image.exists()


def test_the_boot_tree_must_be_a_directory_holding_the_loader(tmp_path: Path) -> None:
    with pytest.raises(OSError) as missing:
        boot_files(tmp_path / "absent")
    assert (missing.value.errno, missing.value.filename) == (errno.ENOENT,
                                                             str(tmp_path / "absent"))
    assert missing.value.strerror == "No such file or directory (the boot-chain directory)"
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError) as not_dir:
        boot_files(tmp_path / "file")
    assert not_dir.value.strerror == "Not a directory (the boot-chain directory)"
    empty = tmp_path / "empty"
    (empty / "EFI" / "BOOT" / "BOOTX64.EFI").mkdir(parents=True)  # a directory, not the file
    (empty / "EFI" / "BOOT" / "grubx64.efi").write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as no_loader:
        boot_files(empty)
    assert no_loader.value.strerror == (
        "No EFI/BOOT/BOOTX64.EFI (the removable-media loader) in the boot-chain directory")
    assert (no_loader.value.errno, no_loader.value.filename) == (errno.ENOENT, str(empty))


def test_the_loader_is_found_in_any_case_and_files_come_sorted(tmp_path: Path) -> None:
    boot = tmp_path / "lower"
    (boot / "efi" / "boot").mkdir(parents=True)
    (boot / "efi" / "boot" / "bootx64.efi").write_bytes(b"MZ")
    (boot / "a.txt").write_bytes(b"a")
    (boot / "efi" / "boot" / "sub").mkdir()
    assert boot_files(boot) == [Path("a.txt"), Path("efi/boot/bootx64.efi")]
    assert boot_files(_tree(tmp_path / "upper")) == [
        Path("EFI/BOOT/BOOTX64.EFI"), Path("EFI/debian/fonts/unicode.pf2"),
        Path("EFI/debian/grubx64.efi"), Path("loader.conf")]


def _minfo(image: Path, offset: int, require_tool: Callable[[str], str]) -> str:
    return run_tool("minfo", "-i", f"{image}@@{offset}", "::")


@pytest.mark.interop
def test_the_fat32_lies_at_its_offset_with_every_file(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd", "mdir", "minfo", "fsck.fat", "mtype"):
        require_tool(tool)
    offset, size = 3 * MIB, 34 * MIB
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * (offset + size + MIB))
    progress: list[str] = []
    boot = _tree(tmp_path)
    files = write_esp(image, offset, size, boot, label="A-LONG-LABEL-TEXT",
                      progress=progress.append)
    expected = ["EFI/BOOT/BOOTX64.EFI", "EFI/debian/fonts/unicode.pf2", "EFI/debian/grubx64.efi",
                "loader.conf"]
    assert [f.as_posix() for f in files] == expected and progress == expected
    data = image.read_bytes()
    assert data[:offset] == b"\xee" * offset and data[offset + size :] == b"\xee" * MIB
    esp = tmp_path / "esp.bin"
    esp.write_bytes(data[offset : offset + size])
    subprocess.run([require_tool("fsck.fat"), "-n", str(esp)], check=True, capture_output=True)
    info = _minfo(image, offset, require_tool)
    assert "\nhidden sectors: 6144\n" in info  # the partition's start, in sectors
    assert "\nbig size: 69632 sectors\n" in info and 'disk type="FAT32   "' in info
    assert "\nreserved (boot) sectors: 32\n" in info
    assert 'disk label="A-LONG-LABE"' in info  # 11 characters at most
    assert sorted(list_esp(image, offset)) == ["/" + name for name in expected]
    for name in expected:
        shown = subprocess.run([require_tool("mtype"), "-i", f"{image}@@{offset}", f"::/{name}"],
                               capture_output=True, check=True, env={"MTOOLS_SKIP_CHECK": "1"})
        assert shown.stdout == (boot / name).read_bytes()


@pytest.mark.interop
def test_the_default_label_and_no_progress(tmp_path: Path,
                                          require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd", "minfo"):
        require_tool(tool)
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(MIB + MIN_ESP_SIZE))
    boot = tmp_path / "boot"
    (boot / "EFI" / "BOOT").mkdir(parents=True)
    (boot / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ")
    assert write_esp(image, MIB, MIN_ESP_SIZE, boot) == [DEFAULT_LOADER]
    info = _minfo(image, MIB, require_tool)
    assert 'disk label="ESP        "' in info and "\nhidden sectors: 2048\n" in info
    assert list_esp(image, MIB) == ["/EFI/BOOT/BOOTX64.EFI"]


def test_a_tool_is_found_on_path_or_in_the_system_directories(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "cvm-test-tool"
    tool.write_text("#!/bin/sh\necho from path\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_tool("cvm-test-tool") == str(tool)
    if not Path("/usr/sbin/mkfs.ext4").is_file():
        pytest.skip("no /usr/sbin/mkfs.ext4 to find")
    assert find_tool("mkfs.ext4") == "/usr/sbin/mkfs.ext4"  # not on PATH: the system directory
    with pytest.raises(ExternalToolError, match="^" + re.escape(
            "the tool cvm-no-such-tool is not installed (Debian: mtools, dosfstools, "
            "e2fsprogs)") + "$"):
        find_tool("cvm-no-such-tool")


def test_a_file_that_is_not_executable_is_not_a_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    """/usr/sbin holds files that are not programs only rarely; a directory stands for one."""
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr("cvm.disk.esp._EXTRA_DIRS", ("/", "/etc"))
    assert Path("/etc/passwd").is_file()
    with pytest.raises(ExternalToolError):
        find_tool("passwd")  # /etc/passwd: a file, not executable
    with pytest.raises(ExternalToolError):
        find_tool("etc")  # /etc: executable, not a file


def test_a_tool_runs_with_its_output_or_its_first_error_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "cvm-ok": 'echo "out $MTOOLS_SKIP_CHECK $LC_ALL $CVM_KEPT $*"',
        "cvm-fails": 'echo "first problem" >&2; echo "second" >&2; exit 3',
        "cvm-fails-out": 'echo; echo "  said on stdout"; echo more; exit 4',
        "cvm-fails-silent": "exit 5",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("CVM_KEPT", "kept")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    assert run_tool("cvm-ok", "a", "b c") == "out 1 C kept a b c\n"
    # what is given is added, and wins over the environment
    assert run_tool("cvm-ok", "a", env={"CVM_KEPT": "given", "LC_ALL": "POSIX"}) == \
        "out 1 POSIX given a\n"
    for name, detail in (("cvm-fails", "first problem"), ("cvm-fails-out", "said on stdout"),
                         ("cvm-fails-silent", "exit code 5")):
        with pytest.raises(ExternalToolError, match=f"^{name} failed: {detail}$"):
            run_tool(name)


def test_an_image_too_short_for_the_esp_is_refused_before_any_write(tmp_path: Path) -> None:
    """mformat would make a file system reaching past the end of the image and succeed."""
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * (MIB + MIN_ESP_SIZE - 512))
    with pytest.raises(UsageError, match="^" + re.escape(
            f"the image {image} holds 0x21ffe00 bytes, the ESP at 0x100000 needs 0x2200000")
            + "$"):
        write_esp(image, MIB, MIN_ESP_SIZE, _tree(tmp_path))
    assert image.read_bytes() == b"\xee" * (MIB + MIN_ESP_SIZE - 512)
    with pytest.raises(FileNotFoundError):
        write_esp(tmp_path / "absent.img", MIB, MIN_ESP_SIZE, _tree(tmp_path / "other"))
    assert not (tmp_path / "absent.img").exists()


@pytest.mark.interop
def test_an_esp_over_old_bytes_is_clean_for_fsck(tmp_path: Path,
                                                 require_tool: Callable[[str], str]) -> None:
    """The reserved sectors (FSINFO and the backup boot sector's) are cleared first: mformat
    writes only its own fields of them, and old bytes there fail fsck.fat."""
    for tool in ("mformat", "mcopy", "mmd", "fsck.fat"):
        require_tool(tool)
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * (MIB + MIN_ESP_SIZE))
    write_esp(image, MIB, MIN_ESP_SIZE, _tree(tmp_path))
    esp = tmp_path / "esp.bin"
    esp.write_bytes(image.read_bytes()[MIB:])
    result = subprocess.run([require_tool("fsck.fat"), "-n", str(esp)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert image.read_bytes()[MIB + 7 * 512 : MIB + 8 * 512] == bytes(512)


def test_the_serial_and_the_time_are_options_only_when_given() -> None:
    assert serial_options(None) == []
    assert serial_options(0) == ["-N", "00000000"]
    assert serial_options(0x1234ABCD) == ["-N", "1234abcd"]
    assert serial_options(0xFFFFFFFF) == ["-N", "ffffffff"]
    for serial, shown in ((1 << 32, "0x100000000"), (-1, "-0x1")):
        with pytest.raises(UsageError) as refused:
            serial_options(serial)
        assert str(refused.value) == f"the ESP's volume serial {shown} does not fit 4 bytes"
    assert fixed_time(None) == {}
    assert fixed_time(1700000000) == {"SOURCE_DATE_EPOCH": "1700000000", "TZ": "UTC0"}


def test_a_bad_serial_is_refused_before_any_write(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * (MIB + MIN_ESP_SIZE))
    with pytest.raises(UsageError):
        write_esp(image, MIB, MIN_ESP_SIZE, _tree(tmp_path), serial=1 << 32)
    assert image.read_bytes() == b"\xee" * (MIB + MIN_ESP_SIZE)


@pytest.mark.interop
def test_a_given_serial_and_time_make_the_same_esp_at_any_time_in_any_zone(
        tmp_path: Path, require_tool: Callable[[str], str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("mformat", "mcopy", "mmd", "minfo", "mdir"):
        require_tool(tool)
    boot = _tree(tmp_path)
    images = []
    for name, zone in (("a.img", "Asia/Tokyo"), ("b.img", "America/Denver")):
        monkeypatch.setenv("TZ", zone)
        image = tmp_path / name
        image.write_bytes(bytes(MIB + MIN_ESP_SIZE))
        write_esp(image, MIB, MIN_ESP_SIZE, boot, serial=0x1234ABCD, epoch=1700000000)
        images.append(image.read_bytes())
    assert images[0] == images[1]
    assert "serial number: 1234ABCD" in _minfo(tmp_path / "a.img", MIB, require_tool)
    listing = run_tool("mdir", "-i", f"{tmp_path / 'a.img'}@@{MIB}", "-/", "::/")
    stamps = set(re.findall(r"(\d{4}-\d{2}-\d{2}) +(\d{1,2}:\d{2})", listing))
    assert stamps == {("2023-11-14", "22:13")}  # UTC, not the zone's local time


def test_a_tool_that_asks_a_question_gets_no_answer(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """mmd asks what to do when a folder exists (two in a boot tree that differ only in case):
    with the terminal's input it would wait for an answer; given none, it fails."""
    tool = tmp_path / "bin" / "cvm-asks"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\nif read answer; then echo "answered $answer"; '
                    'else echo "no answer"; fi\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")
    read_end, write_end = os.pipe()
    os.write(write_end, b"yes\n")
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)  # what the process would read: someone's answer
    try:
        said = run_tool("cvm-asks")
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_end)
    assert said == "no answer\n"


@pytest.mark.interop
def test_folders_that_differ_only_in_case_fail_instead_of_waiting(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd"):
        require_tool(tool)
    boot = _tree(tmp_path)
    (boot / "efi" / "other").mkdir(parents=True)
    (boot / "efi" / "other" / "x.efi").write_bytes(b"MZ")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(MIB + MIN_ESP_SIZE))
    with pytest.raises(ExternalToolError, match=r"^mmd failed: "):
        write_esp(image, MIB, MIN_ESP_SIZE, boot)
