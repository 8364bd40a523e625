"""Where a predicted boot and a real one part (`cvm.image.pcr_diff`): per PCR, the first event
that differs, explained in the boot's terms, or an event one boot lacks."""

from __future__ import annotations

import hashlib

from cvm.formats.tcg.device_path import END_NODE, MEDIA, DevicePath, DevicePathNode
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE
from cvm.image.pcr_diff import DEFAULT_PCRS, PcrDifference, diff

SHA1, SHA256, SHA384 = 0x04, 0x0B, 0x0C


def _event(pcr: int, kind: int, data: bytes, digests: dict[int, bytes] | None = None,
           measured: bytes | None = None) -> PcrEvent:
    content = data if measured is None else measured
    if digests is None:
        digests = {SHA1: hashlib.sha1(content).digest(),
                   SHA256: hashlib.sha256(content).digest()}
    return PcrEvent(pcr, kind, tuple(digests.items()), data)


def _log(*events: PcrEvent) -> EventLog:
    return EventLog(None, events)


def _image(path: str, length: int = 4096, location: int = 0x7000000) -> bytes:
    node = DevicePathNode(MEDIA, 0x04, path.encode("utf-16-le") + b"\0\0")
    return UefiImageLoadEvent(location, length, 0, DevicePath((node, END_NODE))).to_bytes()


def _variable(name: str, data: bytes = b"\x01") -> bytes:
    return UefiVariableData(EFI_GLOBAL_VARIABLE, name, data).to_bytes()


def _one(predicted: list[PcrEvent], real: list[PcrEvent], pcr: int) -> PcrDifference:
    found = diff(_log(*predicted), _log(*real), (pcr,))
    assert len(found) == 1
    return found[0]


def test_the_default_pcrs() -> None:
    assert DEFAULT_PCRS == (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15)


def test_equal_boots_have_no_difference_and_other_pcrs_are_not_compared() -> None:
    events = [_event(8, EventType.EV_IPL, b"grub_cmd: boot\0"),
              _event(9, EventType.EV_IPL, b"/vmlinuz\0")]
    assert diff(_log(*events), _log(*events)) == []
    changed = [events[0], _event(9, EventType.EV_IPL, b"/vmlinuz\0", measured=b"other")]
    assert diff(_log(*events), _log(*changed), (8,)) == []
    assert [d.pcr for d in diff(_log(*events), _log(*changed))] == [9]
    assert [d.pcr for d in diff(_log(*events), _log(*changed), (9, 8))] == [9]


def test_pcr_0_and_10_are_left_out_by_default() -> None:
    left = [_event(0, EventType.EV_S_CRTM_VERSION, b"a"), _event(10, EventType.EV_IPL, b"a")]
    right = [_event(0, EventType.EV_S_CRTM_VERSION, b"b"), _event(10, EventType.EV_IPL, b"b")]
    assert diff(_log(*left), _log(*right)) == []
    assert [d.pcr for d in diff(_log(*left), _log(*right), (0, 10))] == [0, 10]


def test_a_changed_file_is_named_with_both_digests_and_the_events_indices() -> None:
    predicted = [_event(8, EventType.EV_IPL, b"grub_cmd: x\0"),
                 _event(9, EventType.EV_IPL, b"/EFI/debian/grub.cfg\0", measured=b"one")]
    real = [_event(14, EventType.EV_NO_ACTION, b"x"),
            _event(9, EventType.EV_NO_ACTION, b"ignored"),
            _event(9, EventType.EV_IPL, b"/EFI/debian/grub.cfg\0", measured=b"two"),
            _event(8, EventType.EV_IPL, b"grub_cmd: x\0")]
    found = _one(predicted, real, 9)
    one, two = hashlib.sha1(b"one").hexdigest(), hashlib.sha1(b"two").hexdigest()
    assert found == PcrDifference(9, 1, 2, (
        f"the file /EFI/debian/grub.cfg: the measured content differs (predicted digest "
        f"{one[:16]}…, real {two[:16]}…)"))
    assert found.to_json() == {"pcr": 9, "predicted_event": 1, "real_event": 2,
                               "cause": found.cause}


def test_only_the_banks_both_logs_carry_are_compared_lowest_first() -> None:
    sha384 = {SHA384: bytes(48)}
    ours = _event(9, EventType.EV_IPL, b"/f\0", {SHA384: b"\x01" * 48, SHA256: b"\x02" * 32})
    theirs = _event(9, EventType.EV_IPL, b"/f\0", {SHA256: b"\x03" * 32, SHA1: b"\x04" * 20})
    assert _one([ours], [theirs], 9).cause == (
        "the file /f: the measured content differs (predicted digest 0202020202020202…, real "
        "0303030303030303…)")
    both = _event(9, EventType.EV_IPL, b"/f\0", {SHA1: b"\x01" * 20, SHA256: b"\x02" * 32})
    other = _event(9, EventType.EV_IPL, b"/f\0", {SHA1: b"\x05" * 20, SHA256: b"\x06" * 32})
    assert "predicted digest 0101010101010101…, real 0505050505050505…" in _one(
        [both], [other], 9).cause
    # no bank in common: nothing to compare, no difference
    assert diff(_log(_event(9, EventType.EV_IPL, b"/f\0", sha384)), _log(theirs), (9,)) == []


def test_grub_commands_and_the_kernel_command_line_are_named() -> None:
    cmd = _one([_event(8, EventType.EV_IPL, b"grub_cmd: set timeout=0\0")],
               [_event(8, EventType.EV_IPL, b"grub_cmd: set timeout=5\0")], 8)
    assert cmd.cause == ("predicted GRUB's command 'set timeout=0', the real boot measured "
                         "GRUB's command 'set timeout=5'")
    line = _one([_event(8, EventType.EV_IPL, b"kernel_cmdline: /vmlinuz quiet\0")],
                [_event(8, EventType.EV_IPL, b"kernel_cmdline: /vmlinuz ro\0")], 8)
    assert line.cause == ("predicted the kernel command line '/vmlinuz quiet', the real boot "
                          "measured the kernel command line '/vmlinuz ro'")
    # the same words in PCR 9 are file names; in PCR 14 an EV_IPL is only a string
    assert _one([_event(9, EventType.EV_IPL, b"grub_cmd: a\0")],
                [_event(9, EventType.EV_IPL, b"grub_cmd: b\0")], 9).cause == (
        "predicted the file grub_cmd: a, the real boot measured the file grub_cmd: b")
    # other PCR 8 strings, and the prefixes outside PCR 8, are not commands
    assert _one([_event(8, EventType.EV_IPL, b"module_cmdline: a\0")],
                [_event(8, EventType.EV_IPL, b"module_cmdline: b\0")], 8).cause == (
        "predicted EV_IPL 'module_cmdline: a', the real boot measured EV_IPL "
        "'module_cmdline: b'")
    assert _one([_event(9, EventType.EV_IPL, b"kernel_cmdline: a\0")],
                [_event(9, EventType.EV_IPL, b"kernel_cmdline: b\0")], 9).cause == (
        "predicted the file kernel_cmdline: a, the real boot measured the file kernel_cmdline: b")
    assert _one([_event(9, EventType.EV_IPL, b"/boot/vmlinuX\0\0")],
                [_event(9, EventType.EV_IPL, b"/boot/initrd\0")], 9).cause == (
        "predicted the file /boot/vmlinuX, the real boot measured the file /boot/initrd")
    assert _one([_event(14, EventType.EV_IPL, b"MokList\0")],
                [_event(14, EventType.EV_IPL, b"MokListX\0")], 14).cause == (
        "predicted EV_IPL 'MokList', the real boot measured EV_IPL 'MokListX'")


def test_a_variable_is_named_and_pcr_1_points_at_the_profile() -> None:
    boot = _one([_event(1, EventType.EV_EFI_VARIABLE_BOOT, _variable("BootOrder", b"\0\0"))],
                [_event(1, EventType.EV_EFI_VARIABLE_BOOT, _variable("BootOrder", b"\1\0"))], 1)
    assert boot.cause == ("the variable BootOrder holds other data (the VM's devices are not the "
                          "profile's: see --profile)")
    db = _one([_event(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, _variable("db", b"a"))],
              [_event(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, _variable("db", b"b"))], 7)
    assert db.cause == "the variable db holds other data"
    named = _one([_event(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, _variable("PK"))],
                 [_event(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, _variable("KEK"))], 7)
    assert named.cause == "predicted the variable PK, the real boot measured the variable KEK"
    broken = _one([_event(7, EventType.EV_EFI_VARIABLE_AUTHORITY, _variable("db"))],
                  [_event(7, EventType.EV_EFI_VARIABLE_AUTHORITY, b"\x01\x02")], 7)
    assert broken.cause == "predicted the variable db, the real boot measured a variable"


def test_an_image_is_the_same_by_path_and_length_wherever_it_was_loaded() -> None:
    kind = EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    ours = _event(4, kind, _image("\\EFI\\BOOT\\BOOTX64.EFI", location=0x1000), measured=b"pe")
    moved = _event(4, kind, _image("\\EFI\\BOOT\\BOOTX64.EFI", location=0x2000), measured=b"pe")
    assert diff(_log(ours), _log(moved), (4,)) == []
    longer = _event(4, kind, _image("\\EFI\\BOOT\\BOOTX64.EFI", 8192), measured=b"pe")
    assert _one([ours], [longer], 4).cause == (
        "the image \\EFI\\BOOT\\BOOTX64.EFI holds other data")
    other = _event(4, kind, _image("\\EFI\\BOOT\\grubx64.efi"), measured=b"pe")
    assert _one([ours], [other], 4).cause == (
        "predicted the image \\EFI\\BOOT\\BOOTX64.EFI, the real boot measured the image "
        "\\EFI\\BOOT\\grubx64.efi")
    changed = _event(4, kind, _image("\\EFI\\BOOT\\BOOTX64.EFI", location=0x3000),
                     measured=b"another pe")
    assert _one([ours], [changed], 4).cause.startswith(
        "the image \\EFI\\BOOT\\BOOTX64.EFI: the measured content differs")
    # an event that is no UEFI_IMAGE_LOAD_EVENT is compared by its bytes
    raw = _event(4, kind, b"\x01\x02", measured=b"pe")
    assert diff(_log(raw), _log(_event(4, kind, b"\x01\x02", measured=b"pe")), (4,)) == []
    assert _one([raw], [_event(4, kind, b"\x01\x03", measured=b"pe")], 4).cause == (
        "the image (loaded from memory) holds other data")
    empty = _event(4, kind, UefiImageLoadEvent(0, 1, 0, DevicePath(())).to_bytes())
    assert _one([ours], [empty], 4).cause == (
        "predicted the image \\EFI\\BOOT\\BOOTX64.EFI, the real boot measured the image "
        "(loaded from memory)")


def test_events_of_another_type_name_both_types_and_the_partition_table() -> None:
    found = _one([_event(5, EventType.EV_EFI_GPT_EVENT, b"gpt")],
                 [_event(5, EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation")], 5)
    assert found.cause == ("predicted EV_EFI_GPT_EVENT (the disk's partition table), the real "
                           "boot logged EV_EFI_ACTION (EV_EFI_ACTION 'Exit Boot Services "
                           "Invocation')")
    gpt = _one([_event(5, EventType.EV_EFI_GPT_EVENT, b"gpt one")],
               [_event(5, EventType.EV_EFI_GPT_EVENT, b"gpt two")], 5)
    assert gpt.cause == "the disk's partition table holds other data"
    separator = _one([_event(4, EventType.EV_SEPARATOR, bytes(4))],
                     [_event(4, EventType.EV_SEPARATOR, b"\xff\xff\xff")], 4)
    assert separator.cause == ("predicted EV_SEPARATOR separator, the real boot "
                               "measured EV_SEPARATOR 3 bytes")


def test_an_event_one_boot_lacks_is_reported_at_its_index() -> None:
    common = _event(9, EventType.EV_IPL, b"/vmlinuz\0")
    extra = _event(9, EventType.EV_IPL, b"/initrd.img\0")
    other = _event(8, EventType.EV_IPL, b"grub_cmd: boot\0")
    assert diff(_log(common, other, extra), _log(common), (9,)) == [PcrDifference(
        9, 2, None, "the real boot never measured the file /initrd.img")]
    assert diff(_log(common), _log(other, common, other, extra), (9,)) == [PcrDifference(
        9, None, 3, "the real boot also measured the file /initrd.img, which the prediction "
        "lacks")]
    assert diff(_log(), _log(extra), (9,))[0].real_index == 0
    assert diff(_log(extra, extra), _log(extra), (9,))[0].predicted_index == 1


def test_only_the_first_difference_of_each_pcr_is_reported() -> None:
    one = [_event(8, EventType.EV_IPL, b"grub_cmd: a\0"),
           _event(8, EventType.EV_IPL, b"grub_cmd: b\0")]
    two = [_event(8, EventType.EV_IPL, b"grub_cmd: c\0"),
           _event(8, EventType.EV_IPL, b"grub_cmd: d\0"),
           _event(8, EventType.EV_IPL, b"grub_cmd: e\0")]
    assert [(d.predicted_index, d.real_index) for d in diff(_log(*one), _log(*two), (8,))] == [
        (0, 0)]
