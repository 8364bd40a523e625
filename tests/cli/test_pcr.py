"""``cvm pcr predict``: PCRs from an ESP directory and a varstore, without booting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.vm_profile import PROFILES


def _grub() -> bytes:
    import struct

    modules = b""
    for kind, text in ((2, b""), (3, b"/boot/grub")):
        body = text + b"\0" + bytes(-(len(text) + 1) % 8)
        modules += struct.pack("<II", kind, 8 + len(body)) + body
    mods = struct.pack("<IIQQ", 0x676D696D, 0, 24, 24 + len(modules)) + modules
    return build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec("mods", mods)])


@pytest.fixture
def esp_tree(tmp_path: Path) -> Path:
    return make_esp_tree(tmp_path)


def make_esp_tree(tmp_path: Path) -> Path:
    """A folder laid out as an ESP: GRUB as the removable-media loader, its grub.cfg, a kernel."""
    root = tmp_path / "esp"
    (root / "EFI/BOOT").mkdir(parents=True)
    (root / "boot/grub").mkdir(parents=True)
    (root / "EFI/BOOT/BOOTX64.EFI").write_bytes(_grub())
    (root / "boot/grub/grub.cfg").write_bytes(b"linux /vmlinuz quiet\nboot\n")
    (root / "vmlinuz").write_bytes(build_pe([SectionSpec(".text", b"\x90\xc3", CODE)]))
    return root


def test_predict_equals_the_emulated_boot(
    esp_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    assert execute(["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore),
                    "--bank", "sha1", "--bank", "sha256", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    profile = PROFILES["q35"]
    BootChain(EspFiles.from_directory(esp_tree), profile.with_boot_options(Varstore.empty_4m()),
              settings=profile.settings()).run(pcrs)
    assert set(document["unknown"]) == {"0", "10"}
    for bank in ("sha1", "sha256"):
        assert document[bank] == {
            p: None if p in document["unknown"] else pcrs.read(int(p), bank).hex()
            for p in document[bank]
        }
    assert {"1", "4", "5", "7", "8", "9"} <= set(document["sources"])


def test_event_log_of_the_emulated_boot_replays_to_the_prediction(
    esp_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    log = tmp_path / "boot.log"
    assert execute(["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore),
                    "--json", "--event-log", str(log)]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert execute(["eventlog", "replay", str(log), "--bank", "sha256", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)["sha256"]
    known = {p: v for p, v in predicted["sha256"].items() if v is not None and p in replayed}
    assert known and all(replayed[p] == v for p, v in known.items())
    assert execute(["pcr", "diff", str(log), str(log)]) == 0


def test_file_override_and_pcr_selection(
    esp_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    base = ["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore),
            "--pcrs", "8,9", "--json"]
    assert execute(base) == 0
    before = json.loads(capsys.readouterr().out)["sha256"]
    other = tmp_path / "grub.cfg"
    other.write_bytes(b"linux /vmlinuz single\nboot\n")
    assert execute([*base, "--file", f"/boot/grub/grub.cfg={other}"]) == 0
    after = json.loads(capsys.readouterr().out)["sha256"]
    assert set(before) == set(after) == {"8", "9"}
    assert before["8"] != after["8"]
    assert execute(base[:-1]) == 0
    assert "(2 measurements; the boot files" in capsys.readouterr().out


@pytest.mark.parametrize("extra, code", [
    (["--pcrs", "x"], 64), (["--pcrs", "30"], 64), (["--bank", "md5"], 64),
    (["--file", "nonsense"], 64), (["--profile", "pc-i440fx"], 64),
])
def test_bad_options(esp_tree: Path, tmp_path: Path, extra: list[str], code: int) -> None:
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    args = ["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore), *extra]
    assert execute(args) == code


def test_bad_varstore_is_a_format_error(esp_tree: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.fd"
    junk.write_bytes(b"junk")
    assert execute(["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(junk)]) == 65


def _disk_with(esp_tree: Path, path: Path) -> Path:
    from cvm.disk.esp import write_esp
    from cvm.formats.gpt import partition_types
    from cvm.formats.gpt.header import LBA_SIZE
    from cvm.formats.gpt.partition_entry import PartitionEntry
    from cvm.formats.gpt.partition_table import PartitionTable
    from cvm.wire import Guid

    (esp_tree / "EFI/BOOT").mkdir(parents=True, exist_ok=True)
    size = 48 << 20
    with path.open("wb") as handle:
        handle.truncate(size)
    esp = PartitionEntry(partition_types.ESP, Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516"),
                         2048, 2048 + (40 << 20) // LBA_SIZE - 1, name="EFI System Partition")
    table = PartitionTable.create(size // LBA_SIZE, [esp],
                                  Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d"))
    with path.open("r+b") as handle:
        for offset, data in table.blocks():
            handle.seek(offset)
            handle.write(data)
    write_esp(path, 2048 * LBA_SIZE, 40 << 20, esp_tree)
    return path


@pytest.mark.interop
def test_predict_reads_the_gpt_and_the_esp_from_the_disk_image(
    esp_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    require_tool: object,
) -> None:
    require_tool("mformat")  # type: ignore[operator]
    disk = _disk_with(esp_tree, tmp_path / "disk.img")
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    assert execute(["pcr", "predict", str(disk), "--varstore", str(varstore), "--json"]) == 0
    from_disk = json.loads(capsys.readouterr().out)
    assert execute(["pcr", "predict", "--esp", str(esp_tree), "--disk", str(disk),
                    "--varstore", str(varstore), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_disk
    assert execute(["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore),
                    "--json"]) == 0
    without_gpt = json.loads(capsys.readouterr().out)
    assert without_gpt["sha256"]["5"] != from_disk["sha256"]["5"]  # the GPT event of PCR 5
    assert execute(["pcr", "predict", str(disk), "--varstore", str(varstore),
                    "--partition", "2"]) == 65
    assert execute(["pcr", "predict", "--varstore", str(varstore)]) == 64


def test_diff_names_the_command_and_the_file_that_differ(
    esp_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    varstore = tmp_path / "vars.fd"
    varstore.write_bytes(Varstore.empty_4m().to_bytes())
    base = ["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore)]
    predicted, edited, kernel_changed = (tmp_path / n for n in ("a.log", "b.log", "c.log"))
    assert execute([*base, "--event-log", str(predicted)]) == 0
    cfg = tmp_path / "grub.cfg"
    cfg.write_bytes(b"linux /vmlinuz init=/bin/sh\nboot\n")
    assert execute([*base, "--file", f"/boot/grub/grub.cfg={cfg}",
                    "--event-log", str(edited)]) == 0
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(build_pe([SectionSpec(".text", b"\x90\x90\xc3", CODE)]))
    assert execute([*base, "--file", f"/vmlinuz={kernel}", "--event-log",
                    str(kernel_changed)]) == 0
    capsys.readouterr()
    assert execute(["pcr", "diff", str(predicted), str(edited), "--json"]) == 1
    found = {d["pcr"]: d["cause"] for d in json.loads(capsys.readouterr().out)}
    assert "init=/bin/sh" in found[8] and "grub.cfg" in found[9]
    assert execute(["pcr", "diff", str(predicted), str(kernel_changed)]) == 1
    out = capsys.readouterr().out
    assert "PCR 4:" in out and "measured content differs" in out and "PCR 9:" in out
    assert execute(["pcr", "diff", str(predicted), str(predicted)]) == 0
