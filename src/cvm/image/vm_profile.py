"""VM profiles: the device set of a QEMU + OVMF machine, in the terms a QEMU user writes.

What the firmware measures before the owner's first image depends on the machine, not on the
image: OVMF creates a boot option (Boot####, then BootOrder) for every bootable device it
finds and measures them into PCR 1 at the first ReadyToBoot; it tries the options in order, and
each one that fails before the disk adds a "Returning from EFI Application" / "Calling EFI
Application" pair to PCR 4; the loader's image-load event in PCR 4 names the disk's device path
(its PCI slot moves with the devices in front of it). A profile fixes all three.

OVMF's boot manager (edk2 ``BmEnumerateBootOptions`` and OvmfPkg's ``PlatformBootManagerLib``)
builds the list as: the UiApp front page (hidden, category "application", never booted), the
removable block devices, then the fixed ones, each in PCI order, then network options, and the
UEFI Shell last; automatically created options carry edk2's 16-byte marker GUID as optional
data. Descriptions are those edk2 derives for QEMU's devices ("UEFI QEMU DVD-ROM QM00005 " for
the ICH9 AHCI CD-ROM on port 2, "UEFI Misc Device" for a virtio-blk disk). Every profile here is
checked against a real boot of Debian's OVMF (``tests/interop/test_qemu_boot.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.tcg.device_path import (
    ACPI,
    END_NODE,
    HARDWARE,
    MEDIA,
    MESSAGING,
    DevicePath,
    DevicePathNode,
)
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE
from cvm.formats.uefi.load_option import (
    LOAD_OPTION_ACTIVE,
    LOAD_OPTION_CATEGORY_APP,
    LOAD_OPTION_HIDDEN,
    LoadOption,
)
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.firmware import FirmwareSettings
from cvm.wire import Guid

BOOT_SERVICE_ACCESS = 0x7  # NV | BS | RT
BOOT_VARIABLE = re.compile(r"BootOrder|Boot[0-9A-F]{4}")
OVMF_FV = Guid.parse("7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1")
UI_APP = Guid.parse("462caa21-7614-4503-836e-8ab6f4662331")
UEFI_SHELL = Guid.parse("7c04a583-9e3e-4f1c-ad65-e05268d0b4d1")
AUTO_CREATED = Guid.parse("8108ac4e-9f11-4d59-850e-e21a522c59b2").to_bytes()
ICH9_AHCI = (0x1F, 0x2)
AHCI_CDROM_PORT = 2
DEFAULT_MAC = bytes.fromhex("525400123456")  # QEMU's MAC for the first NIC


def _pci_root() -> DevicePathNode:
    return DevicePathNode(ACPI, 0x01, bytes.fromhex("d041030a00000000"))


def _pci(device: int, function: int = 0) -> DevicePathNode:
    return DevicePathNode(HARDWARE, 0x01, bytes([function, device]))


def _sata(port: int) -> DevicePathNode:
    data = port.to_bytes(2, "little") + (0xFFFF).to_bytes(2, "little") + bytes(2)
    return DevicePathNode(MESSAGING, 0x12, data)


def _fv_app(file: Guid) -> DevicePath:
    return DevicePath((DevicePathNode(MEDIA, 0x07, OVMF_FV.to_bytes()),
                       DevicePathNode(MEDIA, 0x06, file.to_bytes()), END_NODE))


@dataclass(frozen=True)
class BootDevice:
    """One device OVMF makes a boot option for, and whether booting from it fails."""

    description: str
    path: tuple[DevicePathNode, ...]
    bootable: bool


def disk_path(profile: VmProfile) -> tuple[DevicePathNode, ...]:
    """The device path of ``profile``'s boot disk, up to (not including) its partition node."""
    if profile.disk_bus == "sata":
        return (_pci_root(), _pci(*ICH9_AHCI), _sata(0))
    # the VGA adapter (default devices) and the NIC take the first slots, in that order
    return (_pci_root(), _pci(1 + profile.default_devices + profile.network))


def failed_boot_attempts(name: str, devices: list[BootDevice]) -> int:
    """How many of ``devices`` (in boot order) the boot manager tries, and fails, before the
    first bootable one."""
    for attempts, device in enumerate(devices):
        if device.bootable:
            return attempts
    raise UsageError(f"profile {name}: no bootable device")


@dataclass(frozen=True)
class VmProfile:
    """A QEMU q35 machine: its default devices or ``-nodefaults``, and the boot disk's bus.

    ``default_devices`` puts the VGA adapter in PCI slot 1 (a virtio disk then gets slot 2);
    ``cdrom`` is q35's default empty CD-ROM (on the ICH9 AHCI controller, port 2), which QEMU
    adds with the default devices unless a drive is placed on the IDE/AHCI buses by hand;
    ``network`` is QEMU's default NIC (an e1000e with user networking, MAC ``mac``) in the
    slot after the VGA adapter: OVMF loads its option ROM's driver (measured into PCR 2, which
    cvm then takes only from a reference log) and adds iPXE's and its own PXE and HTTP boot
    options, after the disk's, so they are never tried.
    """

    name: str
    qemu_args: str
    default_devices: bool
    cdrom: bool
    disk_bus: str  # "virtio" or "sata"
    network: bool = False
    mac: bytes = DEFAULT_MAC
    measures_option_rom: bool = False

    @property
    def disk_path(self) -> tuple[DevicePathNode, ...]:
        """The device path of the boot disk, up to (not including) its partition node."""
        return disk_path(self)

    def devices(self) -> list[BootDevice]:
        """Removable devices first, then fixed ones, as OVMF enumerates them."""
        found = []
        if self.cdrom:
            found.append(BootDevice("UEFI QEMU DVD-ROM QM00005 ",
                                    (_pci_root(), _pci(*ICH9_AHCI), _sata(AHCI_CDROM_PORT)),
                                    False))
        name = "UEFI QEMU HARDDISK QM00001 " if self.disk_bus == "sata" else "UEFI Misc Device"
        found.append(BootDevice(name, self.disk_path, True))
        if self.network:
            found += self._network_devices()
        return found

    def _network_devices(self) -> list[BootDevice]:
        """iPXE's own option, then edk2's PXE (IPv4, IPv6) and HTTP boot (IPv4, IPv6)."""
        nic = (_pci_root(), _pci(1 + self.default_devices))
        mac = DevicePathNode(MESSAGING, 0x0B, self.mac.ljust(32, b"\0") + b"\x01")
        ipv4 = DevicePathNode(MESSAGING, 0x0C, bytes(23))
        ipv6 = DevicePathNode(MESSAGING, 0x0D, bytes(39) + b"\x40" + bytes(16))  # prefix 64
        uri = DevicePathNode(MESSAGING, 0x18, b"")
        label = "MAC:" + self.mac.hex().upper()
        return [
            BootDevice(f"UEFI PXEv4 ({label})", (*nic, mac), False),
            BootDevice(f"UEFI PXEv4 ({label}) 2", (*nic, mac, ipv4), False),
            BootDevice(f"UEFI PXEv6 ({label})", (*nic, mac, ipv6), False),
            BootDevice(f"UEFI HTTPv4 ({label})", (*nic, mac, ipv4, uri), False),
            BootDevice(f"UEFI HTTPv6 ({label})", (*nic, mac, ipv6, uri), False),
        ]

    def boot_options(self) -> list[LoadOption]:
        """Boot0000, Boot0001, ... in the order OVMF creates them."""
        options = [LoadOption(LOAD_OPTION_ACTIVE | LOAD_OPTION_HIDDEN | LOAD_OPTION_CATEGORY_APP,
                              "UiApp", _fv_app(UI_APP))]
        for device in self.devices():
            options.append(LoadOption(LOAD_OPTION_ACTIVE, device.description,
                                      DevicePath((*device.path, END_NODE)), AUTO_CREATED))
        options.append(LoadOption(LOAD_OPTION_ACTIVE, "EFI Internal Shell", _fv_app(UEFI_SHELL)))
        return options

    @property
    def failed_boot_attempts(self) -> int:
        """Options the boot manager tries, and fails, before the disk's (network ones come
        after it)."""
        return failed_boot_attempts(self.name, self.devices())

    def settings(self, base: FirmwareSettings | None = None) -> FirmwareSettings:
        """The firmware settings of this machine (keeping ``base``'s firmware volumes)."""
        base = base or FirmwareSettings()
        return FirmwareSettings(base.crtm_version, base.firmware_volumes,
                                self.failed_boot_attempts, self.disk_path)

    def with_boot_options(self, varstore: Varstore) -> Varstore:
        """``varstore`` with the BootOrder and Boot#### variables OVMF will have created.

        OVMF recreates the options of the devices it finds at every boot, whatever an earlier
        boot left in the store (Debian's varstores ship three from their build), so the ones in
        ``varstore`` are replaced.
        """
        options = self.boot_options()
        order = b"".join(i.to_bytes(2, "little") for i in range(len(options)))
        variables = [EfiVariable("BootOrder", EFI_GLOBAL_VARIABLE, BOOT_SERVICE_ACCESS, order)]
        variables += [EfiVariable(f"Boot{i:04X}", EFI_GLOBAL_VARIABLE, BOOT_SERVICE_ACCESS,
                                  option.to_bytes()) for i, option in enumerate(options)]
        kept = [v for v in varstore.variables
                if not (v.vendor == EFI_GLOBAL_VARIABLE and BOOT_VARIABLE.fullmatch(v.name))]
        return varstore.with_variables([*kept, *variables])


PROFILES = {
    profile.name: profile
    for profile in (
        VmProfile("q35", "-machine q35 -drive file=DISK,format=raw,if=virtio -nic none",
                  True, True, "virtio"),
        VmProfile("q35-nodefaults",
                  "-machine q35 -nodefaults -drive file=DISK,format=raw,if=virtio",
                  False, False, "virtio"),
        VmProfile("q35-net", "-machine q35 -drive file=DISK,format=raw,if=virtio",
                  True, True, "virtio", network=True, measures_option_rom=True),
        VmProfile("q35-sata", "-machine q35 -drive file=DISK,format=raw,if=none,id=d0 "
                  "-device ide-hd,drive=d0,bus=ide.0 -nic none", True, False, "sata"),
    )
}


def profile_named(name: str) -> VmProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown VM profile {name!r}; known: {', '.join(PROFILES)}") from None
