"""VM profiles (`cvm.image.vm_profile`): the boot options OVMF creates, the disk's device path
and the failed attempts before it — q35 against a recorded real boot of Debian's OVMF
(tests/vectors/realboot), the others by their edk2 device paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.firmware import FirmwareSettings
from cvm.image.vm_profile import (
    PROFILES,
    BootDevice,
    VmProfile,
    disk_path,
    failed_boot_attempts,
    profile_named,
)
from cvm.wire import Guid

REALBOOT = Path(__file__).parents[1] / "vectors" / "realboot" / "eventlog.bin"
FV = "Fv(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile"
UI_APP = ("UiApp", 0x109, f"{FV}(462caa21-7614-4503-836e-8ab6f4662331)", "")
SHELL = ("EFI Internal Shell", 1, f"{FV}(7c04a583-9e3e-4f1c-ad65-e05268d0b4d1)", "")
AUTO = "4eac0881119f594d850ee21a522c59b2"
CDROM = ("UEFI QEMU DVD-ROM QM00005 ", 1, "PciRoot(0x0)/Pci(0x1f,0x2)/Path(3,18,0200ffff0000)",
         AUTO)
MAC = "Path(3,11,5254001234560000000000000000000000000000000000000000000000000000" + "01)"
IPV4 = "Path(3,12," + "00" * 23 + ")"
IPV6 = "Path(3,13," + "00" * 39 + "40" + "00" * 16 + ")"
URI = "Path(3,24,)"


def _options(profile: VmProfile) -> list[tuple[str, int, str, str]]:
    return [(o.description, o.attributes, o.file_path.to_text(), o.optional_data.hex())
            for o in profile.boot_options()]


def _recorded() -> tuple[list[UefiVariableData], list[UefiImageLoadEvent], int]:
    log = EventLog.parse(REALBOOT.read_bytes())
    variables = [UefiVariableData.parse(e.event) for e in log.events
                 if e.pcr_index == 1 and e.event_type == EventType.EV_EFI_VARIABLE_BOOT]
    loads = [UefiImageLoadEvent.parse(e.event) for e in log.events
             if e.pcr_index == 4 and e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    returns = sum(1 for e in log.events if e.pcr_index == 4 and e.event_type ==
                  EventType.EV_EFI_ACTION and e.event.startswith(b"Returning from EFI"))
    return variables, loads, returns


def test_q35_is_what_debians_ovmf_measured_in_a_real_boot() -> None:
    variables, loads, returns = _recorded()
    profile = PROFILES["q35"]
    options = profile.boot_options()
    assert [v.name for v in variables] == ["BootOrder", "Boot0000", "Boot0001", "Boot0002",
                                           "Boot0003"]
    assert variables[0].data == bytes.fromhex("0000010002000300")
    assert [v.data for v in variables[1:]] == [o.to_bytes() for o in options]
    assert loads[0].device_path.nodes[:2] == profile.disk_path == disk_path(profile)
    assert profile.failed_boot_attempts == returns == 1
    store = profile.with_boot_options(Varstore.empty_4m())
    for variable in variables:
        held = store.get(variable.name, EFI_GLOBAL_VARIABLE)
        assert held is not None and held.data == variable.data
        assert variable.vendor_guid == EFI_GLOBAL_VARIABLE and held.attributes == 0x7


def test_each_profiles_boot_options_in_ovmfs_order() -> None:
    assert _options(PROFILES["q35"]) == [
        UI_APP, CDROM, ("UEFI Misc Device", 1, "PciRoot(0x0)/Pci(0x2,0x0)", AUTO), SHELL]
    assert _options(PROFILES["q35-nodefaults"]) == [
        UI_APP, ("UEFI Misc Device", 1, "PciRoot(0x0)/Pci(0x1,0x0)", AUTO), SHELL]
    assert _options(PROFILES["q35-sata"]) == [
        UI_APP, ("UEFI QEMU HARDDISK QM00001 ", 1,
                 "PciRoot(0x0)/Pci(0x1f,0x2)/Path(3,18,0000ffff0000)", AUTO), SHELL]
    nic, label = "PciRoot(0x0)/Pci(0x2,0x0)", "MAC:525400123456"
    assert _options(PROFILES["q35-net"]) == [
        UI_APP, CDROM, ("UEFI Misc Device", 1, "PciRoot(0x0)/Pci(0x3,0x0)", AUTO),
        (f"UEFI PXEv4 ({label})", 1, f"{nic}/{MAC}", AUTO),
        (f"UEFI PXEv4 ({label}) 2", 1, f"{nic}/{MAC}/{IPV4}", AUTO),
        (f"UEFI PXEv6 ({label})", 1, f"{nic}/{MAC}/{IPV6}", AUTO),
        (f"UEFI HTTPv4 ({label})", 1, f"{nic}/{MAC}/{IPV4}/{URI}", AUTO),
        (f"UEFI HTTPv6 ({label})", 1, f"{nic}/{MAC}/{IPV6}/{URI}", AUTO),
        SHELL]


def test_the_nic_is_named_by_its_mac() -> None:
    profile = VmProfile("other-mac", "", True, False, "virtio", network=True,
                        mac=bytes.fromhex("0a0b0c0d0e0f"))
    descriptions = [o.description for o in profile.boot_options()]
    assert descriptions[2] == "UEFI PXEv4 (MAC:0A0B0C0D0E0F)"
    assert profile.boot_options()[2].file_path.to_text().startswith(
        "PciRoot(0x0)/Pci(0x2,0x0)/Path(3,11,0a0b0c0d0e0f00")
    assert profile.disk_path[1].data == bytes([0, 3])


def test_the_profiles_and_their_qemu_arguments() -> None:
    assert list(PROFILES) == ["q35", "q35-nodefaults", "q35-net", "q35-sata"]
    assert {name: (p.qemu_args, p.default_devices, p.cdrom, p.disk_bus, p.network,
                   p.measures_option_rom, p.mac.hex()) for name, p in PROFILES.items()} == {
        "q35": ("-machine q35 -drive file=DISK,format=raw,if=virtio -nic none", True, True,
                "virtio", False, False, "525400123456"),
        "q35-nodefaults": ("-machine q35 -nodefaults -drive file=DISK,format=raw,if=virtio",
                           False, False, "virtio", False, False, "525400123456"),
        "q35-net": ("-machine q35 -drive file=DISK,format=raw,if=virtio", True, True, "virtio",
                    True, True, "525400123456"),
        "q35-sata": ("-machine q35 -drive file=DISK,format=raw,if=none,id=d0 -device "
                     "ide-hd,drive=d0,bus=ide.0 -nic none", True, False, "sata", False, False,
                     "525400123456"),
    }
    assert profile_named("q35-sata") is PROFILES["q35-sata"]
    with pytest.raises(UsageError) as caught:
        profile_named("pc")
    assert str(caught.value) == ("unknown VM profile 'pc'; known: q35, q35-nodefaults, q35-net, "
                                 "q35-sata")


def test_the_failed_attempts_are_the_options_before_the_first_bootable_one() -> None:
    assert {name: p.failed_boot_attempts for name, p in PROFILES.items()} == {
        "q35": 1, "q35-nodefaults": 0, "q35-net": 1, "q35-sata": 0}
    no = BootDevice("no", (), False)
    yes = BootDevice("yes", (), True)
    assert failed_boot_attempts("p", [no, no, yes, no, yes]) == 2
    with pytest.raises(UsageError) as caught:
        failed_boot_attempts("p", [no, no])
    assert str(caught.value) == "profile p: no bootable device"


def test_the_settings_keep_the_firmwares_own_and_add_the_machines() -> None:
    profile = PROFILES["q35"]
    assert profile.settings() == FirmwareSettings("", (), 1, profile.disk_path)
    sata = PROFILES["q35-sata"]
    assert sata.settings() == FirmwareSettings("", (), 0, sata.disk_path)
    assert sata.settings().disk_path[1].data == bytes([0x2, 0x1F])  # the AHCI controller
    base = FirmwareSettings("edk2", ((0xFFC00000, b"fv"),), 5, ())
    assert profile.settings(base) == FirmwareSettings("edk2", ((0xFFC00000, b"fv"),), 1,
                                                      profile.disk_path)


def test_the_boot_variables_replace_those_of_the_store_and_keep_the_others() -> None:
    other = Guid.parse("11111111-2222-3333-4444-555555555555")
    kept = [
        EfiVariable("BootNext", EFI_GLOBAL_VARIABLE, 7, b"\x00\x00"),
        EfiVariable("Boot000a", EFI_GLOBAL_VARIABLE, 7, b"lower-case: not a boot option"),
        EfiVariable("Boot0001", other, 7, b"another vendor's"),
        EfiVariable("XBoot0001", EFI_GLOBAL_VARIABLE, 7, b"x"),
        EfiVariable("Boot00011", EFI_GLOBAL_VARIABLE, 7, b"five digits"),
    ]
    replaced = [
        EfiVariable("BootOrder", EFI_GLOBAL_VARIABLE, 7, b"\x09\x00"),
        EfiVariable("Boot0009", EFI_GLOBAL_VARIABLE, 7, b"old"),
        EfiVariable("Boot0001", EFI_GLOBAL_VARIABLE, 7, b"old"),
        EfiVariable("Boot00AB", EFI_GLOBAL_VARIABLE, 7, b"old"),
    ]
    store = Varstore.empty_4m().with_variables([*kept, *replaced])
    profile = PROFILES["q35-net"]
    result = profile.with_boot_options(store)
    options = profile.boot_options()
    names = [f"Boot{i:04X}" for i in range(len(options))]
    assert [(v.name, v.vendor) for v in result.variables] == [
        *((v.name, v.vendor) for v in kept), ("BootOrder", EFI_GLOBAL_VARIABLE),
        *((n, EFI_GLOBAL_VARIABLE) for n in names)]
    assert result.variables[:len(kept)] == tuple(kept)
    order = result.get("BootOrder", EFI_GLOBAL_VARIABLE)
    assert order is not None and order.data == bytes.fromhex("000001000200030004000500060007"
                                                             "000800")
    for name, option in zip(names, options, strict=True):
        held = result.get(name, EFI_GLOBAL_VARIABLE)
        assert held is not None and (held.attributes, held.data) == (7, option.to_bytes())
