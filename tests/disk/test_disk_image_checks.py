"""``cvm disk build`` (:mod:`cvm.disk.disk_image`): the layout rule, what the host ends up
holding, checked by real tools — sgdisk reads the GPT, cryptsetup the LUKS2 header, e2fsck and
debugfs the root file system decrypted, fsck.fat and mtools the ESP."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.disk.disk_image import MIB, DiskLayout, build_disk, plan_layout
from cvm.disk.esp import list_esp
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import DEFAULT_DATA_OFFSET, Luks2Volume
from cvm.errors import UsageError
from cvm.wire import Guid

KDF = KdfSpec("pbkdf2", iterations=1000)
MARKER = b"cvm-plaintext-marker-" * 50


def _run(tool: str, *args: str) -> str:
    result = subprocess.run([tool, *args], capture_output=True, text=True, check=False,
                            env={**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _boot(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    (boot / "EFI" / "BOOT").mkdir(parents=True)
    (boot / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ" + bytes(3000))
    return boot


# -- the layout (no tools) -----------------------------------------------------------------------
@pytest.mark.parametrize(("data", "esp", "expected"), [
    (0, 64 * MIB, (MIB, 64 * MIB, 65 * MIB, 16 * MIB, 82 * MIB)),
    (1, 64 * MIB, (MIB, 64 * MIB, 65 * MIB, 17 * MIB, 83 * MIB)),
    (MIB, 33 * MIB, (MIB, 33 * MIB, 34 * MIB, 17 * MIB, 52 * MIB)),
    (MIB + 1, 40 * MIB, (MIB, 40 * MIB, 41 * MIB, 18 * MIB, 60 * MIB)),
])
def test_the_layout_rounds_to_mib_after_the_luks2_header(
        data: int, esp: int, expected: tuple[int, ...]) -> None:
    assert DEFAULT_DATA_OFFSET == 16 * MIB
    layout = plan_layout(data, esp)
    assert (layout.esp_offset, layout.esp_size, layout.root_offset, layout.root_size,
            layout.disk_size) == expected
    assert plan_layout(data) == plan_layout(data, 64 * MIB)


@pytest.mark.parametrize("esp", [32 * MIB, 33 * MIB - 512, 40 * MIB + 4096, 0])
def test_an_esp_size_off_the_rule_is_refused(esp: int) -> None:
    with pytest.raises(UsageError, match="^" + re.escape(
            "ESP size must be a whole number of MiB, at least 33") + "$"):
        plan_layout(0, esp)


def test_the_table_places_both_partitions_on_their_sectors() -> None:
    layout = DiskLayout(MIB, 40 * MIB, 41 * MIB, 17 * MIB, 59 * MIB)
    ids = [Guid.parse(f"{n}1234567-89ab-4cde-8f01-23456789abcd") for n in (1, 2, 3)]
    table = layout.table(*ids)
    esp, root = table.entries[:2]
    assert (esp.starting_lba, esp.ending_lba, esp.name) == (2048, 83967, "EFI System Partition")
    assert (root.starting_lba, root.ending_lba, root.name) == (83968, 118783, "root")
    assert (table.disk_guid, esp.unique_partition_guid, root.unique_partition_guid) == tuple(ids)
    assert table.total_lbas == 59 * MIB // 512 and root.ending_lba <= table.last_usable_lba


# -- a whole build, checked by the tools ---------------------------------------------------------
def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_bytes(MARKER)
    (tree / "var" / "lib").mkdir(parents=True)
    (tree / "var" / "lib" / "blob").write_bytes(os.urandom(20 * MIB))
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(40 * MIB))
    (tree / "var" / "big-link").symlink_to(outside)  # a link: its target is not in the tree
    return tree


@pytest.mark.interop
def test_a_tree_becomes_an_ext4_root_sized_for_it(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd", "mkfs.ext4", "e2fsck", "debugfs", "cryptsetup"):
        require_tool(tool)
    out = tmp_path / "disk.img"
    key = bytes(range(64))
    done: list[int] = []
    result = build_disk(out, _tree(tmp_path), _boot(tmp_path), b"pw", KDF, esp_size=33 * MIB,
                        sector_size=512, volume_key=key,
                        progress=lambda stage, count, total: done.append(count)
                        if stage == "root" else None)
    layout = result.layout
    # The root in 8 MiB pieces, the count growing to the whole 46 MiB.
    assert done == [0, *range(8 * MIB, 46 * MIB, 8 * MIB), 46 * MIB]
    # 20 MiB of files (the link's 40 MiB target not counted): 20 * 3 / 2 + 16 = 46 MiB of ext4.
    assert layout.root_size == 16 * MIB + 46 * MIB
    assert out.stat().st_size == layout.disk_size == MIB + 33 * MIB + 62 * MIB + MIB
    with FileStorage(out, read_only=True) as disk:
        volume = Luks2Volume.open(StorageWindow(disk, layout.root_offset, layout.root_size))
        assert volume.unlock(b"pw") == key and volume.uuid == result.luks_uuid
        device = volume.data_device(key)
        ext4 = tmp_path / "root.ext4"
        ext4.write_bytes(device.read(0, 46 * MIB))
    part = tmp_path / "root-part.img"
    part.write_bytes(out.read_bytes()[layout.root_offset : layout.root_offset + layout.root_size])
    dump = _run(require_tool("cryptsetup"), "luksDump", str(part))
    assert re.search(r"^\s+sector: 512 \[bytes\]$", dump, re.M), dump
    _run(require_tool("e2fsck"), "-fn", str(ext4))
    assert _run(require_tool("debugfs"), "-R", "cat /etc/motd", str(ext4)).encode() == MARKER
    stat = _run(require_tool("debugfs"), "-R", "stat /var/big-link", str(ext4))
    assert "Type: symlink" in stat
    label = _run(require_tool("debugfs"), "-R", "stats", str(ext4))
    assert re.search(r"^Filesystem volume name:\s+root$", label, re.M), label
    assert MARKER[:64] not in out.read_bytes()


@pytest.mark.interop
def test_a_small_tree_gets_the_smallest_root(tmp_path: Path,
                                             require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd", "mkfs.ext4"):
        require_tool(tool)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_bytes(b"x")
    result = build_disk(tmp_path / "d.img", tree, _boot(tmp_path), b"pw", KDF,
                        esp_size=33 * MIB, sector_size=4096)
    assert result.layout.root_size == 16 * MIB + 16 * MIB  # 16 MiB: the least ext4 made


@pytest.mark.interop
def test_an_image_root_fills_the_disk_the_host_holds(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd", "sgdisk", "cryptsetup", "fsck.fat"):
        require_tool(tool)
    root = tmp_path / "root.img"
    root.write_bytes(MARKER + os.urandom(MIB) + MARKER[:100])  # not a whole number of sectors
    out = tmp_path / "disk.img"
    out.write_bytes(b"\xaa" * (200 * MIB))  # an old, larger file: truncated, then rewritten
    boot = _boot(tmp_path)
    (boot / "EFI" / "debian").mkdir()
    (boot / "EFI" / "debian" / "grubx64.efi").write_bytes(b"MZ grub")
    events: list[tuple[str, int, int]] = []
    result = build_disk(out, root, boot, b"pw", KDF, esp_size=34 * MIB, label="my-root",
                        progress=lambda stage, done, total: events.append((stage, done, total)))
    layout = result.layout
    data_size = -(-root.stat().st_size // 4096) * 4096
    assert layout == plan_layout(data_size, 34 * MIB)
    image = out.read_bytes()
    assert len(image) == layout.disk_size
    assert image[34 * 512 : MIB] == bytes(MIB - 34 * 512)  # the gap before the ESP: zeros
    assert b"\xaa" * 16 not in image and MARKER[:64] not in image
    # The GPT as sgdisk reads it.
    shown = _run(require_tool("sgdisk"), "-p", str(out))
    assert f"Disk identifier (GUID): {str(result.disk_guid).upper()}" in shown
    assert "No problems found" in _run(require_tool("sgdisk"), "-v", str(out))
    for number, first, last, code in ((1, 2048, 2048 + 34 * 2048 - 1, "C12A7328"),
                                      (2, 35 * 2048, 35 * 2048 + layout.root_size // 512 - 1,
                                       "4F68BCE3")):
        info = _run(require_tool("sgdisk"), "-i", str(number), str(out))
        assert f"First sector: {first} " in info and f"Last sector: {last} " in info
        assert f"Partition GUID code: {code}" in info
    # The ESP as fsck.fat and mtools read it.
    esp = tmp_path / "esp.bin"
    esp.write_bytes(image[MIB : 35 * MIB])
    _run(require_tool("fsck.fat"), "-n", str(esp))
    assert sorted(list_esp(out, MIB)) == ["/EFI/BOOT/BOOTX64.EFI", "/EFI/debian/grubx64.efi"]
    assert result.esp_files == ("EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi")
    # The root as cryptsetup reads it.
    part = tmp_path / "root-part.img"
    part.write_bytes(image[layout.root_offset : layout.root_offset + layout.root_size])
    dump = _run(require_tool("cryptsetup"), "luksDump", str(part))
    assert re.search(rf"^UUID:\s+{result.luks_uuid}$", dump, re.M)
    assert re.search(r"^Label:\s+my-root$", dump, re.M)
    assert re.search(r"^\s+sector: 4096 \[bytes\]$", dump, re.M), dump
    assert re.search(r"^\s+PBKDF:\s+pbkdf2$", dump, re.M), dump  # the KDF asked for
    assert re.search(r"^\s+Iterations:\s+1000$", dump, re.M), dump
    with FileStorage(out, read_only=True) as disk:
        volume = Luks2Volume.open(StorageWindow(disk, layout.root_offset, layout.root_size))
        device = volume.data_device(volume.unlock(b"pw"))
        assert device.read(0, root.stat().st_size) == root.read_bytes()
        assert device.read(root.stat().st_size, data_size - root.stat().st_size) == bytes(
            data_size - root.stat().st_size)
    # Progress: each ESP file, the LUKS2 steps, then the root from 0 to its whole size.
    stages = [stage for stage, _, _ in events]
    assert stages[:2] == ["ESP EFI/BOOT/BOOTX64.EFI", "ESP EFI/debian/grubx64.efi"]
    assert any(stage.startswith("LUKS2 ") for stage in stages)
    root_events = [(done, total) for stage, done, total in events if stage == "root"]
    assert root_events[0] == (0, data_size) and root_events[-1] == (data_size, data_size)
    assert [done for done, _ in root_events] == sorted(done for done, _ in root_events)
    assert all(done == 0 and total == 0 for stage, done, total in events if stage != "root")
    # A random volume key when none is given: two builds, two keys.
    again = build_disk(tmp_path / "again.img", root, boot, b"pw", KDF, esp_size=34 * MIB)
    keys = []
    for path, built in ((out, result), (tmp_path / "again.img", again)):
        with FileStorage(path, read_only=True) as disk:
            window = StorageWindow(disk, built.layout.root_offset, built.layout.root_size)
            keys.append(Luks2Volume.open(window).unlock(b"pw"))
    assert keys[0] != keys[1] and len(keys[0]) == 64
    part.write_bytes((tmp_path / "again.img").read_bytes()[
        again.layout.root_offset : again.layout.root_offset + again.layout.root_size])
    dump = _run(require_tool("cryptsetup"), "luksDump", str(part))
    assert re.search(r"^Label:\s+cvm-root$", dump, re.M), dump  # the default label
    assert again.disk_guid != result.disk_guid


def test_a_missing_root_or_an_output_over_the_root_is_refused(tmp_path: Path) -> None:
    boot = _boot(tmp_path)
    with pytest.raises(FileNotFoundError) as missing:
        build_disk(tmp_path / "out.img", tmp_path / "absent", boot, b"pw", KDF)
    assert missing.value.errno == errno.ENOENT
    assert missing.value.strerror == "No such file or directory (the root)"
    assert missing.value.filename == str(tmp_path / "absent")
    root = tmp_path / "root.img"
    root.write_bytes(b"data")
    link = tmp_path / "link.img"
    link.symlink_to(root)
    for out in (root, link):
        with pytest.raises(UsageError, match=r"^the output must not be the root input$"):
            build_disk(out, root, boot, b"pw", KDF)
    assert root.read_bytes() == b"data"
    with pytest.raises(FileNotFoundError, match="BOOTX64"):
        build_disk(tmp_path / "out.img", root, tmp_path, b"pw", KDF)
    assert not (tmp_path / "out.img").exists()


def test_a_disk_that_cannot_be_built_whole_leaves_the_previous_output(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd"):
        require_tool(tool)
    root = tmp_path / "root.img"
    root.write_bytes(MARKER + bytes(MIB))
    out = tmp_path / "disk.img"
    out.write_bytes(b"the previous disk")
    boot = _boot(tmp_path)

    def full_at_the_root(stage: str, done: int, total: int) -> None:
        if stage == "root" and done:  # the GPT, the ESP, the header and a chunk written
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        build_disk(out, root, boot, b"pw", KDF, esp_size=33 * MIB, progress=full_at_the_root)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(out))
    assert out.read_bytes() == b"the previous disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot", "disk.img", "root.img"]
    result = build_disk(out, root, boot, b"pw", KDF, esp_size=33 * MIB)
    assert out.stat().st_size == result.layout.disk_size and out.stat().st_mode & 0o777 == 0o600
    assert sorted(list_esp(out, MIB)) == ["/EFI/BOOT/BOOTX64.EFI"]  # the ESP reached the disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot", "disk.img", "root.img"]
