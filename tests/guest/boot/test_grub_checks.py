"""GRUB as a boot stage: the environment it starts with, what it reads and measures (PCR 8 and
9), what it refuses, and how each command decides (``test``, ``search``, ``linux``, menus)."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest

from cvm.errors import PolicyError, StateError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import Firmware
from cvm.guest.boot.grub import (
    GRUB_BINARY_PCR,
    GRUB_STRING_PCR,
    MAX_DEPTH,
    BootRequest,
    Grub,
    _evaluate,
)
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank

SHA1, SHA256 = 0x0004, 0x000B
CORE = GrubCoreImage("", "/boot/grub", b"")


def _grub(files: dict[str, bytes], core: GrubCoreImage = CORE,
          image_path: str = r"\EFI\BOOT\grubx64.efi", partition: int = 1,
          firmware: Firmware | None = None) -> Grub:
    boot = firmware.boot if firmware is not None else MeasuredBoot(
        SoftwarePcrBank(("sha1", "sha256")))
    return Grub(boot, EspFiles(files), core, image_path, None, partition, firmware)


def _run(cfg: str, files: dict[str, bytes] | None = None) -> Grub:
    grub = _grub({"/boot/grub/grub.cfg": cfg.encode(), "/k": b"kernel", **(files or {})})
    with contextlib.suppress(StateError):
        grub.run()
    return grub


def _strings(grub: Grub) -> list[str]:
    return [e.event.rstrip(b"\0").decode() for e in grub.boot.events
            if e.pcr_index == GRUB_STRING_PCR]


def _files(grub: Grub) -> list[PcrEvent]:
    return [e for e in grub.boot.events if e.pcr_index == GRUB_BINARY_PCR]


def _booted(cfg: str, files: dict[str, bytes] | None = None) -> tuple[BootRequest, Grub]:
    grub = _grub({"/boot/grub/grub.cfg": cfg.encode(), "/k": b"kernel", **(files or {})})
    return grub.run(), grub


# --- the start-up environment --------------------------------------------------------------


def test_the_environment_names_the_boot_partition_and_grubs_directory() -> None:
    grub = _grub({}, image_path=r"\EFI\cvm\grubx64.efi", partition=3)
    assert grub.device == "hd0,gpt3"
    assert grub.state.env == {
        "root": "hd0,gpt3", "prefix": "(hd0,gpt3)/boot/grub", "cmdpath": "(hd0,gpt3)/EFI/cvm",
        "grub_platform": "efi", "grub_cpu": "x86_64", "?": "0"}
    assert grub.state.menu == [] and grub.state.kernel is None and grub.state.depth == 0


def test_the_prefix_defaults_to_boot_grub_and_keeps_a_device() -> None:
    assert _grub({}, GrubCoreImage("", "", b"")).state.env["prefix"] == "(hd0,gpt1)/boot/grub"
    assert _grub({}, GrubCoreImage("", "(hd1,gpt2)/g", b"")).state.env["prefix"] == "(hd1,gpt2)/g"
    assert _grub({}, GrubCoreImage("", "/EFI/x", b"")).state.env["prefix"] == "(hd0,gpt1)/EFI/x"


# --- measurements --------------------------------------------------------------------------


def test_a_command_is_measured_into_pcr8_as_executed() -> None:
    grub = _grub({})
    grub.measure_string("grub_cmd: ", "set a=é")
    (event,) = grub.boot.events
    assert (event.pcr_index, event.event_type) == (8, EventType.EV_IPL)
    assert event.event == "grub_cmd: set a=é\0".encode()
    assert event.digest(SHA256) == hashlib.sha256("set a=é".encode()).digest()
    assert event.digest(SHA1) == hashlib.sha1("set a=é".encode()).digest()


def test_a_file_is_measured_into_pcr9_by_its_grub_path() -> None:
    grub = _grub({"/boot/x.cfg": b"data"})
    assert grub.read_file("(hd0,gpt1)/boot/x.cfg") == b"data"
    assert grub.read_file("/boot/x.cfg", measure=False) == b"data"
    (event,) = grub.boot.events
    assert (event.pcr_index, event.event_type) == (9, EventType.EV_IPL)
    assert event.event == b"(hd0,gpt1)/boot/x.cfg\0"
    assert event.digest(SHA256) == hashlib.sha256(b"data").digest()


def test_paths_on_other_devices_or_malformed_are_not_read() -> None:
    grub = _grub({"/x": b"x"})
    assert grub.read_file("(hd1,gpt1)/x") is None
    assert grub.read_file("(hd0,gpt1/x") is None
    assert grub.read_file("/missing") is None
    assert grub.read_file("(hd0,gpt1)") is None  # the device itself: "/" is no file
    assert grub.boot.events == ()
    grub.state.env["root"] = "hd1,gpt1"  # a relative path follows $root
    assert grub.read_file("/x") is None
    assert grub.read_file("(hd0,gpt1)/x") == b"x"


def test_exists_and_is_file() -> None:
    grub = _grub({"/boot/grub/a.cfg": b""})
    assert grub._exists("/boot/grub/a.cfg") and grub._exists("/boot/grub")
    assert grub._exists("(hd0,gpt1)/boot") and not grub._exists("(hd1,gpt1)/boot")
    assert not grub._exists("/nope") and not grub._exists("(memdisk)/grub.cfg")
    assert grub._is_file("/boot/grub/a.cfg") and not grub._is_file("/boot/grub")
    assert not grub._is_file("(hd1,gpt1)/boot/grub/a.cfg")


# --- running the configuration ---------------------------------------------------------------


def test_an_empty_embedded_config_reads_and_measures_prefix_grub_cfg() -> None:
    request, grub = _booted("linux /k quiet\nboot\n")
    assert request == BootRequest(b"kernel", "/k", "BOOT_IMAGE=/k quiet", b"")
    (cfg,) = _files(grub)[:1]
    assert cfg.event == b"(hd0,gpt1)/boot/grub/grub.cfg\0"


def test_the_embedded_config_sources_without_measuring_and_sets_variables() -> None:
    core = GrubCoreImage("set prefix=(hd0,gpt1)/cfg\nset nothing\nconfigfile /cfg/a.cfg\n"
                         "normal /cfg/b.cfg\nnormal\nset a=b extra\n", "/boot/grub", b"")
    files = {"/cfg/a.cfg": b"set from_a=1\n", "/cfg/b.cfg": b"linux /k\nboot\n", "/k": b"K"}
    grub = _grub(files, core)
    request = grub.run()
    assert request.kernel == b"K"
    assert grub.state.env["prefix"] == "(hd0,gpt1)/cfg"
    assert grub.state.env["from_a"] == "1"
    assert "nothing" not in grub.state.env and "a" not in grub.state.env
    # Only the kernel reached PCR 9: the embedded config's files are not measured.
    assert [e.event for e in _files(grub)] == [b"/k\0"]


def test_a_configuration_that_boots_nothing_is_refused() -> None:
    with pytest.raises(StateError, match=r"^GRUB: the configuration did not boot a kernel$"):
        _grub({"/boot/grub/grub.cfg": b"set a=1\n"}).run()
    with pytest.raises(StateError, match="did not boot"):
        _grub({}).run()


def test_nesting_is_limited() -> None:
    files = {f"/c{i}.cfg": f"source /c{i + 1}.cfg\n".encode() for i in range(MAX_DEPTH + 1)}
    files["/boot/grub/grub.cfg"] = b"source /c1.cfg\n"
    files[f"/c{MAX_DEPTH}.cfg"] = b"linux /k\nboot\n"
    files["/k"] = b"k"
    with pytest.raises(StateError, match=f"^GRUB: configuration files nested deeper than "
                                         f"{MAX_DEPTH}$"):
        _grub(files).run()
    files[f"/c{MAX_DEPTH - 1}.cfg"] = b"linux /k\nboot\n"  # grub.cfg + 15 files: allowed
    grub = _grub(files)
    assert grub.run().kernel == b"k"
    assert grub.state.depth == 0


def test_the_default_entry_by_number_title_or_the_first() -> None:
    menu = ("menuentry 'A' {\n linux /ka\n}\nmenuentry 'B' {\n linux /kb\n}\n"
            "menuentry 'C' {\n linux /kc\n}\n")
    files = {"/ka": b"A", "/kb": b"B", "/kc": b"C"}
    for default, kernel in (("", b"A"), ("set default=1\n", b"B"), ("set default=C\n", b"C"),
                            ("set default=7\n", b"C"), ("set default=nobody\n", b"A"),
                            ("set default=-1\n", b"A")):
        request, grub = _booted(default + menu, files)
        assert request.kernel == kernel, default
    request, grub = _booted("set default=2\n" + menu, files)
    assert _strings(grub)[-3:] == ["grub_cmd: setparams C", "grub_cmd: linux /kc",
                                   "kernel_cmdline: /kc"]
    assert grub.state.env["1"] == "C"


def test_an_entry_without_linux_boots_nothing() -> None:
    with pytest.raises(StateError, match="did not boot"):
        _booted("menuentry 'A' {\n echo hi\n}\n")


def test_status_and_negation() -> None:
    grub = _run("false\nset s1=$?\n! false\nset s2=$?\nfrobnicate\nset s3=$?\ntrue\nset s4=$?\n")
    env = grub.state.env
    assert (env["s1"], env["s2"], env["s3"], env["s4"]) == ("1", "0", "1", "0")


def test_if_elif_else_take_the_first_true_branch() -> None:
    grub = _run("if false; then set r=1; elif true; then set r=2; else set r=3; fi\n"
                "if false; then set s=1; elif false; then set s=2; else set s=3; fi\n"
                "if false; then set t=1; fi\nset after=$?\n"
                "if true; then false; fi\nset after2=$?\n")
    env = grub.state.env
    assert (env["r"], env["s"], "t" in env, env["after"], env["after2"]) == (
        "2", "3", False, "0", "1")


def test_empty_unquoted_words_vanish_and_quoted_ones_stay() -> None:
    grub = _run('set e=\necho $e x\necho "$e" x\n$e\n')
    assert _strings(grub)[1:] == ["grub_cmd: echo x", "grub_cmd: echo  x"]


def test_assignments_unset_and_setparams() -> None:
    grub = _run("a=1\nb=2 extra\nset c=3 d=4 e\nunset c nothere\nsetparams x y\n")
    env = grub.state.env
    assert (env["a"], env["d"], env["e"], env["1"], env["2"]) == ("1", "4", "", "x", "y")
    assert "b" not in env and "c" not in env


def test_source_needs_a_path_and_reports_a_missing_file() -> None:
    grub = _run("source\nset s1=$?\n. /none.cfg\nset s2=$?\n. /x.cfg\nset s3=$?\n",
                {"/x.cfg": b"set inner=1\n"})
    env = grub.state.env
    assert (env["s1"], env["s2"], env["s3"], env["inner"]) == ("1", "1", "0", "1")


# --- search ---------------------------------------------------------------------------------


def test_search_sets_the_named_variable_only_for_files_found() -> None:
    grub = _run("search --file --set=found /k\nsearch -f /k\nsearch --set=x --fs-uuid 1234\n"
                "set r1=$?\nsearch.file /k --set=sf\nsearch.file /missing --set=miss\n"
                "search --label --file --set=l /k\nsearch --file --set= /k\n")
    env = grub.state.env
    assert env["found"] == "hd0,gpt1" and env["sf"] == "hd0,gpt1" and env["l"] == "hd0,gpt1"
    assert env["r1"] == "1"
    assert "x" not in env and "miss" not in env


def test_search_file_defaults_to_root() -> None:
    grub = _grub({"/k": b""})
    grub.state.env["root"] = "elsewhere"
    assert grub._search_file(["/k"])
    assert grub.state.env["root"] == "hd0,gpt1"
    grub.state.env["root"] = "elsewhere"
    assert grub._search(["-f", "/k"])
    assert grub.state.env["root"] == "hd0,gpt1"
    assert not grub._search_file(["--set=z"])
    assert not grub._search(["--no-floppy", "/k"])


# --- linux, initrd, boot ---------------------------------------------------------------------


def test_linux_measures_the_kernel_and_its_command_line() -> None:
    request, grub = _booted("linux /k ro  quiet\ninitrd /i1 /i2\nboot\n",
                            {"/i1": b"one", "/i2": b"two"})
    assert request == BootRequest(b"kernel", "/k", "BOOT_IMAGE=/k ro quiet", b"onetwo")
    assert [e.event for e in _files(grub)][1:] == [b"/k\0", b"/i1\0", b"/i2\0"]
    assert _files(grub)[1].digest(SHA256) == hashlib.sha256(b"kernel").digest()
    assert _strings(grub) == ["grub_cmd: linux /k ro quiet", "kernel_cmdline: /k ro quiet",
                              "grub_cmd: initrd /i1 /i2", "grub_cmd: boot"]


def test_a_second_linux_drops_the_initrd() -> None:
    request, _ = _booted("linuxefi /k\ninitrdefi /i\nlinux /k2 a\nboot\n",
                         {"/i": b"i", "/k2": b"k2"})
    assert request == BootRequest(b"k2", "/k2", "BOOT_IMAGE=/k2 a", b"")


def test_linux_and_initrd_refusals() -> None:
    with pytest.raises(StateError, match=r"^GRUB: kernel /nope not found$"):
        _booted("linux /nope\n")
    with pytest.raises(StateError, match=r"^GRUB: 'initrd' before 'linux'$"):
        _booted("initrd /k\n")
    with pytest.raises(StateError, match=r"^GRUB: initrd /nope not found$"):
        _booted("linux /k\ninitrd /nope\n")
    with pytest.raises(StateError, match=r"^GRUB: 'boot' without a loaded kernel$"):
        _booted("boot\n")
    grub = _run("linux\nset r=$?\n")
    assert grub.state.env["r"] == "1" and grub.state.kernel is None


def test_without_shim_the_firmware_verifies_the_kernel(small_kernel: bytes,
                                                       owner_varstore: Varstore) -> None:
    files = {"/boot/grub/grub.cfg": b"linux /k\nboot\n", "/k": small_kernel}
    firmware = Firmware(MeasuredBoot(SoftwarePcrBank(("sha256",))), owner_varstore,
                        EspFiles(files), None)
    with pytest.raises(PolicyError, match=r"^firmware refused /k"):
        _grub(files, firmware=firmware).run()
    assert not any(e.pcr_index == 8 and e.event.startswith(b"kernel_cmdline")
                   for e in firmware.boot.events)
    insecure = Firmware(MeasuredBoot(SoftwarePcrBank(("sha256",))), Varstore.empty_4m(),
                        EspFiles(files), None)
    _grub(files, firmware=insecure).run()
    images = [e for e in insecure.boot.events
              if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert len(images) == 1


def test_menuentry_needs_a_block() -> None:
    grub = _grub({})
    assert not grub._menuentry([])
    assert not grub._menuentry(["title", "--id", "x"])
    assert grub._menuentry(["title", "--id", "x", "{ linux /k }"])
    assert grub.state.menu == [("title", " linux /k ")]


# --- the Debian configuration: the memdisk's grub.cfg is part of the signed image ------------


def test_debians_memdisk_config_finds_the_esp_configuration(
    debian_boot_binaries: dict[str, Path],
) -> None:
    core = GrubCoreImage.parse(debian_boot_binaries["grub"].read_bytes())
    files = {"/EFI/debian/grub.cfg": b"linux /k\nboot\n", "/k": b"kernel"}
    grub = _grub(files, core, r"\EFI\debian\grubx64.efi")
    assert grub.run().kernel == b"kernel"
    assert [e.event for e in _files(grub)] == [b"(hd0,gpt1)/EFI/debian/grub.cfg\0", b"/k\0"]
    assert grub._exists("(memdisk)/grub.cfg")
    assert grub.read_file("(memdisk)/grub.cfg") == core.memdisk_file("/grub.cfg")
    assert len(_files(grub)) == 2


# --- test ------------------------------------------------------------------------------------


def _yes(path: str) -> bool:
    return path == "/yes"


def _no(path: str) -> bool:
    return False


@pytest.mark.parametrize(("args", "expected"), [
    ([], False), ([""], False), (["x"], True),
    (["-z", ""], True), (["-z", "x"], False), (["-n", "x"], True), (["-n", ""], False),
    (["-e", "/yes"], True), (["-e", "/no"], False), (["-d", "/yes"], True),
    (["-f", "/yes"], False), (["-s", "/yes"], False),
    (["a", "=", "a"], True), (["a", "==", "b"], False), (["a", "!=", "b"], True),
    (["a", "!=", "a"], False), (["a", "<", "b"], False), (["-q", "x"], False),
    (["!", "-e", "/no"], True), (["!", "x"], False),
    (["x", "-a", ""], False), (["x", "-a", "y"], True), (["", "-o", "y"], True),
    (["", "-o", ""], False),
    # -o binds weaker than -a: (x and "") or y, and x or ("" and "")
    (["x", "-a", "", "-o", "y"], True), (["x", "-o", "", "-a", ""], True),
    (["!", "", "-a", "x"], True),
])
def test_evaluate(args: list[str], expected: bool) -> None:
    assert _evaluate(args, _yes, _no) is expected


def test_evaluate_distinguishes_exists_and_is_file() -> None:
    assert _evaluate(["-f", "/f"], _no, lambda p: p == "/f")
    assert _evaluate(["-s", "/f"], _no, lambda p: p == "/f")
    assert not _evaluate(["-e", "/f"], _no, lambda p: p == "/f")


def test_the_test_command_drops_the_closing_bracket() -> None:
    grub = _run("[ -e /k ]\nset a=$?\ntest -e /k\nset b=$?\n[ ]\nset c=$?\n[ x ]\nset d=$?\n"
                "[ ] ]\nset e=$?\n")
    env = grub.state.env
    assert (env["a"], env["b"], env["c"], env["d"], env["e"]) == ("0", "0", "1", "0", "0")


def test_commands_that_succeed_set_status_zero() -> None:
    grub = _run("false\nset a=1\nset s1=$?\nfalse\nunset a\nset s2=$?\nfalse\nsetparams x\n"
                "set s3=$?\nfalse\nlinux /k\nset s4=$?\nfalse\ninitrd /k\nset s5=$?\nfalse\n[\n"
                "set s6=$?\nfalse\ntest\nset s7=$?\n")
    env = grub.state.env
    assert [env[f"s{i}"] for i in range(1, 8)] == ["0", "0", "0", "0", "0", "1", "1"]


def test_search_options_and_targets() -> None:
    grub = _grub({"/k": b""})
    for args, target in ((["--set", "--file", "/k"], "root"), (["--set=", "-f", "/k"], "root"),
                         (["--set=a=b", "--file", "/k"], "a=b"),
                         (["--set=x", "--set=y", "-f", "/k"], "y")):
        grub.state.env.pop(target, None)
        grub.state.env["root"] = "elsewhere"
        assert grub._search(args), args
        assert grub.state.env[target] == "hd0,gpt1", args
    # Options never count as the file searched for.
    assert grub._search(["--no-floppy", "--file", "/k"])
    assert not grub._search(["--file", "--no-floppy"])
    assert not grub._search(["/k"])


def test_search_file_options_and_targets() -> None:
    grub = _grub({"/k": b""})
    for args, target in ((["--set=sf", "/k"], "sf"), (["--set=", "/k"], "root"),
                         (["--set", "/k"], "root"), (["/k"], "root"),
                         (["--set=a=b", "/k"], "a=b"), (["--set=p", "--set=q", "/k"], "p")):
        grub.state.env.pop(target, None)
        grub.state.env["root"] = "elsewhere"
        assert grub._search_file(args), args
        assert grub.state.env[target] == "hd0,gpt1", args
    assert not grub._search_file(["--no-floppy"])
    assert not grub._search_file([])


def _file(path: str) -> bool:
    return path == "/f"


@pytest.mark.parametrize(("args", "expected"), [
    (["-e", "/yes", "-o", ""], True), (["", "-o", "-e", "/yes"], True),
    (["-f", "/f", "-o", ""], True), (["", "-o", "-f", "/f"], True),
    (["-e", "/yes", "-a", "x"], True), (["x", "-a", "-e", "/yes"], True),
    (["-f", "/f", "-a", "x"], True), (["x", "-a", "-f", "/f"], True),
    (["a", "==", "a"], True), (["a", "=", "b"], False),
])
def test_evaluate_passes_both_checks_down(args: list[str], expected: bool) -> None:
    assert _evaluate(args, _yes, _file) is expected


def test_cmdpath_keeps_a_directory_whatever_its_letters() -> None:
    assert _grub({}, image_path=r"\XEN\grubx64.efi").state.env["cmdpath"] == "(hd0,gpt1)/XEN"


def test_each_known_command_name_runs_its_command() -> None:
    request, grub = _booted(
        "configfile /c.cfg\nsubmenu 'S' {\n x\n}\nlinux /k\ninitrdefi /i\nboot\n",
        {"/c.cfg": b"set from_c=1\n", "/i": b"initrd"})
    assert grub.state.env["from_c"] == "1"
    assert grub.state.menu == [("S", "\n x\n")]
    assert request.initrd == b"initrd"


def test_assignments_split_at_the_first_equals_sign() -> None:
    grub = _run("a=b=c\nset d=e=f\n")
    assert (grub.state.env["a"], grub.state.env["d"]) == ("b=c", "e=f")
    core = GrubCoreImage("set g=h=i\nnormal /boot/grub/grub.cfg\n", "/boot/grub", b"")
    embedded = _grub({"/boot/grub/grub.cfg": b"linux /k\nboot\n", "/k": b"k"}, core)
    embedded.run()
    assert embedded.state.env["g"] == "h=i"


def test_status_of_no_ops_assignments_empty_commands_and_empty_bodies() -> None:
    grub = _run("false\necho x\nset s1=$?\nfalse\na=1\nset s2=$?\nfalse\n$undefined\n"
                "set s3=$?\nfalse\nif true; then\nfi\nset s4=$?\n")
    env = grub.state.env
    assert [env[f"s{i}"] for i in range(1, 5)] == ["0", "0", "0", "0"]


def test_an_undefined_variable_expands_to_nothing() -> None:
    grub = _run("set r=x${undefined}y\nset q=\"$nothing\"\n")
    assert (grub.state.env["r"], grub.state.env["q"]) == ("xy", "")


def test_paths_with_odd_characters_and_no_root() -> None:
    grub = _grub({"/x)y": b"odd", "/k": b"k"})
    assert grub.read_file("(hd0,gpt1)/x)y") == b"odd"
    assert grub.read_file("(hd0,gpt1)x/k") is None
    assert grub._exists("(hd0,gpt1)")
    del grub.state.env["root"]  # without $root a relative path is on GRUB's own device
    assert grub.read_file("/k") == b"k"


def test_a_configuration_that_is_not_utf8_still_runs() -> None:
    raw = _grub({"/boot/grub/grub.cfg": b"echo \xff\nlinux /k\nboot\n", "/k": b"k"})
    assert raw.run().kernel == b"k"
    assert _strings(raw)[0] == "grub_cmd: echo \ufffd"
