"""GRUB's script engine and measurements: what is executed is what is measured."""

from __future__ import annotations

import contextlib
import hashlib

import pytest

from cvm.errors import FormatError, StateError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.grub import Grub
from cvm.guest.boot.grub_script import Command, IfStatement, parse_script
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank


def _run(cfg: str, files: dict[str, bytes] | None = None) -> tuple[list[str], list[str], Grub]:
    boot = MeasuredBoot(SoftwarePcrBank(("sha256",)))
    esp = EspFiles({"/boot/grub/grub.cfg": cfg.encode(), "/k": b"kernel", **(files or {})})
    grub = Grub(boot, esp, GrubCoreImage("", "/boot/grub", b""), r"\EFI\BOOT\grubx64.efi")
    with contextlib.suppress(StateError):
        grub.run()
    pcr8 = [e.event.rstrip(b"\0").decode() for e in boot.events if e.pcr_index == 8]
    pcr9 = [e.event.rstrip(b"\0").decode() for e in boot.events if e.pcr_index == 9]
    for event in boot.events:
        text = event.event.rstrip(b"\0")
        if event.pcr_index == 8:
            payload = text.split(b": ", 1)[1]
            assert event.digest(0x000B) == hashlib.sha256(payload).digest()
    return pcr8, pcr9, grub


def test_parse_structure() -> None:
    script = parse_script("if ! a; then b 'x y'; elif c; then d; else e; fi\nf \"$v\" ${w}z # c\n")
    assert isinstance(script[0], IfStatement)
    assert len(script[0].branches) == 2
    condition = script[0].branches[0][0][0]
    assert isinstance(condition, Command) and condition.negate
    assert isinstance(script[1], Command) and len(script[1].words) == 3


@pytest.mark.parametrize("bad", ["echo 'open", 'echo "open', "if a; then b", "fi", "then x",
                                 "menuentry x { echo", "echo ${open"])
def test_parse_errors_are_format_errors(bad: str) -> None:
    with pytest.raises(FormatError):
        parse_script(bad)


def test_conditions_variables_and_quotes() -> None:
    pcr8, _, grub = _run(
        'set a="x y"\nset e=\n'
        'if [ -n "$a" -a -z "$e" ]; then set r1=yes; fi\n'
        'if [ "$a" = "x y" -o -e /nope ]; then set r2=yes; else set r2=no; fi\n'
        "if [ ! -f /k ]; then set r3=yes; else set r3=no; fi\n"
        "if [ -d /boot ]; then set r4=yes; fi\n"
        "[ $e ]\n"
    )
    env = grub.state.env
    assert (env["r1"], env["r2"], env["r3"], env["r4"]) == ("yes", "yes", "no", "yes")
    assert pcr8[:3] == ["grub_cmd: set a=x y", "grub_cmd: set e=", "grub_cmd: [ -n x y -a -z  ]"]
    assert pcr8[-1] == "grub_cmd: [ ]"


def test_unknown_commands_are_measured_and_fail() -> None:
    pcr8, _, grub = _run("if ! frobnicate --hard; then set failed=1; fi\nname=value\n")
    assert pcr8[:2] == ["grub_cmd: frobnicate --hard", "grub_cmd: set failed=1"]
    assert grub.state.env["failed"] == "1"
    assert grub.state.env["name"] == "value"


def test_search_file_sets_root() -> None:
    _, _, grub = _run("search --no-floppy --file --set=found /k\nsearch --file /missing\n"
                      "search --fs-uuid --set=u 1234\n")
    assert grub.state.env["found"] == "hd0,gpt1"
    assert "u" not in grub.state.env


def test_files_on_other_devices_and_missing_files_are_not_measured() -> None:
    _, pcr9, _ = _run("source (hd1,gpt1)/x.cfg\nsource /none.cfg\n")
    assert pcr9 == ["(hd0,gpt1)/boot/grub/grub.cfg"]


def test_boot_without_kernel_and_runaway_sourcing_fail() -> None:
    boot = MeasuredBoot(SoftwarePcrBank(("sha256",)))
    core = GrubCoreImage("", "/boot/grub", b"")
    for cfg, message in ((b"boot\n", "without a loaded kernel"), (b"source /boot/grub/grub.cfg\n",
                                                                    "nested deeper")):
        grub = Grub(boot, EspFiles({"/boot/grub/grub.cfg": cfg}), core, "/EFI/BOOT/grubx64.efi")
        with pytest.raises(StateError, match=message):
            grub.run()
