"""``cvm pcr``, one decision at a time: the banks, the boot files and GPT from DISK, ``--esp``
and ``--disk``, ``--file``'s replacements, the PCRs chosen, which PCRs a firmware log settles
and the emulated boot is not held to, what ``predict`` and ``diff`` print."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from cvm.cli import pcr
from cvm.cli.main import execute
from cvm.errors import FormatError, InternalError, UsageError
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.image.pcr_diff import DEFAULT_PCRS, PcrDifference
from cvm.image.pcr_prediction import predict
from cvm.image.pcr_report import PcrStatus
from cvm.image.vm_profile import profile_named
from cvm.wire import Guid

from .test_pcr import make_esp_tree


@pytest.fixture
def esp_tree(tmp_path: Path) -> Path:
    return make_esp_tree(tmp_path)


@pytest.fixture
def varstore(tmp_path: Path) -> Path:
    path = tmp_path / "vars.fd"
    path.write_bytes(Varstore.empty_4m().to_bytes())
    return path


def _gpt_only(path: Path, size: int = 48 << 20, file_size: int | None = None) -> Path:
    esp = PartitionEntry(partition_types.ESP, Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516"),
                         2048, 2048 + (40 << 20) // LBA_SIZE - 1, name="EFI System Partition")
    with _disk_with_table(path, size, [esp]) as handle:
        if file_size is not None:
            handle.truncate(file_size)
    return path


@contextmanager
def _disk_with_table(path: Path, size: int, entries: list[PartitionEntry]
                     ) -> Iterator[BinaryIO]:
    """``path``, ``size`` bytes with a GPT of ``entries``, open for more writes."""
    table = PartitionTable.create(size // LBA_SIZE, entries,
                                  Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d"))
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset, data in table.blocks():
            handle.seek(offset)
            handle.write(data)
        yield handle


def test_the_banks_are_sha1_and_sha256_unless_given() -> None:
    assert pcr.chosen_banks([]) == ("sha1", "sha256")
    assert pcr.chosen_banks(["sha384"]) == ("sha384",)
    with pytest.raises(UsageError) as refused:
        pcr.chosen_banks(["sha256", "md5"])
    assert str(refused.value).startswith("unknown PCR bank 'md5' (known: ")


def test_a_file_is_added_or_replaces_one_whatever_its_case(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(b"new")
    esp = EspFiles({"/EFI/BOOT/BOOTX64.EFI": b"old", "/kept": b"kept"})
    files = dict(pcr._override(esp, [f"efi/boot/bootx64.efi/={local}",
                                     f"//added={local}"]).items())
    assert files == {"/kept": b"kept", "/efi/boot/bootx64.efi": b"new", "/added": b"new"}
    assert dict(pcr._override(esp, []).items()) == dict(esp.items())


@pytest.mark.parametrize("item", ["nonsense", "=file", "/target=", ""])
def test_a_file_that_is_not_target_equals_local_is_refused(item: str) -> None:
    with pytest.raises(UsageError) as refused:
        pcr._override(EspFiles({}), [item])
    assert str(refused.value) == f"--file {item!r}: expected ESP_PATH=LOCAL_FILE"


@pytest.mark.parametrize(("text", "values"), [("0", [0]), ("23, 7,", [23, 7]),
                                              ("1,,2", [1, 2])])
def test_pcrs_are_0_to_23(text: str, values: list[int]) -> None:
    assert pcr._pcr_list(text) == values


@pytest.mark.parametrize(("text", "says"), [
    ("x", "expected comma-separated PCR numbers"), ("1;2", "expected comma-separated PCR numbers"),
    (",", "expected comma-separated PCR numbers"), (" ", "expected comma-separated PCR numbers"),
    ("24", "PCRs are 0..23"), ("-1", "PCRs are 0..23"), ("0,24", "PCRs are 0..23")])
def test_other_pcrs_are_refused(text: str, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        pcr._pcr_list(text)
    assert str(refused.value) == f"--pcrs {text!r}: {says}"


def test_predict_prints_0_to_15_unless_told() -> None:
    assert pcr.wanted_pcrs("") == set(range(16))
    assert pcr.wanted_pcrs("16,3") == {3, 16}


def test_diff_compares_1_to_9_and_11_to_15_unless_told() -> None:
    assert pcr.diff_pcrs("") == DEFAULT_PCRS
    assert pcr.diff_pcrs("4,7") == (4, 7)


def test_a_diff_of_no_pcr_is_refused_not_called_the_same(
        tmp_path: Path, esp_tree: Path, varstore: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _two_logs(tmp_path, esp_tree, varstore)
    capsys.readouterr()
    assert execute(["pcr", "diff", str(one), str(two), "--pcrs", ","]) == 64
    assert capsys.readouterr() == ("", "cvm: error: --pcrs ',': expected comma-separated PCR "
                                       "numbers\n")


def _two_logs(tmp_path: Path, esp_tree: Path, varstore: Path) -> tuple[Path, Path]:
    """The event logs of two boots whose grub.cfg differ (PCR 8)."""
    base = ["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore)]
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    assert execute([*base, "--event-log", str(one)]) == 0
    cfg = tmp_path / "grub.cfg"
    cfg.write_bytes(b"linux /vmlinuz init=/bin/sh\nboot\n")
    assert execute([*base, "--file", f"/boot/grub/grub.cfg={cfg}", "--event-log",
                    str(two)]) == 0
    return one, two


@pytest.mark.parametrize(("profile", "pcrs"), [("q35", (0,)), ("q35-net", (0, 2)),
                                               ("q35-sata", (0,))])
def test_a_firmware_log_settles_pcr_0_and_the_option_roms(profile: str,
                                                          pcrs: tuple[int, ...]) -> None:
    assert pcr.firmware_pcrs(profile_named(profile)) == pcrs


def test_the_disk_is_given_once_and_something_is_given(tmp_path: Path, esp_tree: Path) -> None:
    with pytest.raises(UsageError) as refused:
        pcr.boot_files(tmp_path, esp_tree, tmp_path, 1, [])
    assert str(refused.value) == "give the disk either as DISK or as --disk, not both"
    with pytest.raises(UsageError) as refused:
        pcr.boot_files(None, None, tmp_path, 1, [])
    assert str(refused.value) == "give the disk image (DISK) or the ESP as a folder (--esp)"


def test_the_esp_as_a_folder_has_no_gpt_unless_a_disk_is_given(tmp_path: Path,
                                                               esp_tree: Path) -> None:
    local = tmp_path / "cfg"
    local.write_bytes(b"boot\n")
    files, gpt = pcr.boot_files(None, esp_tree, None, None, [f"/boot/grub/grub.cfg={local}"])
    assert gpt is None and dict(files.items())["/boot/grub/grub.cfg"] == b"boot\n"
    disk = _gpt_only(tmp_path / "disk.img")
    for disk_image, option in ((disk, None), (None, disk)):
        _, gpt = pcr.boot_files(disk_image, esp_tree, option, 1, [])
        assert gpt is not None
        assert PartitionEntry.from_bytes(gpt.entry[:128]).starting_lba == 2048
    with pytest.raises(FormatError):
        pcr.boot_files(None, esp_tree, disk, 2, [])
    _, gpt = pcr.boot_files(None, esp_tree, disk, None, [])  # --partition's default: 1
    assert gpt is not None
    assert PartitionEntry.from_bytes(gpt.entry[:128]).starting_lba == 2048


def test_a_partition_with_the_esp_as_a_folder_and_no_disk_is_refused(esp_tree: Path) -> None:
    for partition in (1, 2):  # even the default, given by name: it would be read from nothing
        with pytest.raises(UsageError) as refused:
            pcr.boot_files(None, esp_tree, None, partition, [])
        assert str(refused.value) == (
            "--partition: not for --esp without a disk (no GPT to find the partition in)")


def test_a_partition_past_the_end_of_the_disk_is_refused(tmp_path: Path) -> None:
    disk = _gpt_only(tmp_path / "disk.img", file_size=8 << 20)
    for partition in (1, None):  # None: --partition's default, 1
        with pytest.raises(FormatError) as refused:
            pcr.boot_files(disk, None, None, partition, [])
        assert str(refused.value) == f"{disk}: partition 1 runs past the end of the disk"


def _chain(esp_tree: Path, profile: str) -> BootChain:
    machine = profile_named(profile)
    return BootChain(EspFiles.from_directory(esp_tree),
                     machine.with_boot_options(Varstore.empty_4m()), None, machine.settings(),
                     pcr.DEFAULT_LOADER)


def test_the_emulated_boot_is_held_to_every_pcr_the_firmware_log_did_not_settle(
        tmp_path: Path, esp_tree: Path) -> None:
    chain = _chain(esp_tree, "q35")
    prediction = predict(chain, ("sha256",))
    out = tmp_path / "boot.log"
    pcr._write_emulated_log(chain, ("sha256",), prediction.values, out, ())
    assert EventLog.parse(out.read_bytes()).events

    def changed(pcr_index: int) -> dict[int, bytes]:
        values = dict(prediction.values("sha256"))
        values[pcr_index] = bytes(32)
        return values

    for index in (0, 2, 4, 7):
        with pytest.raises(InternalError) as refused:
            pcr._write_emulated_log(chain, ("sha256",), lambda bank, i=index: changed(i),
                                    tmp_path / "x.log", (0,) if index else (2,))
        assert str(refused.value) == f"emulated boot and prediction differ on sha256 PCR {index}"
    pcr._write_emulated_log(chain, ("sha256",), lambda bank: changed(2), tmp_path / "y.log",
                            (0, 2))


def test_predict_with_an_option_roms_firmware_log_writes_the_emulated_log(
        tmp_path: Path, esp_tree: Path, varstore: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["pcr", "predict", "--esp", str(esp_tree), "--varstore", str(varstore)]
    plain = tmp_path / "q35.log"
    assert execute([*base, "--event-log", str(plain)]) == 0
    log = EventLog.parse(plain.read_bytes())
    rom = PcrEvent(2, 0x80000004, ((0x0004, b"\x11" * 20), (0x000B, b"\x22" * 32)), b"rom")
    reference = tmp_path / "rom.log"
    reference.write_bytes(replace(log, events=(log.events[0], rom, *log.events[1:])).to_bytes())
    capsys.readouterr()
    assert execute([*base, "--profile", "q35-net", "--firmware-log", str(reference),
                    "--event-log", str(tmp_path / "net.log"), "--pcrs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"(2 measurements; firmware events from {reference})" in out
    assert (tmp_path / "net.log").exists()


STATUSES = [PcrStatus(0, None, "", "PCR 0 holds the firmware", "--firmware-log LOG"),
            PcrStatus(4, {"sha1": b"\x01" * 20, "sha256": b"\x02" * 32}, "the boot chain")]


def test_predict_prints_each_bank_value_count_and_source() -> None:
    assert pcr.predict_lines(("sha1", "sha256"), "q35", "-machine q35", STATUSES,
                             {4: [1, 2, 3], 0: [1]}) == [
        "VM profile q35: -machine q35", "sha1:",
        "   0: unknown — PCR 0 holds the firmware; settle it with --firmware-log LOG",
        f"   4: {'01' * 20}  (3 measurements; the boot chain)", "sha256:",
        "   0: unknown — PCR 0 holds the firmware; settle it with --firmware-log LOG",
        f"   4: {'02' * 32}  (3 measurements; the boot chain)"]
    assert pcr.predict_lines(("sha1",), "q35", "", STATUSES[1:], {})[-1] == (
        f"   4: {'01' * 20}  (0 measurements; the boot chain)")


def test_predicts_json_has_the_values_the_sources_and_the_unknown() -> None:
    assert pcr.predict_json(("sha1", "sha256"), "q35-net", STATUSES) == {
        "sha1": {"0": None, "4": "01" * 20}, "sha256": {"0": None, "4": "02" * 32},
        "profile": "q35-net", "sources": {"4": "the boot chain"},
        "unknown": {"0": {"reason": "PCR 0 holds the firmware", "settle": "--firmware-log LOG"}}}


def test_diff_prints_each_first_difference_or_the_pcrs_that_are_the_same() -> None:
    assert pcr.diff_lines((1, 4), []) == ["PCRs 1, 4: the same events, the same digests"]
    assert pcr.diff_lines((1, 4), [PcrDifference(4, 3, 5, "the kernel"),
                                   PcrDifference(1, None, None, "gone")]) == [
        "PCR 4: predicted event 3, real event 5: the kernel",
        "PCR 1: no predicted event, no real event: gone"]
    assert pcr.diff_lines((1,), [PcrDifference(1, 0, 0, "x")]) == [
        "PCR 1: predicted event 0, real event 0: x"]


def test_diff_exits_1_on_a_difference_and_prints_json(
        tmp_path: Path, esp_tree: Path, varstore: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    one, two = _two_logs(tmp_path, esp_tree, varstore)
    capsys.readouterr()
    assert execute(["pcr", "diff", str(one), str(one), "--pcrs", "8,9"]) == 0
    assert capsys.readouterr().out == "PCRs 8, 9: the same events, the same digests\n"
    assert execute(["pcr", "diff", str(one), str(two), "--json"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("[\n  {\n") and '"pcr": 8' in out and "PCR 8:" not in out
    assert execute(["pcr", "diff", str(one), str(one), "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"


def test_a_target_keeps_every_letter_and_a_local_name_its_equals_signs(tmp_path: Path) -> None:
    local = tmp_path / "a=b"
    local.write_bytes(b"new")
    esp = EspFiles({"/EFI/bootx": b"old"})
    files = dict(pcr._override(esp, [f"EFI/BOOTX={local}", f"X/={local}"]).items())
    assert files == {"/EFI/BOOTX": b"new", "/X": b"new"}


def _fat_disk(path: Path, *, partition: int = 1, cut_at_end: bool = False,
              short: int = 0) -> tuple[Path, int]:
    """A GPT disk whose partition ``partition`` holds a FAT12 volume with ``/FILE`` in its last
    cluster (its last bytes are read); the volume fills the partition exactly."""
    from tests.formats.fat.conftest import entry, make_fat

    from cvm.formats.fat.boot_sector import FatType

    image = make_fat(FatType.FAT12)
    content = bytes(range(256)) * 2
    image.chain(101)
    image.write(101, content)
    image.put(image.root_offset(), entry(b"FILE       ", 0x20, 101, len(content)))
    volume = bytes(image.data)
    assert len(volume) % LBA_SIZE == 0 and image.cluster_offset(102) == len(volume)
    first = 2048 + 64 * (partition - 1)
    entries = [PartitionEntry(partition_types.LINUX_DATA,
                              Guid.parse(f"1c2b3a49-5867-4e8d-9a0b-c1d2e3f4051{n}"),
                              2048 + 64 * n, 2048 + 64 * n + 63) for n in range(partition - 1)]
    entries.append(PartitionEntry(partition_types.ESP,
                                  Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516"), first,
                                  first + len(volume) // LBA_SIZE - 1 - short))
    with _disk_with_table(path, 4 << 20, entries) as handle:
        handle.seek(first * LBA_SIZE)
        handle.write(volume)
        if cut_at_end:
            handle.truncate(first * LBA_SIZE + len(volume))
    return path, first


@pytest.mark.parametrize("partition", [1, 2])
def test_the_esp_and_its_files_are_read_from_the_disks_partition(
        tmp_path: Path, partition: int) -> None:
    disk, first = _fat_disk(tmp_path / "disk.img", partition=partition, cut_at_end=True)
    local = tmp_path / "added"
    local.write_bytes(b"added")
    files, gpt = pcr.boot_files(disk, None, None, partition, [f"/ADDED={local}"])
    assert dict(files.items()) == {"/FILE": bytes(range(256)) * 2, "/ADDED": b"added"}
    assert gpt is not None
    assert PartitionEntry.from_bytes(gpt.entry[:128]).starting_lba == first


def test_the_disk_is_opened_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk, _ = _fat_disk(tmp_path / "disk.img")
    opened: list[dict[str, object]] = []
    real = pcr.FileStorage

    def recording(path: Path, **options: object) -> object:
        opened.append(options)
        return real(path, **options)  # type: ignore[arg-type]
    monkeypatch.setattr(pcr, "FileStorage", recording)
    pcr.boot_files(disk, None, None, 1, [])
    assert opened == [{"read_only": True}]


def test_a_volume_larger_than_its_partition_is_refused(tmp_path: Path) -> None:
    disk, _ = _fat_disk(tmp_path / "disk.img", short=1)
    with pytest.raises(FormatError) as refused:
        pcr.boot_files(disk, None, None, 1, [])
    assert str(refused.value).startswith(f"{disk}: FAT volume: the boot sector claims ")
