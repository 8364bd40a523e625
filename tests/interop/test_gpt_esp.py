"""``cvm disk build`` output is accepted by sgdisk, sfdisk, fsck.fat and cryptsetup; cvm reads
sgdisk's tables; the plaintext root never appears in the output image."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.disk.esp import list_esp
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import Luks2Volume

pytestmark = pytest.mark.interop
MARKER = b"cvm-plaintext-marker-" * 200


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, env=env)


@pytest.fixture
def built(tmp_path: Path, require_tool: Callable[[str], str]) -> tuple[Path, Path]:
    for tool in ("mformat", "mcopy", "mmd"):
        require_tool(tool)
    boot = tmp_path / "boot"
    (boot / "EFI" / "BOOT").mkdir(parents=True)
    (boot / "EFI" / "debian").mkdir()
    (boot / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ" + os.urandom(70000))
    (boot / "EFI" / "debian" / "grubx64.efi").write_bytes(b"MZ" + os.urandom(30000))
    root = tmp_path / "root.img"
    root.write_bytes(MARKER + os.urandom(3 << 20) + MARKER)
    (tmp_path / "pass").write_bytes(b"disk pass")
    out = tmp_path / "disk.img"
    assert execute(["disk", "build", str(out), "--root", str(root), "--boot-dir", str(boot),
                    "--key-file", str(tmp_path / "pass"), "--pbkdf", "pbkdf2",
                    "--pbkdf-force-iterations", "1000"]) == 0
    return out, root


def test_partition_tools_accept_the_disk(built: tuple[Path, Path],
                                         require_tool: Callable[[str], str]) -> None:
    out, _ = built
    result = _run(require_tool("sgdisk"), "-v", str(out))
    assert "No problems found" in result.stdout, result.stdout
    result = _run(require_tool("sfdisk"), "--verify", str(out))
    assert result.returncode == 0 and "No errors detected" in result.stdout
    parts = json.loads(_run(require_tool("sfdisk"), "--json", str(out)).stdout)
    table = parts["partitiontable"]["partitions"]
    assert table[0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert table[1]["type"] == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
    assert all(p["start"] % 8 == 0 and p["size"] % 8 == 0 for p in table)


def test_esp_passes_fsck(built: tuple[Path, Path], tmp_path: Path,
                         require_tool: Callable[[str], str]) -> None:
    out, _ = built
    esp = tmp_path / "esp.bin"
    esp.write_bytes(out.read_bytes()[1 << 20 : (1 << 20) + (64 << 20)])
    result = _run(require_tool("fsck.fat"), "-n", str(esp))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(list_esp(out, 1 << 20)) == ["/EFI/BOOT/BOOTX64.EFI", "/EFI/debian/grubx64.efi"]


def test_root_is_luks2_and_never_plaintext(built: tuple[Path, Path], tmp_path: Path,
                                           require_tool: Callable[[str], str]) -> None:
    out, root = built
    image = out.read_bytes()
    assert MARKER[:64] not in image
    root_offset = (1 << 20) + (64 << 20)
    part = tmp_path / "root-part.img"
    part.write_bytes(image[root_offset : len(image) - (1 << 20)])
    result = _run(require_tool("cryptsetup"), "open", "--test-passphrase", "--key-file",
                  str(tmp_path / "pass"), str(part))
    assert result.returncode == 0, result.stderr
    with FileStorage(out, read_only=True) as disk:
        window = StorageWindow(disk, root_offset, len(part.read_bytes()))
        volume = Luks2Volume.open(window)
        device = volume.data_device(volume.unlock(b"disk pass"))
        plain = root.read_bytes()
        assert device.read(0, len(plain)) == plain


def test_gpt_show_reads_sgdisk_tables(tmp_path: Path, require_tool: Callable[[str], str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmp_path / "sg.img"
    disk.write_bytes(bytes(8 << 20))
    result = _run(require_tool("sgdisk"), "--clear", "-n", "1:2048:+2M", "-t", "1:EF00",
                  "-c", "1:EFI System Partition", "-n", "2:0:0", "-t", "2:8304", "-c", "2:root",
                  str(disk))
    assert result.returncode == 0, result.stderr
    assert execute(["gpt", "show", str(disk), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [p["type_guid"] for p in shown["partitions"]] == [
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"]
    assert shown["partitions"][0]["name"] == "EFI System Partition"


def test_build_from_a_tree(tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    for tool in ("mformat", "mcopy", "mmd", "mkfs.ext4"):
        require_tool(tool)
    from cvm.disk.disk_image import build_disk
    from cvm.disk.keyslot import KdfSpec

    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_bytes(MARKER)
    boot = tmp_path / "boot" / "EFI" / "BOOT"
    boot.mkdir(parents=True)
    (boot / "BOOTX64.EFI").write_bytes(b"MZ" + bytes(1000))
    out = tmp_path / "tree-disk.img"
    stages: list[str] = []
    result = build_disk(out, tree, tmp_path / "boot", b"pw", KdfSpec("pbkdf2", iterations=1000),
                        esp_size=40 << 20, sector_size=512,
                        progress=lambda stage, done, total: stages.append(stage))
    assert "root" in stages and any(s.startswith("ESP") for s in stages)
    assert MARKER[:64] not in out.read_bytes()
    layout = result.layout
    with FileStorage(out, read_only=True) as disk:
        volume = Luks2Volume.open(StorageWindow(disk, layout.root_offset, layout.root_size))
        device = volume.data_device(volume.unlock(b"pw"))
        assert device.read(1080, 2) == b"\x53\xef"  # ext4 superblock magic
    assert _run(require_tool("sgdisk"), "-v", str(out)).stdout.count("No problems found") == 1
